"""Several independent runs of one task trained together as one population (batched trials).

``train_batch(members, batch_dir)`` trains K runs that differ only in seed and H̄ (their
``TrainConfig`` fields ``seed``, ``rho``, ``target_entropy``, ``targets``, and their hooks) as
one ``tql.batched.stacked.Population``: one batched update for all of them, no exploitation
between them. Member i computes what ``train(members[i].config, members[i].out_dir,
members[i].hooks)`` computes alone, up to floating-point reassociation in the batched
kernels: the same initialisation, the same data batches (each member samples with its own
generator seeded by its seed), the same update noise, the same held-out TD batches and
evaluation episodes, the same hook calls at the same steps. It writes the same files into
its own folder (``config.json``, ``metrics.jsonl``, ``summary.json``); the one checkpoint of
the batch (every member's state, hooks and evaluations) is ``batch_dir/checkpoint.pt``.

Members leave the batch one by one: a member whose hooks answer True from ``on_eval`` (a
pruned trial) is frozen - never evaluated, logged or asked again; its parameters keep being
updated with the others', which costs a GPU nothing, and are never read. A member whose
metrics turn non-finite has diverged: it is frozen with the ``TrainingDiverged`` it would
have raised alone, and the others go on. A ``frozen`` member (a run that ended elsewhere,
riding along in a resumed batch so the checkpoint's member order holds) is frozen from the
start; its files are left as they are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tql.agent import TQLAgent, compile_pays, critic_depth, flat_metrics
from tql.collapse import first_collapse
from tql.errors import ConfigError
from tql.evaluation import EvalResult
from tql.graphs import Uploader, make_step
from tql.io import append_jsonl, atomic_torch_save, atomic_write_json, previous_path, read_jsonl, rewrite_jsonl
from tql.batched.stacked import Population
from tql.trainer.checkpoint import read_checkpoint, start_record
from tql.trainer import (RESUME_IGNORED, TrainConfig, TrainHooks, TrainingDiverged, TrainResult, eval_record,
                         held_out_draws, load_data, make_evaluator, policy_request, resolve_device, set_tf32, warn_on)
from tql.trainer.step_targets import DeviceTargets, HookTable

# What members of one batch may differ in; everything else (budgets, agent, data) is shared.
MEMBER_FIELDS = ("seed", "rho", "target_entropy", "targets")


@dataclass
class BatchMember:
    """One run of a batch: its config, its folder, its hooks. ``frozen``: a run that already
    ended elsewhere riding along in a resumed batch (a pruned trial whose sibling was lost):
    frozen from the start, its files left as they are."""

    config: TrainConfig
    out_dir: Path
    hooks: TrainHooks | None = None
    frozen: bool = False


@dataclass
class MemberOutcome:
    """How a member ended: its result (None if it diverged, or if it is a ``frozen`` member that
    ended elsewhere), the divergence, whether a hook stopped it early (then
    ``result.stopped_early`` too)."""

    result: TrainResult | None
    diverged: TrainingDiverged | None = None
    stopped: bool = False


@dataclass
class _Member:
    """A member's running state beside the population's tensors."""

    spec: BatchMember
    generator: torch.Generator
    targets: HookTable  # its hook's H̄ as tables, its run's constant when the hook gives none
    evals: list[dict] = field(default_factory=list)
    stopped_at: int | None = None  # the step a hook stopped it at
    diverged: TrainingDiverged | None = None
    current: Any = None  # the table of its latest update
    ended_elsewhere: bool = False  # frozen by its BatchMember: nothing of it is written

    def freeze_if_ended(self, step: int) -> None:
        if self.spec.frozen and self.active:
            self.stopped_at, self.ended_elsewhere = step, True

    @property
    def active(self) -> bool:
        return self.stopped_at is None and self.diverged is None

    @property
    def hooks(self) -> TrainHooks:
        return self.spec.hooks


def check_members(members: list[BatchMember]) -> None:
    """Members share everything but ``MEMBER_FIELDS``; one line naming what differs."""
    if not members:
        raise ConfigError("a batch needs at least one member")
    first = {k: v for k, v in members[0].config.to_dict().items() if k not in MEMBER_FIELDS}
    for i, member in enumerate(members[1:], start=1):
        other = {k: v for k, v in member.config.to_dict().items() if k not in MEMBER_FIELDS}
        diff = sorted(k for k in first if first[k] != other.get(k))
        if diff:
            raise ConfigError(f"batch member {i} differs from member 0 in {', '.join(diff)}; members may differ "
                              f"only in {', '.join(MEMBER_FIELDS)}")
    dirs = [str(Path(m.out_dir).resolve()) for m in members]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("batch members need distinct out_dirs")


class BatchTrainer:
    """Runs a batch: shared data and population, per-member files, hooks and evaluations."""

    def __init__(self, members: list[BatchMember], batch_dir: str | Path, fresh: bool = False, console: Any = None,
                 progress: bool = True) -> None:
        check_members(members)
        for member in members:
            member.config.validate()
            member.hooks = member.hooks or TrainHooks()
        self.config = members[0].config
        self.task, self.batch_dir, self.console, self.show_progress = self.config.spec, Path(batch_dir), console, progress
        self.device = resolve_device(self.config.device)
        set_tf32(self.device, self.config.tf32)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.data, self.sampler, self.val_sampler = load_data(self.config, self.device, self._say, progress)
        self.depth = critic_depth(self.config.agent)
        self.members = [_Member(m, torch.Generator(device=self.device).manual_seed(m.config.seed),
                                HookTable(self.depth, self.task.max_entropy, m.config.constant_target()))
                        for m in members]
        self.population = Population(self.task.obs_dim, self.task.act_dim, self.config.agent, len(members),
                                     self.device, seeds=[m.config.seed for m in members], total_steps=self.config.steps,
                                     compile_default=compile_pays(self.device, self.config.steps))
        self._scratch = TQLAgent(self.task.obs_dim, self.task.act_dim, self.config.agent, self.device,
                                 total_steps=self.config.steps)
        self.update = make_step(self._update_once, self.device, self.config.cuda_graph,
                                [m.generator for m in self.members] + self.population.generators, self._warn)
        self.upload = Uploader(self.device)
        self.device_targets = DeviceTargets(self.upload)
        self.step, self.wall_before, self._evaluator = 0, 0.0, None
        self._prepare(fresh)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _warn(self, text: str) -> None:
        warn_on(self.console, text)

    # ----- files ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.batch_dir / "checkpoint.pt"

    def _signature(self) -> list[dict]:
        """What a resumed batch must share with the saved one: members, order, settings and
        folders (budget fields may change, as for ``train``)."""
        def settings(config: TrainConfig) -> dict:
            return {k: v for k, v in json_safe(config.to_dict()).items() if k not in RESUME_IGNORED}
        return [{"config": settings(m.spec.config), "out_dir": str(Path(m.spec.out_dir).resolve())}
                for m in self.members]

    def _prepare(self, fresh: bool) -> None:
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.checkpoint_path.unlink(missing_ok=True)
            previous_path(self.checkpoint_path).unlink(missing_ok=True)
        resuming = self.checkpoint_path.exists()
        if resuming:
            self._load_checkpoint()
        for member in self.members:
            member.freeze_if_ended(self.step)
            if member.ended_elsewhere:
                continue  # its rows after the checkpoint are its own, not to be run again
            out = Path(member.spec.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            metrics = out / "metrics.jsonl"
            if resuming:  # rows logged after the checkpoint: those steps run again
                rewrite_jsonl(metrics, [r for r in read_jsonl(metrics) if r["step"] <= self.step])
            else:
                metrics.unlink(missing_ok=True)
                (out / "summary.json").unlink(missing_ok=True)
            atomic_write_json(out / "config.json", {
                "train": member.spec.config.to_dict(), "task": self.task.name, "n_tokens": self.task.n_tokens,
                "data_kind": self.data.kind, "data_meta": self.data.meta, **self.data.size_record(),
                "device": str(self.device),
                "batch": {"dir": str(self.batch_dir.resolve()), "members": len(self.members)}})

    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "signature": self._signature(), "population": self.population.full_state(),
                 "members": [self._member_state(m) for m in self.members], "torch_rng": torch.get_rng_state(),
                 "wall_seconds": self._wall()}
        atomic_torch_save(state, self.checkpoint_path, keep_previous=True)

    @staticmethod
    def _member_state(member: _Member) -> dict:
        diverged = member.diverged
        return {"evals": member.evals, "stopped_at": member.stopped_at, "generator": member.generator.get_state(),
                "hooks": member.hooks.state_dict(),
                "diverged": None if diverged is None else [diverged.step, diverged.key, diverged.value]}

    def _load_checkpoint(self) -> None:
        state = read_checkpoint(self.checkpoint_path, self.device, self._say)
        if state["signature"] != self._signature():
            raise ConfigError(f"{self.batch_dir} holds a batch of other members (configs or folders differ); "
                              "use another batch folder, or fresh=True to discard it")
        self.population.load_full_state(state["population"])
        self.step, self.wall_before = state["step"], state["wall_seconds"]
        torch.set_rng_state(state["torch_rng"])
        for member, saved in zip(self.members, state["members"]):
            member.evals, member.stopped_at = saved["evals"], saved["stopped_at"]
            member.generator.set_state(saved["generator"])
            member.hooks.load_state_dict(saved["hooks"])
            if saved["diverged"] is not None:
                member.diverged = TrainingDiverged(*saved["diverged"])
        self._say(f"resuming a batch of {len(self.members)} from step {self.step} ({self.checkpoint_path})")

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0)

    # ----- the loop ------------------------------------------------------------------------
    def _update_once(self, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        size = self.config.agent.batch_size
        batches = [self.sampler.sample(size, m.generator) for m in self.members]
        stacked = {key: torch.stack([b[key] for b in batches]) for key in batches[0]}
        return self.population.update(stacked, targets)

    def targets_at(self, step: int) -> torch.Tensor:
        """H̄ of every member ``[K, depth, 2]``: its hook's, else its run's constant (a frozen
        member keeps its last one; it is never read)."""
        for member in self.members:
            if member.active or member.current is None:
                member.current = member.targets.at(member.hooks.target_entropy(step, step / self.config.steps), step)
        return self.device_targets(tuple(m.current for m in self.members), (len(self.members), -1, 2))

    def run(self) -> list[MemberOutcome]:
        self._t0 = time.perf_counter()
        running = [m for m in self.members if m.active]
        for member in running:
            member.hooks.on_start(start_record(Path(member.spec.out_dir), self.step))
        outcomes = None
        try:
            try:
                self._loop()
            finally:
                self.close_evaluator()
            outcomes = [self._finish(m) for m in self.members]
            return outcomes
        finally:
            for member in running:
                done = None if outcomes is None else outcomes[self.members.index(member)].result
                member.hooks.on_close(None if done is None else done.to_dict())

    def _append(self, member: _Member, record: dict) -> None:
        """A record onto the member's ``metrics.jsonl``, then to its hooks (``on_record``)."""
        append_jsonl(Path(member.spec.out_dir) / "metrics.jsonl", record)
        member.hooks.on_record(record)

    def _loop(self) -> None:
        steps = self.config.steps
        with _progress(self) as advance:
            while self.step < steps and any(m.active for m in self.members):
                metrics = self.update(self.targets_at(self.step))
                self.step += 1
                advance(self.step)
                if self.step % self.config.log_every == 0:
                    self._log(metrics)
                if _due(self.step, self.config.eval_every) or self.step == steps:
                    self._evaluate()
                if _due(self.step, self.config.checkpoint_every) or self.step == steps:
                    self._save_checkpoint()
        if self.step < steps:  # every member left early: keep where they stopped
            self._save_checkpoint()

    def _log(self, metrics: dict[str, torch.Tensor]) -> None:
        active = [i for i, member in enumerate(self.members) if member.active]
        if not active:
            return
        val_td = dict(zip(active, self._val_td_losses(active)))
        for i in active:
            member = self.members[i]
            row = flat_metrics({key: value[i] for key, value in metrics.items()})
            row["val/td_loss"] = val_td[i]
            row["time/wall_seconds"] = self._wall()
            bad = next(((k, v) for k, v in row.items() if not math.isfinite(v)), None)
            if bad is not None:
                member.diverged = TrainingDiverged(self.step, *bad)
                continue
            self._append(member, {"step": self.step, "type": "train", **row})
            member.hooks.on_log(self.step, row)

    def _val_td_losses(self, active: list[int]) -> list[float]:
        """``Trainer.val_td_loss`` of each active member (its own generator draws its batch and
        z'), computed for the whole population at once; a stopped member gets the first active
        one's draws (its value is not read, its generator not advanced)."""
        draws = {i: held_out_draws(self.val_sampler, self.members[i].generator, self.task.act_dim) for i in active}
        every = [draws.get(i, draws[active[0]]) for i in range(len(self.members))]
        batches = {key: torch.stack([batch[key] for batch, _ in every]) for key in every[0][0]}
        errors = self.population.held_out_td_errors(batches, torch.stack([noise for _, noise in every])).tolist()
        return [errors[i] for i in active]

    def _agent(self, i: int) -> TQLAgent:
        """The scratch agent holding member i's networks (no optimiser state: read only)."""
        self._scratch.load_state_dict({name: t[i] for name, t in self.population.state.items()})
        return self._scratch

    def _evaluate(self) -> None:
        active = [i for i, member in enumerate(self.members) if member.active]
        for i, result in zip(active, self.evaluate_members(active)):
            member = self.members[i]
            record = eval_record(self.step, result)
            member.evals.append(record)
            self._append(member, {"type": "eval", **record})
            if member.hooks.on_eval(self.step, result):
                member.stopped_at = self.step

    def evaluate_members(self, indices: list[int]) -> list[EvalResult]:
        """``Trainer._episodes`` of each listed member (its seed, this step), all their episodes
        at once over the batch's evaluation processes (``PolicyEvaluator.run_many``)."""
        if self._evaluator is None:
            self._evaluator = make_evaluator(self.config, self.device, members=len(self.members))
        return self._evaluator.run_many([
            policy_request(self._agent(i), self.config, self.config.eval_episodes, self.members[i].spec.config.seed,
                           self.step) for i in indices])

    def close_evaluator(self) -> None:
        """Stop the evaluation processes (``run`` does it at its end)."""
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def _finish(self, member: _Member) -> MemberOutcome:
        if member.diverged is not None:
            return MemberOutcome(None, member.diverged)
        if member.ended_elsewhere:
            return MemberOutcome(None, None, stopped=True)
        steps = member.stopped_at if member.stopped_at is not None else self.step
        result = TrainResult(task=self.task.name, steps=steps,
                             final_success=member.evals[-1]["success_rate"] if member.evals else None,
                             evals=member.evals, wall_seconds=self._wall(), data_kind=self.data.kind,
                             out_dir=str(member.spec.out_dir), stopped_early=member.stopped_at is not None,
                             extra={**self.data.size_record(), "collapse": first_collapse(
                                 read_jsonl(Path(member.spec.out_dir) / "metrics.jsonl"),
                                 critic_depth(self.config.agent), self.task.max_entropy,
                                 member.spec.config.collapse_alarm)})
        atomic_write_json(Path(member.spec.out_dir) / "summary.json", result.to_dict())
        return MemberOutcome(result, None, member.stopped_at is not None)


