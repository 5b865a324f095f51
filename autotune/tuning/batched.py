"""Batched trials (``tql-tune run --batch K``): up to K trials of one task trained together as
one population (``tql.batched.batch_runs``), each member its own rho (or schedule) and seed.

On a GPU one small agent leaves the device idle (its update is bound by Python and kernel
launches); K trials x S seeds as one population cost about as much wall time as one run. Each
member computes what the trial's seed would compute alone (same init, batches, noise,
evaluation episodes), so a batched trial's records equal a one-by-one trial's.

How a batch lives in the storage:

- Claiming: the trials are claimed one after another with ``claim_trial`` (so the study's size
  stays exact whatever the workers), each trial's schedule suggested before the next is asked
  (TPE's constant liar then spreads the batch; grid and random as they are).
- Reporting: member (trial i, seed j) reports its evaluations to trial i at step
  ``j * steps + step``, as ``TrialHooks`` does for seeds run one after another.
- Pruning freezes: when the pruner stops trial i, Optuna is told PRUNED at that evaluation
  (it stops counting against the others at once) and every member of trial i is frozen from
  that evaluation on (its slot is not refilled: the members share one step count).
- Divergence: a diverged member fails its own trial (``fail_kind='diverged'``, the seed in
  ``fail_reason``) when the batch ends; the other members go on.
- Records: every trial gets the user attrs of a one-by-one trial (``run_trial``) plus
  ``batch_id`` and ``batch_dir``; a batched trial's ``wall_seconds`` is its batch's.
- Failures: one heartbeat thread beats for all trials. A killed worker's trials go stale and
  are retried (``retry_trial`` carries ``batch_id`` and ``batch_dir``); Ctrl-C retries every
  running trial of the batch at once. A worker that finds a queued retry of a batch claims the
  batch's other queued retries too and resumes the population from ``batch_dir/checkpoint.pt``
  when the batch is whole again: each of its trials is queued (and now claimed) or finished
  (pruned or diverged trials ride along frozen from the start, ``BatchMember.frozen``: their
  files stay as they were written). Otherwise (a sibling is running elsewhere, or
  the batch's manifest is missing) the trials it claimed start afresh as a new batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autotune.forecast import judge_from, judging
from autotune.schedules import CombinedHooks, Schedule, ScheduleHooks, observed
from autotune.tuning.lifecycle import Heartbeat, claim_trial, claim_waiting, is_counted, retry_trial
from autotune.tuning.trials import (RunPlan, TrialOutcome, layer_attrs, record_error, record_seed, reported_value,
                                    set_attrs, suggest_schedule, trial_value)
from tql.data.datasets import SIZE_FIELDS
from tql.evaluation import EvalResult
from tql.io import atomic_write_json
from tql.tasks import TaskSpec
from tql.trainer import TrainHooks

MANIFEST = "batch.json"


@dataclass
class Slot:
    """One trial of a batch: its S members (one per seed) and what it has recorded so far."""

    plan: RunPlan
    task: TaskSpec
    schedule: Schedule
    run_dir: Path
    trial: optuna.Trial | None  # None: a finished trial riding along frozen in a resumed batch
    attrs: dict[str, Any] = field(default_factory=dict)
    outcome: TrialOutcome | None = None  # set once the trial is told (pruned mid-batch, or at the end)
    lost: bool = False  # another worker declared it lost and retried it: record nothing more

    @property
    def rho(self) -> float:
        return self.schedule.rho if self.schedule.kind == "constant" else self.schedule.mean_rho()

    @property
    def live(self) -> bool:
        return self.trial is not None and self.outcome is None and not self.lost

    def seed_dir(self, seed: int) -> Path:
        return self.run_dir / f"seed-{seed}"

    def metrics_paths(self) -> list[str]:
        return [str((self.seed_dir(seed) / "metrics.jsonl").resolve()) for seed in self.plan.seed_list()]

    def prune(self, seed: int, step: int, t0: float) -> None:
        """Tell Optuna PRUNED now, so the trial stops counting against the others at once; its
        members freeze at their next evaluation (this one, for the members after ``seed``)."""
        attrs = {**self.attrs, "pruned_at": {"seed": seed, "step": step}, "metrics": self.metrics_paths(),
                 "steps": step * len(self.plan.seed_list()), "wall_seconds": time.perf_counter() - t0}
        data_kind = _data_kind(self.seed_dir(seed))
        if data_kind is not None:
            attrs["data_kind"] = data_kind
        self._tell(attrs, TrialState.PRUNED, None)

    def finish(self, outcomes: list, t0: float) -> None:
        """Record the trial from its members' outcomes (seed order), as ``run_trial`` would."""
        attrs = {**self.attrs, "successes": [], "metrics": [], "steps": 0}
        for seed, member in zip(self.plan.seed_list(), outcomes):
            if member.diverged is not None:
                attrs["steps"] += member.diverged.step
                attrs.setdefault("fail_kind", "diverged")
                attrs.setdefault("fail_reason", f"seed {seed}: {member.diverged}")
                continue
            attrs["metrics"].append(str((self.seed_dir(seed) / "metrics.jsonl").resolve()))
            attrs["steps"] += member.result.steps
            attrs["data_kind"] = member.result.data_kind
            attrs.update({k: v for k, v in member.result.extra.items() if k in SIZE_FIELDS[:2]})
            record_seed(attrs, member.result.evals, self.plan.spec.last_k, self.plan.spec.objective,
                        self.seed_dir(seed) / "metrics.jsonl", member.result.extra.get("collapse"))
        attrs["wall_seconds"] = time.perf_counter() - t0
        if "fail_kind" in attrs:
            return self._tell(attrs, TrialState.FAIL, None)
        self._tell(attrs, TrialState.COMPLETE, trial_value(attrs, self.plan.spec.objective))

    def _tell(self, attrs: dict[str, Any], state: TrialState, value: float | None) -> None:
        self.outcome = TrialOutcome(state, value, attrs, self.trial.number)
        try:
            set_attrs(self.trial, attrs)
            self.trial.study.tell(self.trial, value, state=state)
        except UpdateFinishedTrialError:
            self.lost = True  # declared lost while it ran (a long pause); its retry redoes it


