"""The experiment spec (``studies/experiment.toml``): tasks, seeds, approaches, per-run
settings, study sizes, and the reference machine the step budget is sized for.

Every table and key is checked: an unknown key or a bad value fails with one ``ConfigError``
line naming it and what is valid, before anything is measured, generated or trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.tuning.shipped import DEFAULT_EXPERIMENT, find_spec_file
from autotune.tuning.study_spec import pop_version, read_toml, tracking_loggers
from tql.errors import ConfigError
from tql.trainer import PROFILES

EXPERIMENT_VERSION = 1
APPROACHES = ("default", "published", "tuned", "layers", "population", "feedback", "transfer", "off", "fql")


@dataclass(frozen=True)
class Machine:
    """What a machine does per second: the inputs of the cost model (``autotune.experiment.cost``)."""

    name: str
    updates_per_second: float  # one training run
    member_updates_per_second: float  # per member of a batched population
    eval_env_steps_per_second: float  # per process
    eval_processes: int  # processes one evaluation spreads its episodes over (tql.eval_workers)
    data_transitions_per_second: float  # per process
    processes: int  # processes generating one domain's data (data make --workers)
    run_overhead_seconds: float  # per run or batch: envs, data, warm-up
    workers: int = 1  # runs (or batches) training side by side, each at updates_per_second (--workers)
    # Runs of >= compile_min_steps updates compile their loss (tql.agent.compile_pays; 0: none
    # does): from there on they train at the compiled rates and each pays compile_seconds once.
    compile_min_steps: int = 0
    compiled_updates_per_second: float = 0.0
    compiled_member_updates_per_second: float = 0.0
    compile_seconds: float = 0.0

    def at(self, steps: int) -> "Machine":
        """This machine as runs of ``steps`` updates see it: compiled from compile_min_steps."""
        if not self.compile_min_steps or steps < self.compile_min_steps:
            return self
        return dataclasses.replace(self, updates_per_second=self.compiled_updates_per_second,
                                   member_updates_per_second=self.compiled_member_updates_per_second,
                                   run_overhead_seconds=self.run_overhead_seconds + self.compile_seconds,
                                   compile_min_steps=0)

    def validate(self, where: str) -> None:
        for key in ("updates_per_second", "member_updates_per_second", "eval_env_steps_per_second",
                    "data_transitions_per_second"):
            _check_positive_number(where, key, getattr(self, key))
        _check_positive_int(where, "processes", self.processes)
        _check_positive_int(where, "eval_processes", self.eval_processes)
        _check_positive_int(where, "workers", self.workers)
        for key in ("run_overhead_seconds", "compile_seconds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}: {key}={value!r} must be a number >= 0")
        if self.compile_min_steps != 0:
            _check_positive_int(where, "compile_min_steps", self.compile_min_steps)
            for key in ("compiled_updates_per_second", "compiled_member_updates_per_second"):
                _check_positive_number(where, key, getattr(self, key))


@dataclass(frozen=True)
class ExperimentSpec:
    tasks: tuple[str, ...]
    seeds: int
    approaches: tuple[str, ...]
    profile: str
    tuned_spec: Path | None
    layers_spec: Path | None
    evaluations: int
    eval_episodes: int
    eval_max_steps: int
    min_steps: int
    step_quantum: int
    data_episodes: int
    data_episode_length: int
    study_seeds: int
    tuned_trials: int
    layers_trials: int
    minutes: float  # the budget the reference plan is sized for
    reference: Machine
    dry_run: dict[str, Any] = field(default_factory=dict)
    source: str = "dict"
    agent: dict[str, Any] = field(default_factory=dict)  # [agent]: AgentConfig overrides of every run and trial
    # [tracking]: loggers the studies' and the comparison's runs are mirrored into (the command's
    # --log, --wandb-project and --wandb-entity win over these)
    loggers: tuple[str, ...] = ()
    wandb_project: str | None = None
    wandb_entity: str | None = None

    def replace(self, **changes) -> "ExperimentSpec":
        spec = dataclasses.replace(self, **changes)
        spec.validate()
        return spec

    def for_dry_run(self) -> "ExperimentSpec":
        """The [dry_run] table's values in place of the others (a toy-sized run)."""
        return self.replace(**self.dry_run)

    def validate(self) -> None:
        where = f"experiment spec ({self.source})"
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise ConfigError(f"{where}: experiment.tasks={list(self.tasks)!r} must be a non-empty list of task names")
        for name in self.approaches:
            if name not in APPROACHES:
                raise ConfigError(f"{where}: approach {name!r} is not one of: {', '.join(APPROACHES)}")
        if not self.approaches or len(set(self.approaches)) != len(self.approaches):
            raise ConfigError(f"{where}: experiment.approaches={list(self.approaches)!r} must be distinct, >= 1")
        if self.profile not in PROFILES:
            raise ConfigError(f"{where}: profile={self.profile!r} is not one of: {', '.join(PROFILES)}")
        for key in ("seeds", "evaluations", "eval_episodes", "min_steps", "step_quantum", "data_episodes",
                    "study_seeds", "tuned_trials", "layers_trials"):
            _check_positive_int(where, key, getattr(self, key))
        if isinstance(self.eval_max_steps, bool) or not isinstance(self.eval_max_steps, int) or self.eval_max_steps < 0:
            raise ConfigError(f"{where}: eval_max_steps={self.eval_max_steps!r} must be an integer >= 0 "
                              "(0: the profile's episode limit)")
        if not isinstance(self.data_episode_length, int) or self.data_episode_length < 2:
            raise ConfigError(f"{where}: data_episode_length={self.data_episode_length!r} must be an integer >= 2")
        if self.min_steps < self.evaluations:
            raise ConfigError(f"{where}: min_steps={self.min_steps!r} must be >= evaluations={self.evaluations!r}")
        _check_positive_number(where, "minutes", self.minutes)
        self.reference.validate(f"{where} [reference]")
        for key in self.dry_run:
            if key not in _DRY_RUN_KEYS:
                raise ConfigError(f"{where}: unknown key dry_run.{key}; valid: {', '.join(_DRY_RUN_KEYS)}")

    def task_specs(self):
        from tql.tasks import get_task

        return [get_task(name) for name in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(tuned_spec=_text(self.tuned_spec), layers_spec=_text(self.layers_spec),
                    tasks=list(self.tasks), approaches=list(self.approaches))
        return data


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_positive_int(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {name}={value!r} must be an integer >= 1")


def _check_positive_number(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{where}: {name}={value!r} must be a number > 0")


# TOML table -> (key -> ExperimentSpec field). Unknown keys are errors: a typo must not pass.
_TABLES = {
    "experiment": {"tasks": "tasks", "seeds": "seeds", "approaches": "approaches", "profile": "profile",
                   "tuned_spec": "tuned_spec", "layers_spec": "layers_spec"},
    "run": {k: k for k in ("evaluations", "eval_episodes", "eval_max_steps", "min_steps", "step_quantum",
                           "data_episodes", "data_episode_length")},
    "studies": {"seeds": "study_seeds", "tuned_trials": "tuned_trials", "layers_trials": "layers_trials"},
    "tracking": {"log": "loggers", "wandb_project": "wandb_project", "wandb_entity": "wandb_entity"},
}
_MACHINE_KEYS = tuple(f.name for f in dataclasses.fields(Machine) if f.name != "name")
_REQUIRED_MACHINE_KEYS = tuple(f.name for f in dataclasses.fields(Machine)
                               if f.name != "name" and f.default is dataclasses.MISSING)
_DRY_RUN_KEYS = ("tasks", "seeds", "approaches", "profile", "minutes", "evaluations", "eval_episodes",
                 "eval_max_steps", "min_steps", "step_quantum", "data_episodes", "data_episode_length",
                 "study_seeds", "tuned_trials", "layers_trials")


def load_experiment(path: str | Path | None = None) -> ExperimentSpec:
    """The spec in ``path``: a TOML file or a built-in spec's name (default: the built-in
    ``experiment``); study spec names in it are files relative to its folder, else built-ins."""
    path = find_spec_file(DEFAULT_EXPERIMENT if path is None else path, "experiment spec")
    raw = read_toml(path, "experiment spec", f"the default is the built-in {DEFAULT_EXPERIMENT!r}")
    return experiment_from_dict(raw, source=str(path), folder=path.parent)


def experiment_from_dict(raw: dict, source: str = "dict", folder: Path = Path(".")) -> ExperimentSpec:
    where = f"experiment spec ({source})"
    raw = dict(raw)
    pop_version(raw, where, EXPERIMENT_VERSION)
    values: dict[str, Any] = {"source": source}
    for table, keys in _TABLES.items():
        for key, value in _table(where, raw, table).items():
            if key not in keys:
                raise ConfigError(f"{where}: unknown key {table}.{key}; valid: {', '.join(keys)}")
            values[keys[key]] = value
    reference = _table(where, raw, "reference")
    values["minutes"] = reference.pop("minutes", None)
    values["reference"] = _machine(where, reference)
    values["dry_run"] = _dry_run(_table(where, raw, "dry_run"))
    values["agent"] = _agent(where, _table(where, raw, "agent"))
    if raw:
        raise ConfigError(f"{where}: unknown table or key {sorted(raw)[0]!r}; "
                          f"valid: version, {', '.join(_TABLES)}, reference, dry_run, agent")
    missing = [f.name for f in dataclasses.fields(ExperimentSpec)
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    for key in ("tuned_spec", "layers_spec"):
        values[key] = find_spec_file(values[key], f"{where}: {key}", folder) if values.get(key) else None
    values["tasks"], values["approaches"] = tuple(values["tasks"]), tuple(values["approaches"])
    if "loggers" in values:
        values["loggers"] = tracking_loggers(where, values["loggers"])
    spec = ExperimentSpec(**values)
    spec.validate()
    return spec


def _table(where: str, raw: dict, name: str) -> dict:
    section = raw.pop(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {name} must be a table ([{name}])")
    return dict(section)


def _machine(where: str, section: dict) -> Machine:
    name = section.pop("machine", "reference machine")
    unknown = sorted(set(section) - set(_MACHINE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key reference.{unknown[0]}; valid: machine, minutes, "
                          f"{', '.join(_MACHINE_KEYS)}")
    missing = [k for k in _REQUIRED_MACHINE_KEYS if k not in section]
    if missing:
        raise ConfigError(f"{where}: [reference] misses {', '.join(missing)}")
    return Machine(name=name, **section)


def _agent(where: str, section: dict) -> dict[str, Any]:
    """[agent] keys as checked AgentConfig overrides (`tql-tune train --agent KEY=VALUE`'s)."""
    from autotune.agent_options import agent_overrides

    def text(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() \
            if isinstance(value, bool) else str(value)

    try:
        return agent_overrides("published", [f"{key}={text(value)}" for key, value in section.items()])
    except ConfigError as exc:
        raise ConfigError(f"{where}: [agent] {exc}") from None


def _dry_run(section: dict) -> dict[str, Any]:
    """[dry_run] keys as ExperimentSpec fields (its lists as tuples); checked by validate()."""
    values = {}
    for key, value in section.items():
        values[key] = tuple(value) if isinstance(value, list) else value
    return values
