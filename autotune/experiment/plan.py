"""`tql-tune experiment`: the whole comparison in one command, sized to a time budget.

Phases, in order: data for every domain that has none (domains side by side), the ``tuned``
study (constant rho; read by ``tuned`` and ``transfer``) and the ``layers`` study (depth
profile), both batched on CUDA, then ``compare`` with every approach on the same tasks, seeds
and steps per run. Outputs: ``OUT/plan.json`` (the sized plan, its estimates and each phase's
measured minutes), ``OUT/report.md``, ``report.png``, ``data.json`` (compare's).

Sizing (``autotune.experiment.cost``): steps per run are the most that fit the budget by the cost
model: the reference machine's speeds (from the spec) for its budget, or, with
``budget_minutes``, this machine's, measured by a short probe (``autotune.experiment.probe``).
Re-running with the same OUT resumes: the plan is read back from ``plan.json`` (no new probe,
so the same steps), studies continue to their trial counts, finished runs are reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autotune.experiment.cost import PhaseWork, experiment_work, fit_steps
from autotune.experiment.spec import ExperimentSpec, Machine
from tql.errors import ConfigError
from tql.io import atomic_write_json
from tql.tasks import TaskSpec

PLAN_FILE = "plan.json"
STUDY_NAMES = {"tuned": "tuned", "layers": "layers"}
REFERENCE_STUDY_BATCH = 8  # autotune.tuning.trials.BATCH_AUTO on CUDA


@dataclass
class ExperimentPlan:
    """A sized experiment: what runs, with how many steps, and what it should cost."""

    spec: ExperimentSpec
    tasks: list[TaskSpec]
    approaches: list[str]
    steps: int
    phases: list[PhaseWork]  # as they run here
    reference_phases: list[PhaseWork]  # the same plan on the reference machine (batched on CUDA)
    here: Machine | None  # None: sized for the reference machine
    budget_minutes: float
    notes: list[str] = field(default_factory=list)

    @property
    def eval_every(self) -> int:
        return max(1, self.steps // self.spec.evaluations)

    def train_overrides(self) -> dict[str, Any]:
        """TrainConfig fields of every run and trial (the profile fills the rest)."""
        return {"steps": self.steps, "eval_every": self.eval_every, "eval_episodes": self.spec.eval_episodes,
                "eval_max_steps": self.spec.eval_max_steps or None, "log_every": max(1, self.steps // 20),
                "checkpoint_every": self.eval_every, "data_episodes": self.spec.data_episodes,
                "data_episode_length": self.spec.data_episode_length}

    def minutes_here(self) -> list[float] | None:
        return None if self.here is None else [p.seconds(self.here, self.steps) / 60 for p in self.phases]

    def minutes_reference(self) -> list[float]:
        return [p.seconds(self.spec.reference, self.steps) / 60 for p in self.reference_phases]

    def to_dict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        here = self.minutes_here()
        return {"inputs": inputs, "steps": self.steps, "eval_every": self.eval_every,
                "approaches": self.approaches, "tasks": [t.name for t in self.tasks], "notes": self.notes,
                "machine_here": None if self.here is None else vars(self.here),
                "reference": vars(self.spec.reference),
                "phases": [{"phase": p.name, "runs": p.runs, "member_updates": p.member_updates_per_step * self.steps,
                            "minutes_here": None if here is None else round(here[i], 2),
                            "minutes_reference": round(self.minutes_reference()[i], 2)}
                           for i, p in enumerate(self.phases)],
                "measured_minutes": {}}


def data_size(spec: ExperimentSpec):
    """The dataset every run expects (``tql.data``'s DataSize)."""
    from tql.data.datasets import DataSize

    return DataSize(spec.data_episodes, spec.data_episode_length)


def missing_domains(spec: ExperimentSpec, data_dir: Path) -> list[TaskSpec]:
    """One task per domain whose data must be generated: none in ``data_dir``, or only a
    generated dataset smaller than the experiment's (official data is always used)."""
    from tql.data import find_dataset
    from tql.errors import MissingDatasetError

    expect, missing, seen = data_size(spec), [], set()
    for task in spec.task_specs():
        if task.domain in seen:
            continue
        seen.add(task.domain)
        try:
            _, kind, meta = find_dataset(task, data_dir, "auto", expect=expect)
        except MissingDatasetError:
            missing.append(task)
            continue
        episodes, length = meta.get("train_episodes", meta.get("episodes")), meta.get("episode_length")
        if kind == "generated" and isinstance(episodes, int) and isinstance(length, int):
            if not expect.held_by(episodes, episodes * (length - 1)):
                missing.append(task)
    return missing


def usable_approaches(spec: ExperimentSpec, tasks: list[TaskSpec]) -> tuple[list[str], list[str]]:
    """The spec's approaches this task list can run, and a note for each one left out."""
    domains = {t.domain for t in tasks}
    if "transfer" in spec.approaches and len(domains) < 2:
        note = f"transfer skipped: it needs tasks of >= 2 domains, these are all {next(iter(domains))}"
        return [a for a in spec.approaches if a != "transfer"], [note]
    return list(spec.approaches), []


def phase_work(spec: ExperimentSpec, here: Machine | None, n_missing: int, study_batch: int, compare_batched: bool):
    """``(tasks, approaches, notes, phases here, phases on the reference machine)`` of ``spec``.

    The usable approaches and a note for each one left out; the phases' work here and on the
    reference machine (batched as on CUDA there); ``here`` None: the reference phases serve both."""
    tasks = spec.task_specs()
    approaches, notes = usable_approaches(spec, tasks)
    reference = experiment_work(spec, tasks, approaches, n_missing, REFERENCE_STUDY_BATCH, True)
    phases = reference if here is None else experiment_work(spec, tasks, approaches, n_missing, study_batch,
                                                            compare_batched)
    return tasks, approaches, notes, phases, reference


def plan_experiment(spec: ExperimentSpec, here: Machine | None, budget_minutes: float | None,
                    n_missing: int, study_batch: int, compare_batched: bool) -> ExperimentPlan:
    """Size the steps per run: for ``here`` in ``budget_minutes``, or (``here`` None) for the
    reference machine in the spec's minutes."""
    check_budget(budget_minutes)
    tasks, approaches, notes, phases, reference = phase_work(spec, here, n_missing, study_batch, compare_batched)
    machine = spec.reference if here is None else here
    minutes = budget_minutes if budget_minutes is not None else spec.minutes
    steps = fit_steps(spec, phases, machine, minutes * 60)
    plan = ExperimentPlan(spec, tasks, approaches, steps, phases, reference, here, minutes, notes)
    if machine.at(steps) is not machine:
        plan.notes.append(f"runs of >= {machine.compile_min_steps:,} updates compile their loss: priced at "
                          f"{machine.compiled_updates_per_second:g} updates/s per run (eager: "
                          f"{machine.updates_per_second:g}) and {machine.compile_seconds:g} s of compilation each; "
                          "a machine's first compilation takes about a minute more")
    plan.notes.append(engagement_note(plan))
    return plan


def engagement_note(plan: ExperimentPlan) -> str:
    """Whether H̄ can act in runs of the plan's length (``autotune.forecast``): when the control
    is predicted to engage, or how long runs must be, and what they would cost, for it to."""
    from autotune.forecast import engaging_options, forecast
    from tql.trainer import TrainConfig

    configs = [TrainConfig.from_profile(task.name, plan.spec.profile, dict(plan.spec.agent), **plan.train_overrides())
               for task in plan.tasks]
    forecasts = [forecast(config, 1.0) for config in configs]
    idle = [config for config, predicted in zip(configs, forecasts) if not predicted.acts]
    if not idle:
        slowest = max(predicted.engaged for predicted in forecasts)
        return (f"the control is predicted to engage after ~{slowest:,} of the {plan.steps:,} updates per run "
                "(the slowest task; tql.engagement)")
    config = idle[0]
    needed, change = engaging_options(config, 1.0, plan.steps)
    fix = ("; or set " + " and ".join(f"{k} = {v:g}" for k, v in change.items()) + " in the spec's [agent]"
           if change else "")
    if needed is None:
        return (f"H̄ cannot change these runs: on {config.task} the control is predicted not to engage within "
                f"2,000,000 updates{fix}")
    machine = plan.spec.reference if plan.here is None else plan.here
    minutes = sum(p.seconds(machine, needed) for p in plan.phases) / 60
    return (f"H̄ cannot change these runs: on {config.task} the control is predicted to engage only in runs of "
            f">= {needed:,} updates, not {plan.steps:,} (the plan at that length: ~{minutes:,.0f} minutes"
            f"{'' if plan.here is None else ' here'}){fix}")


def check_budget(budget_minutes: float | None) -> None:
    """A time budget in minutes: None (the spec's reference machine) or a number > 0."""
    if budget_minutes is not None and not budget_minutes > 0:
        raise ConfigError(f"--budget-minutes {budget_minutes!r} must be > 0")


def plan_inputs(spec: ExperimentSpec, budget_minutes: float | None, dry_run: bool, device: str) -> dict[str, Any]:
    """What decides a plan: a re-run with the same inputs reads its plan back from plan.json."""
    text = json.dumps(spec.to_dict(), sort_keys=True, default=str)
    return {"spec": spec.source, "spec_hash": hashlib.sha1(text.encode()).hexdigest()[:12],
            "budget_minutes": budget_minutes, "dry_run": dry_run, "device": device}


def saved_plan(out: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """OUT's plan when it was made from the same inputs; another plan there is refused."""
    path = out / PLAN_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("inputs") != inputs:
        raise ConfigError(f"{path} holds an experiment planned with other settings ({saved.get('inputs')}); "
                          "use another --out, or the same spec, --budget-minutes, --dry-run and --device")
    return saved


def replan(spec: ExperimentSpec, saved: dict[str, Any], n_missing: int, study_batch: int,
           compare_batched: bool) -> ExperimentPlan:
    """The saved plan again (same steps, same machine speeds), for a resumed run."""
    here = Machine(**saved["machine_here"]) if saved["machine_here"] else None
    tasks, approaches, notes, phases, reference = phase_work(spec, here, n_missing, study_batch, compare_batched)
    budget = saved["inputs"]["budget_minutes"] or spec.minutes
    return ExperimentPlan(spec, tasks, approaches, saved["steps"], phases, reference, here, budget, notes)


# ----- running it ------------------------------------------------------------------------------

@dataclass
class Settings:
    """Where and how the experiment runs (not part of what it measures)."""

    out: Path
    data_dir: Path
    device: str = "auto"
    threads: int | None = None
    workers: int | str = "auto"  # a phase's runs side by side (autotune.tuning.trials.resolve_workers)
    log: tuple[str, ...] = ()  # loggers the studies' and the comparison's runs are mirrored into
    wandb_project: str | None = None
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        from autotune.tracking import usable_loggers

        self.log = usable_loggers(self.log)

    def tracking(self) -> dict:
        """The logging options of a phase's plan (``RunPlan``, ``ComparePlan``)."""
        return {"log": self.log, "wandb_project": self.wandb_project, "wandb_entity": self.wandb_entity}

    def compare_workers(self, spec: ExperimentSpec) -> int:
        """The comparison's worker processes (at most one per run); the probe measures as many."""
        from autotune.tuning.trials import resolve_workers

        tasks = spec.task_specs()
        runs = len(tasks) * len(usable_approaches(spec, tasks)[0]) * spec.seeds
        return resolve_workers(self.workers, self.device, runs, self.threads)


def make_data(plan: ExperimentPlan, settings: Settings, say: Callable[[str], None]) -> None:
    """Generate each missing domain's dataset (one after another, each over every core)."""
    from tql.data import available_cpus
    from tql.data.provision import provide_task_data

    for task in missing_domains(plan.spec, settings.data_dir):
        provide_task_data(task, settings.data_dir, "auto", data_size(plan.spec), make_data=True, say=say,
                          profile=plan.spec.profile, progress=False, workers=available_cpus())


def storage_url(settings: Settings) -> str:
    return f"sqlite:///{(settings.out / 'studies.db').resolve()}"


def run_study(plan: ExperimentPlan, settings: Settings, which: str, say: Callable[[str], None]) -> None:
    """The ``tuned`` or ``layers`` study on every task, continued to its trial count."""
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.storage import open_storage
    from autotune.tuning.studies import create_studies, work_all
    from autotune.tuning.trials import RunPlan

    spec_path = plan.spec.tuned_spec if which == "tuned" else plan.spec.layers_spec
    study_spec = load_spec(spec_path)
    expected = "layers" if which == "layers" else "constant"
    if study_spec.kind != expected:
        raise ConfigError(f"the {which} study's spec {spec_path} has search.kind={study_spec.kind!r}, "
                          f"need {expected!r}")
    trials = plan.spec.tuned_trials if which == "tuned" else plan.spec.layers_trials
    run_plan = RunPlan(tasks=plan.tasks, spec=study_spec, study=STUDY_NAMES[which], storage=storage_url(settings),
                       profile=plan.spec.profile, trials=trials, seeds=plan.spec.study_seeds,
                       runs_dir=settings.out / "studies", data_dir=settings.data_dir, make_data=False,
                       device=settings.device, threads=settings.threads, train_overrides=plan.train_overrides(),
                       batch="auto", agent=dict(plan.spec.agent), workers=settings.workers, **settings.tracking())
    storage = open_storage(run_plan.storage)
    create_studies(run_plan, storage)
    say(f"study {which}: {len(plan.tasks)} task(s) x {trials} trials x {plan.spec.study_seeds} seed(s), "
        f"{plan.steps} steps each{f', batches of {run_plan.batch}' if run_plan.batch > 1 else ''}, "
        f"{run_plan.workers} worker(s)")
    work_all(run_plan)


def run_compare(plan: ExperimentPlan, settings: Settings, on_run: Callable[[str, str, int, float], None] | None):
    """Every approach on every task and seed; returns compare's ComparisonData."""
    from autotune.approaches import ComparePlan, batch_runs, run_comparison

    compare_plan = ComparePlan(tasks=plan.tasks, approaches=plan.approaches,
                               seeds=[100 + i for i in range(plan.spec.seeds)], out_dir=settings.out,
                               profile=plan.spec.profile, study=STUDY_NAMES["tuned"],
                               layers_study=STUDY_NAMES["layers"], storage=storage_url(settings),
                               train_overrides=plan.train_overrides(), data_dir=settings.data_dir,
                               device=settings.device, threads=settings.threads,
                               batch=batch_runs("auto", settings.device), agent=dict(plan.spec.agent),
                               workers=settings.compare_workers(plan.spec), **settings.tracking())
    return run_comparison(compare_plan, on_run=on_run)


def run_experiment(plan: ExperimentPlan, settings: Settings, record: Callable[[str, float], None],
                   say: Callable[[str], None] = lambda text: None,
                   on_run: Callable[[str, str, int, float], None] | None = None):
    """Data, the studies the approaches read, then the comparison; ``record(phase, minutes)``
    is called as each phase ends, and in the comparison after each run, so that the minutes of
    a comparison cut off and resumed add up (for plan.json). Returns the ComparisonData."""
    start = time.perf_counter()
    make_data(plan, settings, say)
    record("data", (time.perf_counter() - start) / 60)
    for which, needed in (("tuned", {"tuned", "transfer"}), ("layers", {"layers"})):
        if needed & set(plan.approaches):
            start = time.perf_counter()
            run_study(plan, settings, which, say)
            record(f"study {which}", (time.perf_counter() - start) / 60)
    mark = time.perf_counter()

    def lap() -> None:
        nonlocal mark
        now = time.perf_counter()
        record("compare", (now - mark) / 60)
        mark = now

    def finished(approach: str, task: str, seed: int, value: float) -> None:
        lap()
        if on_run is not None:
            on_run(approach, task, seed, value)

    data = run_compare(plan, settings, finished)
    lap()
    return data


def save_plan(out: Path, record: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PLAN_FILE, record)
    return out / PLAN_FILE