def _data_kind(seed_dir: Path) -> str | None:
    """The data kind a member trains on, from the config.json its run wrote (None before that)."""
    try:
        return json.loads((seed_dir / "config.json").read_text()).get("data_kind")
    except (OSError, ValueError):
        return None


class MemberReporter(TrainHooks):
    """Reports member (trial, seed j)'s evaluations to its trial at step ``j * steps + step``
    and freezes the member once the trial is pruned (or finished elsewhere)."""

    def __init__(self, slot: Slot, seed_index: int, steps: int, t0: float,
                 on_step: Callable[[int], None] | None, judge_from: int | None = 0):
        self.slot, self.seed_index, self.steps, self.t0, self.on_step = slot, seed_index, steps, t0, on_step
        self.reports, self.judge_from = 0, judge_from  # no pruning before the predicted engagement

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def on_eval(self, step: int, result: EvalResult) -> bool:
        if not self.slot.live:
            return True
        trial = self.slot.trial
        try:
            trial.report(reported_value(result, self.slot.plan.spec.objective), self.seed_index * self.steps + step)
        except UpdateFinishedTrialError:
            self.slot.lost = True
            return True
        self.reports += 1
        if (self.reports >= self.slot.plan.spec.warmup_evals and judging(self.judge_from, step)
                and trial.should_prune()):
            self.slot.prune(self.slot.plan.seed_list()[self.seed_index], step, self.t0)
            return True
        return False

    def state_dict(self) -> dict:
        return {"reports": self.reports}

    def load_state_dict(self, state: dict) -> None:
        self.reports = int(state.get("reports", 0))


@dataclass
class Batch:
    batch_id: str
    batch_dir: Path
    slots: list[Slot]
    resume: bool  # continue from batch_dir/checkpoint.pt (a retried batch, whole again)

    def claimed(self) -> list[Slot]:
        return [s for s in self.slots if s.trial is not None]

    def live(self) -> list[Slot]:
        return [s for s in self.slots if s.live]


# ----- claiming -------------------------------------------------------------------------------

def claim_batch(plan: RunPlan, study: optuna.Study, task: TaskSpec) -> Batch | None:
    """The next batch: a retried batch's queued trials first, else up to ``plan.batch`` new (or
    queued) trials; None when the study has its trials."""
    retried = _claim_retried_batch(plan, study, task)
    if retried is not None:
        return retried
    slots = []
    for _ in range(plan.batch):
        trial = claim_trial(study, plan.trials)
        if trial is None:
            break
        slots.append(_new_slot(plan, task, trial))
    return _fresh_batch(plan, task, slots) if slots else None


def _new_slot(plan: RunPlan, task: TaskSpec, trial: optuna.Trial) -> Slot:
    """A claimed trial's slot; its schedule is suggested now, before the next trial is asked."""
    schedule = suggest_schedule(trial, plan.spec, task)
    run_dir = Path(trial.user_attrs.get("run_dir") or
                   plan.runs_dir / plan.study / task.name / f"trial-{trial.number:04d}")
    return Slot(plan, task, schedule, run_dir, trial)


def _fresh_batch(plan: RunPlan, task: TaskSpec, slots: list[Slot]) -> Batch:
    """A new batch, named after its first trial (trial numbers are unique within a study)."""
    batch_id = f"batch-{slots[0].trial.number:04d}"
    return Batch(batch_id, plan.runs_dir / plan.study / task.name / batch_id, slots, resume=False)


def _claim_retried_batch(plan: RunPlan, study: optuna.Study, task: TaskSpec) -> Batch | None:
    """Claim the queued retries of the first retried batch; None when there is none."""
    queued = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if "batch_dir" in t.user_attrs]
    if not queued:
        return None
    batch_dir = Path(queued[0].user_attrs["batch_dir"])
    manifest = _read_manifest(batch_dir)
    if manifest is None:
        return None  # its retries are claimed one by one into new batches
    latest = _latest_by_run_dir(study.get_trials(deepcopy=False))
    slots, whole = [], True
    for entry in manifest["slots"]:
        frozen = latest.get(entry["run_dir"])
        slot = _retried_slot(plan, study, task, entry, frozen)
        whole = whole and slot is not None
        if slot is not None:
            slots.append(slot)
    claimed = [s for s in slots if s.trial is not None]
    if not claimed:
        return None
    if whole:
        return Batch(manifest["batch_id"], batch_dir, slots, resume=True)
    return _fresh_batch(plan, task, claimed)


def _retried_slot(plan: RunPlan, study: optuna.Study, task: TaskSpec, entry: dict,
                  latest: FrozenTrial | None) -> Slot | None:
    """A manifest entry's slot now: its queued retry (claimed), or its finished trial riding
    along frozen; None when it cannot rejoin (running elsewhere, taken, or unknown)."""
    if latest is None:
        return None
    if latest.state == TrialState.WAITING:
        trial = claim_waiting(study, latest._trial_id)
        return None if trial is None else _new_slot(plan, task, trial)
    if latest.state.is_finished() and is_counted(latest) and "schedule" in latest.user_attrs:
        return Slot(plan, task, Schedule.from_dict(latest.user_attrs["schedule"]), Path(entry["run_dir"]), None)
    return None


def _latest_by_run_dir(trials: list[FrozenTrial]) -> dict[str, FrozenTrial]:
    """Each run folder's newest trial (a retry keeps its original's run folder)."""
    latest: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if "run_dir" in t.user_attrs:
            latest[str(Path(t.user_attrs["run_dir"]).resolve())] = t
    return latest


def _read_manifest(batch_dir: Path) -> dict | None:
    try:
        return json.loads((batch_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(batch: Batch, task: TaskSpec) -> None:
    """The batch's member list, so a retry can rebuild it in the checkpoint's order."""
    atomic_write_json(batch.batch_dir / MANIFEST, {
        "batch_id": batch.batch_id, "task": task.name, "seeds": batch.slots[0].plan.seed_list(),
        "slots": [{"run_dir": str(s.run_dir.resolve()), "trial": s.trial.number if s.trial else None,
                   "schedule": s.schedule.to_dict()} for s in batch.slots]})


# ----- running --------------------------------------------------------------------------------

def _trial_attrs(plan: RunPlan, task: TaskSpec, slot: Slot, batch: Batch) -> dict[str, Any]:
    """The user attrs a trial starts with: ``run_trial``'s, plus its batch."""
    import socket

    return {
        "task": task.name, "n_tokens": task.n_tokens, "profile": plan.profile, "precision": plan.precision,
        "seeds": plan.seed_list(), "rho": slot.rho, "target_entropy": task.target_entropy(slot.rho),
        "schedule": slot.schedule.to_dict(), **layer_attrs(slot.schedule),
        "run_dir": str(slot.run_dir.resolve()), "host": socket.gethostname(), "objective": plan.spec.objective,
        "successes": [], "metrics": [], "steps": 0, "batch_id": batch.batch_id,
        "batch_dir": str(batch.batch_dir.resolve()),
        "judged_from": judge_from(plan.train_config(task, slot.rho, plan.seed_list()[0]), slot.schedule),
    }


def _members(plan: RunPlan, task: TaskSpec, batch: Batch, t0: float, on_step: Callable[[int], None] | None) -> list:
    """K trials x S seeds members, trial-major; each member's hooks are its trial's schedule
    and its own reporter (only the first live member drives the progress bar)."""
    from tql.batched.batch_runs import BatchMember

    members, progress = [], on_step
    for slot in batch.slots:
        for index, seed in enumerate(plan.seed_list()):
            config = plan.train_config(task, slot.rho, seed)
            if slot.trial is None:  # a finished trial riding along: frozen from the start, files untouched
                members.append(BatchMember(config=config, out_dir=slot.seed_dir(seed), frozen=True))
                continue
            reporter = MemberReporter(slot, index, config.steps, t0, progress, slot.attrs["judged_from"])
            progress = None
            hooks = reporter if slot.schedule.kind == "constant" else CombinedHooks(
                ScheduleHooks.for_config(slot.schedule, config), reporter)
            observers = plan.run_observers(task, slot.trial.number, seed, slot.rho)
            hooks = observed(hooks, observers)
            members.append(BatchMember(config=config, out_dir=slot.seed_dir(seed), hooks=hooks))
    return members


def run_batch(plan: RunPlan, study: optuna.Study, task: TaskSpec,
              on_step: Callable[[int], None] | None = None) -> list[TrialOutcome] | None:
    """Claim a batch, train it as one population under one heartbeat, and return the outcomes
    it recorded (not those of trials declared lost meanwhile: their retries redo them); None
    when the study has its trials."""
    from tql.batched.batch_runs import train_batch

    batch = claim_batch(plan, study, task)
    if batch is None:
        return None
    t0 = time.perf_counter()
    for slot in batch.claimed():
        slot.attrs = _trial_attrs(plan, task, slot, batch)
        set_attrs(slot.trial, slot.attrs)
    try:
        with Heartbeat(study, [s.trial for s in batch.claimed()], plan.heartbeat_interval):
            members = _members(plan, task, batch, t0, on_step)
            _write_manifest(batch, task)
            outcomes = train_batch(members, batch.batch_dir, fresh=not batch.resume, progress=False)
    except KeyboardInterrupt:
        for slot in batch.live():
            retry_trial(study, study._storage.get_trial(slot.trial._trial_id), "interrupted", "interrupted by the user")
        raise
    except Exception as exc:
        for slot in batch.live():
            record_error(study, slot.trial, exc)
        raise
    seeds = len(plan.seed_list())
    for i, slot in enumerate(batch.slots):
        if slot.live:
            slot.finish(outcomes[i * seeds:(i + 1) * seeds], t0)
    return [s.outcome for s in batch.claimed() if s.outcome is not None and not s.lost]
