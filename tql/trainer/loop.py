"""The training loop: data -> agent updates -> logs, evaluations and checkpoints, one
``TrainConfig`` at a time (``Trainer``, ``train``)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from tql.agent import TQLAgent, compile_pays, critic_depth, flat_metrics
from tql.errors import ConfigError
from tql.eval_workers import PolicyEvaluator
from tql.evaluation import EvalResult
from tql.graphs import Uploader, make_step, use_cuda_graph
from tql.collapse import alarm_line, first_collapse
from tql.io import atomic_write_json, read_jsonl
from tql.trainer.checkpoint import RunFiles
from tql.trainer.config import DEFAULT_PROFILE, TrainConfig, TrainResult, resolve_device, set_tf32
from tql.trainer.hooks import TrainHooks, TrainingDiverged
from tql.trainer.step_targets import DeviceTargets, HookTable
from tql.trainer.metrics import VAL_BATCH, eval_record, held_out_td_loss, make_evaluator, policy_episodes


def load_data(config: TrainConfig, device: torch.device, say: Callable[[str], None], progress: bool = True,
              warn: Callable[[str], None] | None = None):
    """The run's dataset and its train and held-out samplers on ``device``: ``(TaskData,
    ReplaySampler, ReplaySampler)``. ``tql.data.provide_task_data`` says which data (kind,
    episodes, transitions), generates it with ``make_data`` when missing or too small (beside
    the small one, on every core), and otherwise warns (``warn``, default ``say``) when it is
    smaller than the profile expects."""
    from tql.data import ReplaySampler, available_cpus, expected_size, provide_task_data

    task = config.spec
    expect = expected_size(task, config.data_episodes, config.data_episode_length)
    data = provide_task_data(task, config.data_dir, config.data_kind, expect, config.make_data, say, warn,
                             profile=config.profile, progress=progress, workers=available_cpus())
    return data, ReplaySampler(data.train, device), ReplaySampler(data.val, device)


def warn_on(console: Any, text: str) -> None:
    """A one-line warning on the run's console, or as a Python warning without one."""
    if console is not None:
        console.print(f"[yellow]{text}")
    else:
        warnings.warn(text, RuntimeWarning, stacklevel=3)


class Trainer(RunFiles):
    """Runs one ``TrainConfig``: owns the agent, sampler, output files and the step loop."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, hooks: TrainHooks | None = None,
                 fresh: bool = False, console: Any = None, progress: bool = True):
        config.validate()
        self.config, self.task, self.hooks = config, config.spec, hooks or TrainHooks()
        self.out_dir, self.console, self.show_progress = Path(out_dir), console, progress
        self.device = resolve_device(config.device)
        use_cuda_graph(config.cuda_graph, self.device)  # 'on' without CUDA: refused before any work
        set_tf32(self.device, config.tf32)
        if config.threads:
            # Several workers on one machine each get a share: oversubscribed OpenMP threads
            # spin against each other and can slow updates down a hundredfold.
            torch.set_num_threads(config.threads)
        self.data, self.sampler, self.val_sampler = load_data(config, self.device, self._say, progress, self._warn)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.depth = critic_depth(config.agent)
        self.targets = HookTable(self.depth, self.task.max_entropy, config.constant_target())
        self.agent = self._make_agent()
        self.update = make_step(self._update_once, self.device, config.cuda_graph, self._generators(), self._warn)
        self.upload = Uploader(self.device)
        self.device_targets = DeviceTargets(self.upload)
        self.step, self.evals, self.wall_before = 0, [], 0.0
        self._evaluator: PolicyEvaluator | None = None  # env pool or worker processes: built at the first evaluation
        self._prepare_out_dir(fresh)

    def _make_agent(self) -> Any:
        return TQLAgent(self.task.obs_dim, self.task.act_dim, self.config.agent, self.device,
                        total_steps=self.config.steps, compile_default=compile_pays(self.device, self.config.steps))

    def _update_once(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on a fresh batch: everything on the device, no host sync (capturable)."""
        return self.agent.update(self.sampler.sample(self.config.agent.batch_size, self.generator), target)

    def _generators(self) -> list[torch.Generator]:
        """The device generators an update draws from (a CUDA graph must advance them)."""
        return [self.generator]

    def _warn(self, text: str) -> None:
        warn_on(self.console, text)

    def _result_fields(self) -> dict:
        """More ``TrainResult`` fields (subclasses)."""
        return {}

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0)

    # ----- the loop ------------------------------------------------------------------------
    def target_at(self, step: int) -> torch.Tensor:
        """H̄ ``[depth, 2]`` for this update on the agent's device: the hook's, else the run's
        constant (``tql.trainer.step_targets``)."""
        table = self.targets.at(self.hooks.target_entropy(step, step / self.config.steps), step)
        return self.device_targets(table, (-1, 2))

    def run(self) -> TrainResult:
        self._t0 = time.perf_counter()
        self.hooks.on_start(self._start_record())
        result = None
        try:
            try:
                stopped = self._loop()
            finally:
                if self._evaluator is not None:
                    self._evaluator.close()
                    self._evaluator = None
            result = self._finish(stopped)
            return result
        finally:
            self.hooks.on_close(None if result is None else result.to_dict())

    def _loop(self) -> bool:
        stopped = False
        with self._progress_bar() as advance:
            while self.step < self.config.steps and not stopped:
                metrics = self.update(self.target_at(self.step))
                self.step += 1
                advance(self.step)
                if self.step % self.config.log_every == 0:
                    self._log(metrics)
                if self._due(self.config.eval_every) or self.step == self.config.steps:
                    stopped = self._evaluate()
                if self._due(self.config.checkpoint_every) or self.step == self.config.steps or stopped:
                    self._save_checkpoint()
        return stopped

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0

    def _log(self, metrics: dict) -> None:
        row = flat_metrics(metrics)
        row["val/td_loss"] = self.val_td_loss()
        row["time/wall_seconds"] = self._wall()
        for key, value in row.items():
            if not math.isfinite(value):
                raise TrainingDiverged(self.step, key, value)
        self._append({"step": self.step, "type": "train", **row})
        self._check_collapse(row)
        self.hooks.on_log(self.step, row)
        self.last_log = row

    def _check_collapse(self, row: dict) -> None:
        """The collapse alarm: one line the first time this process sees attention below
        ``collapse_alarm`` log n (the run's record is rebuilt from its log at the end)."""
        if getattr(self, "_alarmed", False):
            return
        collapse = first_collapse([{"step": self.step, **row}], self.depth, self.task.max_entropy,
                                  self.config.collapse_alarm)
        if collapse is not None:
            self._alarmed = True
            self._warn(f"{self.task.name}: {alarm_line(collapse)}")

    def val_td_loss(self, batch_size: int = VAL_BATCH) -> float:
        """TD error of the critic on a held-out (-val) batch: a cheap signal for controllers."""
        return held_out_td_loss(self.agent, self.val_sampler, self.generator, batch_size)

    def _make_evaluator(self) -> PolicyEvaluator:
        return make_evaluator(self.config, self.device)

    @property
    def evaluator(self) -> PolicyEvaluator:
        if self._evaluator is None:
            # Building an OGBench env costs ~1 s (MuJoCo compilation): keep one evaluator per run.
            self._evaluator = self._make_evaluator()
        return self._evaluator

    def _episodes(self, agent: TQLAgent, episodes: int, seed: int) -> EvalResult:
        """Roll out ``agent``'s one-step policy for ``episodes`` episodes (env seeds from ``seed``)."""
        return policy_episodes(agent, self.evaluator, self.config, episodes, seed, self.step)

    def _record_eval(self, result: EvalResult, **extra) -> dict:
        record = eval_record(self.step, result, **extra)
        self.evals.append(record)
        self._append({"type": "eval", **record})
        self.last_success = result.success_rate
        return record

    def _evaluate(self) -> bool:
        result = self._episodes(self.agent, self.config.eval_episodes, self.config.seed)
        self._record_eval(result)
        return bool(self.hooks.on_eval(self.step, result))

    def _finish(self, stopped: bool) -> TrainResult:
        result = TrainResult(
            task=self.task.name, steps=self.step,
            final_success=self.evals[-1]["success_rate"] if self.evals else None,
            evals=self.evals, wall_seconds=self._wall(), data_kind=self.data.kind,
            out_dir=str(self.out_dir), stopped_early=stopped, **self._result_fields(),
        )
        result.extra = {**self.data.size_record(), **result.extra,
                        "collapse": first_collapse(read_jsonl(self.metrics_path), self.depth, self.task.max_entropy,
                                                   self.config.collapse_alarm)}
        atomic_write_json(self.out_dir / "summary.json", result.to_dict())
        return result

    def _progress_bar(self):
        return _ProgressBar(self, enabled=self.show_progress)