def _due(step: int, every: int | None) -> bool:
    return bool(every) and step % every == 0


def json_safe(value: Any) -> Any:
    """Tuples as lists (what a JSON round trip gives), so signatures compare after loading."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class _progress:
    """One rich progress bar for the batch (members still running, best last success)."""

    def __init__(self, trainer: BatchTrainer):
        self.trainer, self.progress = trainer, None

    def __enter__(self):
        t = self.trainer
        if not t.show_progress:
            return lambda step: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=t.console)
        self.progress.start()
        bar = self.progress.add_task(f"{t.task.name} x{len(t.members)}", total=t.config.steps, completed=t.step,
                                     status="")

        def advance(step: int) -> None:
            if step % t.config.log_every == 0 or step == t.config.steps:
                active = sum(m.active for m in t.members)
                self.progress.update(bar, completed=step, status=f"{active}/{len(t.members)} running")
        return advance

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def train_batch(members: list[BatchMember], batch_dir: str | Path, fresh: bool = False, console: Any = None,
                progress: bool = True) -> list[MemberOutcome]:
    """Train (or resume) a batch of runs as one population; see ``BatchTrainer``."""
    return BatchTrainer(members, batch_dir, fresh, console, progress).run()


__all__ = ["BatchMember", "BatchTrainer", "MEMBER_FIELDS", "MemberOutcome", "check_members", "train_batch"]
