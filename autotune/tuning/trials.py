"""What every way of running a trial shares: the run plan, a trial's schedule, its objective and
outcome, and the attributes it records.

``autotune.tuning.studies`` runs trials one by one and ``autotune.tuning.batched`` trains several as
one population; both import this module and neither imports the other's internals.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from autotune.schedules import Schedule
from autotune.tracking import RunLabels, tracking_hooks, usable_loggers
from autotune.tuning.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR
from autotune.tuning.study_spec import StudySpec
from tql.engagement import first_engagement
from tql.errors import ConfigError
from tql.evaluation import EvalResult
from tql.io import read_jsonl
from tql.tasks import TaskSpec
from tql.trainer import PROFILES, TrainConfig, TrainHooks

DEFAULT_STUDY = "tql"


def study_name(study: str, task: str) -> str:
    """The Optuna study of ``task`` in the study set ``study``."""
    return f"{study}:{task}"


@dataclass
class RunPlan:
    """Everything ``tql-tune run`` decided before touching the storage."""

    tasks: list[TaskSpec]
    spec: StudySpec
    study: str = DEFAULT_STUDY
    storage: str | None = None
    profile: str = "smoke"
    trials: int | None = None
    seeds: int | None = None
    workers: int | str = "auto"  # local worker processes (resolve_workers)
    runs_dir: Path = RUNS_DIR
    data_dir: Path = Path("data")
    data_kind: str = "auto"
    make_data: bool = True
    device: str = "auto"
    threads: int | None = None
    precision: str = "fp32"  # AgentConfig.precision of every trial (fp32 or bf16)
    compile: bool | None = None  # AgentConfig.compile (speed only; None: by run length, tql.agent.compile_pays)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    grace_period: float = GRACE_PERIOD
    batch: int | str = "auto"  # trials trained together as one population (autotune.tuning.batched)
    agent: dict[str, Any] = field(default_factory=dict)  # AgentConfig overrides of every trial (--agent)
    log: tuple[str, ...] = ()  # loggers every seed's run and the study are mirrored into (autotune.tracking)
    wandb_project: str | None = None
    wandb_entity: str | None = None

    def __post_init__(self) -> None:
        self.log = usable_loggers(self.log)  # a missing extra: one line, before any study is touched
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}; valid: {', '.join(PROFILES)}")
        if self.spec.sharing and self.batch == "auto":
            self.batch = 1  # a batch's members share one temperature layout
        self.batch = trials_per_batch(self.batch, self.device)
        budget = self.spec.budget(self.profile)
        self.trials = self.trials if self.trials is not None else budget.trials
        self.seeds = self.seeds if self.seeds is not None else budget.seeds
        tasks_batches = len(self.tasks) * -(-self.trials // self.batch)
        self.workers = resolve_workers(self.workers, self.device, tasks_batches, self.threads)
        for name in ("trials", "seeds"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"--{name} {value!r} must be >= 1")
        if not self.study or ":" in self.study:
            raise ConfigError(f"study name {self.study!r} must be non-empty and contain no ':'")
        grid = self.spec.grid_points * max(1, len(self.spec.sharing))
        if self.spec.sampler == "grid" and self.trials > grid:
            raise ConfigError(f"--trials {self.trials} exceeds the grid's {grid} points "
                              "(sampler.grid_points in the study spec, times the sharings searched)")
        if self.spec.sharing and "temperature_sharing" in self.agent:
            raise ConfigError(f"temperature_sharing={self.agent['temperature_sharing']!r} for every trial, but the "
                              f"study spec searches {', '.join(self.spec.sharing)}; drop one of the two")
        if self.spec.sharing and self.batch > 1:
            raise ConfigError(f"--batch {self.batch}: the members of a batch share one temperature layout, and the "
                              f"study spec searches search.sharing; use --batch 1")
        if not 0 < self.heartbeat_interval < self.grace_period:
            raise ConfigError(f"heartbeat interval {self.heartbeat_interval!r} must be > 0 and below the grace "
                              f"period {self.grace_period!r}")

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def run_observers(self, task: TaskSpec, number: int, seed: int, rho: float) -> TrainHooks | None:
        """A trial's seed mirrored into ``log`` (None without loggers): grouped by study and
        task, named by trial and seed, the trial's number and rho among its hyperparameters."""
        labels = RunLabels(project=self.wandb_project, entity=self.wandb_entity, group=f"{self.study}/{task.name}",
                           job_type="trial", name=f"trial-{number:04d}/seed-{seed}", tags=(self.study, task.name),
                           config={"study": self.study, "trial": number, "seed": seed, "rho": rho})
        return tracking_hooks(self.log, labels)

    def train_config(self, task: TaskSpec, rho: float, seed: int, sharing: str | None = None) -> TrainConfig:
        """A seed's run; ``sharing``: the trial's temperature sharing (a study searching it)."""
        agent = {**self.agent, **({"temperature_sharing": sharing} if sharing else {})}
        return TrainConfig.from_profile(
            task.name, self.profile, {"precision": self.precision, "compile": self.compile, **agent}, rho=rho,
            seed=seed, data_dir=str(self.data_dir),
            data_kind=self.data_kind, device=self.device, threads=self.threads, **self.train_overrides)


BATCH_AUTO = {"cpu": 1, "cuda": 8}  # --batch auto: on a CPU a population is compute-bound, so no gain


def trials_per_batch(value: int | str, device: str) -> int:
    """``--batch``: a number of trials >= 1, or 'auto' (1 on a CPU, 8 on CUDA, from ``device``)."""
    if value == "auto":
        return BATCH_AUTO["cuda" if _on_cuda(device) else "cpu"]
    return _count("--batch", value)


def resolve_workers(value: int | str, device: str, jobs: int, threads: int | None = None,
                    option: str = "--workers") -> int:
    """``--workers`` of ``run`` and ``compare`` (``option``: the name a bad value is reported
    under, e.g. the learning sweeps' ``--jobs``): local processes, a number >= 1 or 'auto'.

    'auto' on a CPU: one process per core (``threads`` each, default one), at most one per job
    (``jobs``: a study's batches of trials, a comparison's runs). A CPU update on one thread uses
    its core better than one update spread over two, and the rest of a run (data loading,
    evaluation, Python) goes side by side too (measured: benchmarks/speed/README.md, "Whole
    studies, one worker per core"). On CUDA: 1 (one process feeds the GPU; runs share it as a
    population, ``--batch``).
    """
    if value == "auto":
        if _on_cuda(device):
            return 1
        from tql.data import available_cpus

        return max(1, min(available_cpus() // max(threads or 1, 1), jobs))
    return _count(option, value)


def _count(option: str, value: int | str) -> int:
    """An option's value that is not 'auto': an integer >= 1 (a bool or '2.5' is not one)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or str(count) != str(value).strip():
        raise ConfigError(f"{option} {value!r} is not one of: auto, an integer >= 1")
    return count


def _on_cuda(device: str) -> bool:
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def suggest_schedule(trial: optuna.Trial, spec: StudySpec, task: TaskSpec) -> Schedule:
    """The trial's H̄ schedule: one constant rho, rho at evenly spaced knots of progress, or
    (kind 'layers') a depth profile of constant first and last layer rho."""
    names = spec.param_names()
    values = [trial.suggest_float(name, spec.rho_low, spec.rho_high, log=spec.log) for name in names]
    meta = {"source": f"optuna trial {trial.number}", "task": task.name, "n_tokens": task.n_tokens}
    if spec.kind == "constant":
        return Schedule.constant(values[0], **meta)
    if spec.kind == "layers":
        return Schedule.profile(*values, **meta)
    knots = [(i / (len(values) - 1), v) for i, v in enumerate(values)]
    return Schedule.piecewise(knots, **meta)


def suggest_sharing(trial: optuna.Trial, spec: StudySpec) -> str | None:
    """The trial's temperature sharing where the study searches it (None: the agent's)."""
    return trial.suggest_categorical("temperature_sharing", list(spec.sharing)) if spec.sharing else None


# Objective -> the key of an evaluation record (tql.trainer.eval_record) and the trial attr
# holding its per-seed values.
OBJECTIVE_KEYS = {"success": "success_rate", "progress": "progress", "gained": "gained"}
OBJECTIVE_ATTRS = {"success": "successes", "progress": "progress", "gained": "gained"}


def objective_value(evals: list[dict], last_k: int, objective: str = "success") -> float:
    """Mean ``objective`` (success rate or progress) of the last ``last_k`` evaluations of one run."""
    if not evals:
        raise ConfigError("a run finished without an evaluation; check --eval-every")
    values = [e.get(OBJECTIVE_KEYS[objective]) for e in evals[-last_k:]]
    if None in values:
        raise ConfigError(f"objective {objective!r}: this run's evaluations do not record it (a run of an older "
                          "tql-tune, or a task outside OGBench's manipulation families); use --objective success")
    return float(statistics.fmean(values))


def reported_value(result: EvalResult, objective: str) -> float:
    """What one evaluation reports to the pruner: its success rate, mean progress or mean gained progress."""
    return {"success": result.success_rate, "progress": result.mean_progress, "gained": result.mean_gained}[objective]


def record_seed(attrs: dict[str, Any], evals: list[dict], last_k: int, objective: str, metrics: Path,
                collapse: dict | None = None) -> None:
    """Add a finished seed's success and progress to a trial's attrs (progress where its
    evaluations record it; the objective's value is required), whether H̄ acted on it:
    ``engaged_at``, the earliest step any seed's control engaged (None: never), and the collapse
    alarm: ``collapsed_at``, the earliest step any seed's attention fell below the alarm's
    threshold (``collapse``: the seed's ``tql.collapse.first_collapse``; absent: none did)."""
    objective_value(evals, last_k, objective)  # the objective must be there
    attrs["successes"].append(objective_value(evals, last_k, "success"))
    for graded in ("progress", "gained"):
        if all(e.get(graded) is not None for e in evals[-last_k:]):
            attrs.setdefault(graded, []).append(objective_value(evals, last_k, graded))
    engaged = first_engagement([r for r in read_jsonl(metrics) if r.get("type") == "train"])
    earlier = [step for step in (attrs.get("engaged_at"), engaged) if step is not None]
    attrs["engaged_at"] = min(earlier) if earlier else None
    if collapse is not None and (attrs.get("collapsed_at") is None or collapse["step"] < attrs["collapsed_at"]):
        attrs["collapsed_at"], attrs["collapse"] = collapse["step"], collapse


def trial_value(attrs: dict[str, Any], objective: str) -> float:
    """A complete trial's value: its objective's mean over seeds (and the stds of both)."""
    attrs["success_std"] = float(statistics.pstdev(attrs["successes"]))
    for graded in ("progress", "gained"):
        if attrs.get(graded):
            attrs[f"{graded}_std"] = float(statistics.pstdev(attrs[graded]))
    return float(statistics.fmean(attrs[OBJECTIVE_ATTRS[objective]]))


@dataclass
class TrialOutcome:
    """How a trial ended, its value (complete trials) and the user attrs it records."""

    state: TrialState
    value: float | None
    attrs: dict[str, Any]
    number: int | None = None  # the Optuna trial's number


def layer_attrs(schedule: Schedule) -> dict[str, float]:
    """A profile trial's first and last layer rho (its "rho" is their mean, as ``rho_at``)."""
    if not schedule.is_profile:
        return {}
    return {f"rho_{name}": curve.rho if curve.kind == "constant" else curve.mean_rho()
            for name, curve in zip(("first", "last"), schedule.curves())}


def set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Record ``attrs`` as the trial's user attrs."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def record_error(study: optuna.Study, trial: optuna.Trial, exc: Exception) -> None:
    """Fail the trial with the error as its reason (not retried), unless it already ended."""
    try:
        trial.set_user_attr("fail_kind", "error")
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        pass