class _ProgressBar:
    """A rich progress bar with the latest TD loss, entropy gap and success, or nothing."""

    def __init__(self, trainer: Trainer, enabled: bool):
        self.trainer, self.enabled, self.progress = trainer, enabled, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda step: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                 console=self.trainer.console, transient=False)
        self.progress.start()
        t = self.trainer
        self.bar = self.progress.add_task(t.task.name, total=t.config.steps, completed=t.step, status="")
        return self._advance

    def _advance(self, step: int) -> None:
        if step % self.trainer.config.log_every and step != self.trainer.config.steps:
            return
        self.progress.update(self.bar, completed=step, status=self._status())

    def _status(self) -> str:
        t = self.trainer
        parts = []
        if getattr(t, "last_log", None):
            parts.append(f"td {t.last_log['critic/td_loss']:.4f}")
            if "target_entropy" in t.last_log:
                parts.append(f"H̄ {t.last_log['target_entropy']:.2f}")
        if getattr(t, "last_success", None) is not None:
            parts.append(f"success {100 * t.last_success:.0f}%")
        return "  ".join(parts)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def train(config: TrainConfig | str, out_dir: str | Path | None = None, hooks: TrainHooks | None = None,
          fresh: bool = False, console: Any = None, progress: bool = True, *, profile: str = DEFAULT_PROFILE,
          agent: dict[str, Any] | None = None, **settings: Any) -> TrainResult:
    """Train (or resume) one run and return its result; see ``Trainer``.

    ``config`` is a ``TrainConfig``, or a task name: then the run is
    ``TrainConfig.from_profile(task, profile, agent, **settings)`` (``settings``: any
    ``TrainConfig`` field, e.g. ``steps=500, rho=0.3``). ``out_dir`` defaults to
    ``runs/<task>/<critic>-seed<seed>``, as `tql-tune train`'s."""
    if isinstance(config, str):
        config = TrainConfig.from_profile(config, profile, agent, **settings)
    elif profile != DEFAULT_PROFILE or agent or settings:
        raise ConfigError("profile, agent and settings go with a task name; a TrainConfig already holds them")
    if out_dir is None:
        out_dir = Path("runs") / config.task / f"{config.agent.critic}-seed{config.seed}"
    return Trainer(config, out_dir, hooks, fresh, console, progress).run()
