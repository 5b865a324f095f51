"""A run's directory and resuming from it: ``config.json`` (refused when a different run is
resumed), ``checkpoint.pt`` (weights, optimiser and RNG states, the hooks' state; written
atomically) and ``metrics.jsonl`` (cut back to the checkpoint's step on resume)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tql.errors import ConfigError
from tql.io import append_jsonl, atomic_torch_save, atomic_write_json, previous_path, read_jsonl, rewrite_jsonl
from tql.trainer.config import check_resumable


def start_record(out_dir: Path, step: int) -> dict:
    """What ``TrainHooks.on_start`` receives: the run's ``config.json``, its folder and the
    step it starts from (every trainer, one run or a batch's member)."""
    return {**json.loads((Path(out_dir) / "config.json").read_text()), "out_dir": str(out_dir), "step": step}


def read_checkpoint(path: Path, device, say) -> dict:
    """The checkpoint in ``path``; if it is damaged (truncated, corrupt), the previous one kept
    beside it (``tql.io.previous_path``), said in one line; if neither loads, one ConfigError
    line naming the file and the way out. Nothing is deleted either way."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    previous = previous_path(path)
    if previous.is_file():
        try:
            state = torch.load(previous, map_location=device, weights_only=False)
        except Exception:
            pass
        else:
            say(f"checkpoint {path} is damaged ({reason}); resuming from the previous one, {previous.name} "
                f"(step {state['step']:,})")
            return state
    raise ConfigError(f"checkpoint {path} is damaged ({reason}) and no good previous checkpoint is kept beside it; "
                      "start the run over with --fresh (fresh=True), or restore the file")


class RunFiles:
    """The ``Trainer``'s files, as a mixin: it reads ``out_dir``, ``config``, ``task``, ``data``,
    ``agent``, ``step``, ``evals``, ``generator``, ``hooks`` and ``device`` of the run and calls
    its ``_say`` and ``_wall``; subclasses add state through the three hooks below."""

    def _run_record(self) -> dict:
        """Settings besides ``TrainConfig`` that a resumed run must share (subclasses add some)."""
        return {}

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def _append(self, record: dict) -> None:
        """One record onto ``metrics.jsonl``, then to the hooks' ``on_record`` (loggers)."""
        append_jsonl(self.metrics_path, record)
        self.hooks.on_record(record)

    def _start_record(self) -> dict:
        return start_record(self.out_dir, self.step)

    def _prepare_out_dir(self, fresh: bool) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / "config.json"
        if fresh:
            for path in (self.checkpoint_path, previous_path(self.checkpoint_path), self.metrics_path, config_path,
                         self.out_dir / "summary.json"):
                path.unlink(missing_ok=True)
        if self.checkpoint_path.exists():
            saved = json.loads(config_path.read_text())
            check_resumable(saved["train"], self.config, self.out_dir)
            if any(saved.get(key) != value for key, value in self._run_record().items()):
                raise ConfigError(f"{self.out_dir} holds a run with different settings "
                                  f"({', '.join(self._run_record())}); use another --out, or --fresh to discard it")
            self._load_checkpoint()
        else:
            self.metrics_path.unlink(missing_ok=True)
        atomic_write_json(config_path, {"train": self.config.to_dict(), "task": self.task.name,
                                        "n_tokens": self.task.n_tokens, "data_kind": self.data.kind,
                                        "data_meta": self.data.meta, **self.data.size_record(),
                                        "device": str(self.device),
                                        **self._run_record()})

    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "agent": self.agent.full_state(), "evals": self.evals,
                 "torch_rng": torch.get_rng_state(), "generator": self.generator.get_state(),
                 "hooks": self.hooks.state_dict(), "wall_seconds": self._wall(), **self._extra_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_torch_save(state, self.checkpoint_path, keep_previous=True)

    def _load_checkpoint(self) -> None:
        state = read_checkpoint(self.checkpoint_path, self.device, self._say)
        self.agent.load_full_state(state["agent"])
        self.step, self.evals, self.wall_before = state["step"], state["evals"], state["wall_seconds"]
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.hooks.load_state_dict(state["hooks"])
        self._load_extra_state(state)
        # Drop metrics logged after the checkpoint: those steps run again.
        rewrite_jsonl(self.metrics_path, [r for r in read_jsonl(self.metrics_path) if r["step"] <= self.step])
        self._say(f"resuming {self.task.name} from step {self.step} ({self.checkpoint_path})")

    def _extra_state(self) -> dict:
        """More checkpointed state (subclasses)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass
