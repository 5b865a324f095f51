"""Optuna studies over H̄: one study per task, trials = TQL runs at rho = H̄ / log n.

A study's size is exact: ``trials`` counted trials, whatever the number of workers or
machines. Counted are trials that ran to a result (complete, pruned, or failed because the
run diverged) and those running or queued now. Trials that lost their worker (heartbeat
stopped, or the process is gone) or were interrupted are failed with the reason and re-queued
with the same rho and the same run folder, so the retry resumes from the last checkpoint.

Workers never talk to each other: everything goes through the storage, so the same code runs
one process on a laptop, ``--workers W`` processes on one machine, or many machines sharing a
PostgreSQL URL or a journal file.
"""

from __future__ import annotations

import json
import math
import socket
import time
from contextlib import nullcontext
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from autotune.forecast import judge_from, judging
from autotune.tuning.batched import run_batch
from autotune.schedules import CombinedHooks, ScheduleHooks, observed
from autotune.tracking.study_log import study_tracker
from autotune.tuning.study_spec import StudySpec
from autotune.tuning.storage import claim_runs_folder, open_storage
from autotune.tuning.lifecycle import Heartbeat, claim_trial, retry_stale_trials, retry_trial
from autotune.tuning.trials import (RunPlan, TrialOutcome, layer_attrs, record_error, record_seed, reported_value,
                                    set_attrs, study_name, suggest_schedule, suggest_sharing, trial_value)
from tql.data import available_cpus
from tql.data.datasets import SIZE_FIELDS
from tql.errors import ConfigError, TQLError
from tql.evaluation import EvalResult
from tql.tasks import TaskSpec
from tql.trainer import PROFILES, TrainHooks, TrainingDiverged, train

# ----- study creation and checks -------------------------------------------------------------

def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    if spec.sampler == "tpe":
        # constant_liar: parallel workers do not all ask for the same promising rho.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=min(4, spec.startup_trials + 1))
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if spec.sampler == "grid":
        space = {"rho": spec.grid(), **({"temperature_sharing": list(spec.sharing)} if spec.sharing else {})}
        return _AskTellGridSampler(space, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its ``study.stop()`` once every point is taken: stop is
    for ``study.optimize``, and this toolkit asks and tells (it counts the trials itself), so
    the trial that took the last point would fail at its ``tell``."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=0,
                                       n_min_trials=1)


# The agent settings a study's trials train with; a study recorded under other settings (or
# none: tql-tune 0.1) is not continued, because its trials would not compare with new ones.
AGENT_SETTINGS = "published-1"


def study_attrs(plan: RunPlan, task: TaskSpec) -> dict[str, Any]:
    return {"tql:task": task.name, "tql:n_tokens": task.n_tokens, "tql:profile": plan.profile,
            "tql:precision": plan.precision, "tql:search": plan.spec.search_space(),
            "tql:spec_source": plan.spec.source, "tql:settings": AGENT_SETTINGS,
            "tql:objective": plan.spec.objective, "tql:agent": _jsonable(plan.agent)}


def _jsonable(agent: dict[str, Any]) -> dict[str, Any]:
    """Agent overrides as storage keeps them (tuples come back as lists)."""
    return json.loads(json.dumps(agent, sort_keys=True))


def check_compatible(existing: optuna.Study, plan: RunPlan, task: TaskSpec) -> None:
    """A stored study may only be continued with the same search space, profile and precision
    (studies made before precision was recorded were float32 ones)."""
    attrs = existing.user_attrs
    name = existing.study_name
    if attrs.get("tql:search") not in (None, plan.spec.search_space()):
        raise ConfigError(f"study {name!r} searched rho in {_range(attrs['tql:search'])}, this spec in "
                          f"{_range(plan.spec.search_space())}; use another --study name")
    if attrs.get("tql:profile") not in (None, plan.profile):
        raise ConfigError(f"study {name!r} was run with profile {attrs['tql:profile']!r}, not {plan.profile!r}; "
                          "use another --study name or the same --profile")
    if attrs.get("tql:settings") != AGENT_SETTINGS and attrs.get("tql:task") is not None:
        raise ConfigError(f"study {name!r} was run with tql-tune 0.1's agent (alpha from 0.01 at lr 3e-4, summed "
                          "penalty, Adam 3e-4, deeper presets); today's is TQL as published, so its trials would "
                          "not compare: use another --study name")
    stored_objective = attrs.get("tql:objective", "success")  # studies before objectives maximised success
    if stored_objective != plan.spec.objective:
        raise ConfigError(f"study {name!r} maximises {stored_objective}, not {plan.spec.objective}: its trials' values "
                          "would not compare; use another --study name or the same --objective")
    stored_agent = attrs.get("tql:agent", {})  # studies before --agent trained the profile's agent
    if stored_agent != _jsonable(plan.agent):
        raise ConfigError(f"study {name!r} was run with agent options {_options_text(stored_agent)}, not "
                          f"{_options_text(plan.agent)}: its trials would not compare; use another --study name or "
                          "the same --agent options")
    stored_precision = attrs.get("tql:precision", "fp32")
    if stored_precision != plan.precision:
        raise ConfigError(f"study {name!r} was run with precision {stored_precision!r}, not {plan.precision!r}; "
                          "use another --study name or the same --precision")


def _options_text(agent: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(agent.items())) or "(none: the profile's)"


def _range(search: dict) -> str:
    return f"[{search['rho_low']}, {search['rho_high']}]{' (log)' if search.get('log') else ''}"


def load_existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def check_studies(plan: RunPlan, storage: optuna.storages.BaseStorage) -> dict[str, optuna.Study | None]:
    """The stored study of each task (None if new), after checking each may be continued."""
    existing = {t.name: load_existing(storage, study_name(plan.study, t.name)) for t in plan.tasks}
    for task in plan.tasks:
        if existing[task.name] is not None:
            check_compatible(existing[task.name], plan, task)
    return existing


def create_studies(plan: RunPlan, storage: optuna.storages.BaseStorage) -> list[optuna.Study]:
    """Check every stored study and the runs folder first, then create the missing ones (all or
    nothing)."""
    existing = check_studies(plan, storage)
    claim_runs_folder(plan.runs_dir / plan.study, plan.storage)
    studies = []
    for task in plan.tasks:
        study = existing[task.name]
        if study is None:
            study = optuna.create_study(study_name=study_name(plan.study, task.name), storage=storage,
                                        direction="maximize", load_if_exists=True)
            for key, value in study_attrs(plan, task).items():
                study.set_user_attr(key, value)
        studies.append(study)
    return studies


# ----- running one trial -----------------------------------------------------------------------

class TrialHooks(TrainHooks):
    """Reports each evaluation to Optuna and stops the run when the pruner says so.

    Seeds run one after another; seed i's evaluations are reported at steps offset by
    i x steps, so every trial reports the same step numbers and the pruner compares like
    with like. The pruner is not asked before ``judge_from``, the update at which the trial's
    control is predicted to engage (None: never asked): before it, H̄ has not acted, and any
    difference between trials is noise."""

    def __init__(self, trial: optuna.Trial, offset: int, warmup: int, on_step: Callable[[int], None] | None,
                 objective: str = "success", judge_from: int | None = 0):
        self.trial, self.offset, self.warmup, self.on_step = trial, offset, warmup, on_step
        self.objective, self.reports, self.pruned, self.judge_from = objective, 0, False, judge_from

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def on_eval(self, step: int, result: EvalResult) -> bool:
        self.trial.report(reported_value(result, self.objective), self.offset + step)
        self.reports += 1
        self.pruned = (self.reports >= self.warmup and judging(self.judge_from, step)
                       and self.trial.should_prune())
        return self.pruned


def run_trial(plan: RunPlan, task: TaskSpec, trial: optuna.Trial,
              on_step: Callable[[int], None] | None = None) -> TrialOutcome:
    """Train every seed at the trial's rho; the trial's value is the mean objective over seeds."""
    spec = plan.spec
    schedule = suggest_schedule(trial, spec, task)
    sharing = suggest_sharing(trial, spec)
    rho = schedule.rho if schedule.kind == "constant" else schedule.mean_rho()
    run_dir = Path(trial.user_attrs.get("run_dir") or plan.runs_dir / plan.study / task.name / f"trial-{trial.number:04d}")
    configs = [plan.train_config(task, rho, seed, sharing) for seed in plan.seed_list()]
    attrs: dict[str, Any] = {
        "task": task.name, "n_tokens": task.n_tokens, "profile": plan.profile, "precision": plan.precision,
        "seeds": plan.seed_list(), "rho": rho, "target_entropy": task.target_entropy(rho),
        "schedule": schedule.to_dict(), **layer_attrs(schedule),
        "temperature_sharing": configs[0].agent.temperature_sharing,
        "run_dir": str(run_dir.resolve()),
        "host": socket.gethostname(), "objective": spec.objective, "successes": [], "metrics": [], "steps": 0,
    }
    set_attrs(trial, attrs)
    t0 = time.perf_counter()
    for index, (seed, config) in enumerate(zip(plan.seed_list(), configs)):
        if index == 0:  # every seed's forecast is the same
            attrs["judged_from"] = judge_from(config, schedule)
        reporter = TrialHooks(trial, index * config.steps, spec.warmup_evals, on_step, spec.objective,
                              attrs["judged_from"])
        hooks = reporter if schedule.kind == "constant" else CombinedHooks(ScheduleHooks.for_config(schedule, config),
                                                                           reporter)
        observers = plan.run_observers(task, trial.number, seed, rho)
        hooks = observed(hooks, observers)
        seed_dir = run_dir / f"seed-{seed}"
        try:
            result = train(config, seed_dir, hooks, progress=False)
        except TrainingDiverged as exc:
            attrs.update(fail_kind="diverged", fail_reason=f"seed {seed}: {exc}")
            return _outcome(trial, attrs, t0, TrialState.FAIL, None)
        attrs["metrics"].append(str((seed_dir / "metrics.jsonl").resolve()))
        attrs["steps"] += result.steps
        attrs["data_kind"] = result.data_kind
        attrs.update({k: v for k, v in result.extra.items() if k in SIZE_FIELDS[:2]})
        if reporter.pruned:
            attrs["pruned_at"] = {"seed": seed, "step": result.steps}
            return _outcome(trial, attrs, t0, TrialState.PRUNED, None)
        record_seed(attrs, result.evals, spec.last_k, spec.objective, seed_dir / "metrics.jsonl",
                    result.extra.get("collapse"))
        set_attrs(trial, {k: attrs[k] for k in ("successes", "progress", "gained", "steps") if k in attrs})
    return _outcome(trial, attrs, t0, TrialState.COMPLETE, trial_value(attrs, spec.objective))


def _outcome(trial: optuna.Trial, attrs: dict, t0: float, state: TrialState, value: float | None) -> TrialOutcome:
    attrs["wall_seconds"] = time.perf_counter() - t0
    return TrialOutcome(state, value, attrs, trial.number)


def execute_trial(plan: RunPlan, study: optuna.Study, task: TaskSpec, trial: optuna.Trial,
                  on_step: Callable[[int], None] | None = None) -> TrialOutcome:
    """Run ``trial`` under a heartbeat and record its outcome in the storage."""
    try:
        with Heartbeat(study, trial, plan.heartbeat_interval):
            outcome = run_trial(plan, task, trial, on_step)
    except KeyboardInterrupt:
        retry_trial(study, study._storage.get_trial(trial._trial_id), "interrupted", "interrupted by the user")
        raise
    except Exception as exc:
        record_error(study, trial, exc)
        raise
    try:
        set_attrs(trial, outcome.attrs)
        study.tell(trial, outcome.value if outcome.state == TrialState.COMPLETE else None, state=outcome.state)
    except UpdateFinishedTrialError:
        pass  # declared lost while it ran (e.g. a long pause); its retry redoes it from the checkpoint
    return outcome


# ----- workers --------------------------------------------------------------------------------

@dataclass
class WorkerReport:
    ran: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried_stale: int = 0


def work(plan: RunPlan, on_trial: Callable[[str, TrialOutcome], None] | None = None,
         on_step: Callable[[int], None] | None = None, on_task: Callable[[TaskSpec], None] | None = None) -> WorkerReport:
    """One worker: fill every task's study in order, retrying trials of lost workers."""
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    storage = open_storage(plan.storage)
    report = WorkerReport()
    with study_tracker(plan.log, plan.runs_dir, plan.study, plan.wandb_project, plan.wandb_entity) or nullcontext() \
            as tracker:
        _work_tasks(plan, storage, report, tracker, on_trial, on_step, on_task)
    return report


def _work_tasks(plan: RunPlan, storage: Any, report: WorkerReport, tracker: Any,
                on_trial: Callable[[str, TrialOutcome], None] | None, on_step: Callable[[int], None] | None,
                on_task: Callable[[TaskSpec], None] | None) -> None:
    for task in plan.tasks:
        if on_task is not None:
            on_task(task)
        study = optuna.load_study(study_name=study_name(plan.study, task.name), storage=storage,
                                  sampler=make_sampler(plan.spec), pruner=make_pruner(plan.spec))
        while True:
            report.retried_stale += retry_stale_trials(study, plan.grace_period)
            outcomes = _next_trials(plan, study, task, on_step)
            if outcomes is None:
                break
            for outcome in outcomes:
                report.ran += 1
                setattr(report, _report_field(outcome.state), getattr(report, _report_field(outcome.state)) + 1)
                if tracker is not None and outcome.number is not None:
                    others = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                              if t.number != outcome.number and t.value is not None]
                    tracker.trial_ended(task.name, outcome.number, outcome.state.name, outcome.value, outcome.attrs,
                                        others)
                if on_trial is not None:
                    on_trial(task.name, outcome)


def _next_trials(plan: RunPlan, study: optuna.Study, task: TaskSpec,
                 on_step: Callable[[int], None] | None) -> list[TrialOutcome] | None:
    """Claim and run the next trial (or, with ``plan.batch`` > 1, the next batch) and return
    the outcomes it recorded ([] when every trial of a batch was declared lost meanwhile);
    None when the study has its trials."""
    if plan.batch > 1:
        return run_batch(plan, study, task, on_step)
    trial = claim_trial(study, plan.trials)
    return None if trial is None else [execute_trial(plan, study, task, trial, on_step)]


def _report_field(state: TrialState) -> str:
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")


def _worker_main(plan: RunPlan) -> None:
    """Entry point of a ``--workers`` child process (quiet; the parent shows progress)."""
    import warnings

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work(plan)


def run_workers(plan: RunPlan, poll: Callable[[], None] | None = None, poll_every: float = 2.0) -> list[int]:
    """Run ``plan.workers`` local processes on the studies; returns their exit codes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/OpenMP or MuJoCo state
    threads = plan.threads or max(1, available_cpus() // plan.workers)
    child_plan = _replace(plan, threads=threads)
    procs = [ctx.Process(target=_worker_main, args=(child_plan,), name=f"tql-worker-{i}") for i in range(plan.workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            if poll is not None:
                poll()
            for p in procs:
                p.join(timeout=poll_every / len(procs))
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    if poll is not None:
        poll()
    return [p.exitcode for p in procs]


def work_all(plan: RunPlan, poll: Callable[[], None] | None = None, **hooks) -> WorkerReport | None:
    """The studies' trials to the end: in this process (``plan.workers`` 1; ``hooks`` are
    ``work``'s) or in ``plan.workers`` worker processes (``poll`` called while they run). A
    failed worker is an error after the others end; finished trials stay saved."""
    if plan.workers == 1:
        return work(plan, **hooks)
    bad = [code for code in run_workers(plan, poll=poll) if code != 0]
    if bad:
        raise TQLError(f"{len(bad)} of {plan.workers} workers failed (exit codes {bad}); "
                       "finished trials are saved, re-run the same command to continue")
    return None


def _replace(plan: RunPlan, **changes) -> RunPlan:
    import dataclasses

    return dataclasses.replace(plan, **changes)


# ----- data ----------------------------------------------------------------------------------

def ensure_data(plan: RunPlan, say: Callable[[str], None] = lambda text: None) -> dict[str, str]:
    """Load (or, with make_data, generate: on every core, beside a too-small generated one) each
    domain's dataset once, before any worker starts; says its size, warns when it is smaller
    than the profile expects (``tql.data.provide_task_data``)."""
    from tql.data import expected_size, provide_task_data

    kinds: dict[str, str] = {}
    profile = PROFILES[plan.profile]
    for task in plan.tasks:
        if task.domain in kinds:
            continue
        expect = expected_size(task, profile["data_episodes"], profile["data_episode_length"])
        kinds[task.domain] = provide_task_data(task, plan.data_dir, plan.data_kind, expect, plan.make_data, say,
                                               profile=plan.profile, progress=False, workers=available_cpus()).kind
    return kinds


def data_signals(plan: RunPlan) -> dict[str, Any]:
    """Each task's ``tql.data.signal.DataSignal``: whether its dataset, relabelled for it,
    holds more than one reward (after ``ensure_data``)."""
    from tql.data import expected_size, load_task_data
    from tql.data.signal import data_signal

    profile = PROFILES[plan.profile]
    signals = {}
    for task in plan.tasks:
        expect = expected_size(task, profile["data_episodes"], profile["data_episode_length"])
        data = load_task_data(task, plan.data_dir, plan.data_kind, keep_info=True, expect=expect)
        signals[task.name] = data_signal(task, data)
    return signals


def record_signals(studies: list[optuna.Study], signals: dict[str, Any], forecasts: dict[str, Any]) -> None:
    """Store each task's data signal and its trials' engagement forecast (``tql.engagement``,
    for the search range's highest target) in its study (``show`` reads them back)."""
    for study in studies:
        task = study.user_attrs.get("tql:task")
        if task in signals:
            study.set_user_attr("tql:data_signal", signals[task].to_dict())
        if task in forecasts:
            study.set_user_attr("tql:engagement", dataclasses.asdict(forecasts[task]))


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None
