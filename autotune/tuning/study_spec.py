"""Study specs: the search space over rho = H̄ / log n, budgets, sampler and pruner.

Specs are TOML files (``studies/*.toml``). The defaults below are the spec used when none is
given; ``studies/default.toml`` spells them out (a test keeps the two equal). Every bad value
fails with one ``ConfigError`` line naming the field, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tql.entropy import SHARINGS
from tql.errors import ConfigError
from tql.trainer import PROFILES

SPEC_VERSION = 1
SAMPLERS = ("tpe", "gp", "cmaes", "grid", "random")
SEARCH_KINDS = ("constant", "knots", "layers")
PRUNERS = ("median", "none")
# What a trial maximises: success (binary per episode), progress (the fraction of the task's
# subtasks achieved at the episode's end, tql.evaluation) or gained (progress counted from the
# episode's start state: only subtasks the policy changed to done; a do-nothing policy gains 0).
OBJECTIVES = ("success", "progress", "gained")


@dataclass(frozen=True)
class Budget:
    trials: int
    seeds: int


DEFAULT_BUDGETS = {"smoke": Budget(2, 1), "cpu": Budget(8, 2), "paper": Budget(12, 3)}


@dataclass(frozen=True)
class StudySpec:
    rho_low: float = 0.1
    rho_high: float = 1.0
    log: bool = False
    # constant: one rho per trial; knots: a piecewise-linear rho(p); layers: rho_first and
    # rho_last, the first and last attention layer's rho (linear between), constant over p
    kind: str = "constant"
    knots: int = 3  # kind 'knots': rho at progress 0, 1/(knots-1), ..., 1 are the parameters
    # Temperature sharings searched beside rho (a categorical parameter 'temperature_sharing');
    # empty: every trial keeps the agent's (AgentConfig.temperature_sharing, or --temperature-sharing)
    sharing: tuple[str, ...] = ()
    last_k: int = 1
    objective: str = "success"
    sampler: str = "tpe"
    grid_points: int = 5
    pruner: str = "median"
    startup_trials: int = 3
    warmup_evals: int = 1
    budgets: dict[str, Budget] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    source: str = "built-in default"
    # [tracking]: loggers every trial's runs and the study are mirrored into (autotune.tracking;
    # the command's --log, --wandb-project and --wandb-entity win over these)
    loggers: tuple[str, ...] = ()
    wandb_project: str | None = None
    wandb_entity: str | None = None

    def budget(self, profile: str) -> Budget:
        if profile not in self.budgets:
            raise ConfigError(f"study spec ({self.source}) has no [budget.{profile}]; "
                              f"it has: {', '.join(self.budgets)}")
        return self.budgets[profile]

    def search_space(self) -> dict[str, Any]:
        """What the stored study must agree with for a resumed run to continue it."""
        space = {"rho_low": self.rho_low, "rho_high": self.rho_high, "log": self.log}
        if self.kind == "knots":
            space.update(kind=self.kind, knots=self.knots)
        elif self.kind == "layers":
            space.update(kind=self.kind)
        if self.sharing:
            space.update(sharing=list(self.sharing))
        return space

    def param_names(self) -> list[str]:
        """The Optuna parameters of a trial, each a rho in [rho_low, rho_high]."""
        if self.kind == "layers":
            return ["rho_first", "rho_last"]
        return ["rho"] if self.kind == "constant" else [f"rho_{i}" for i in range(self.knots)]

    def grid(self) -> list[float]:
        if self.grid_points == 1:
            return [self.rho_low]
        step = (self.rho_high - self.rho_low) / (self.grid_points - 1)
        return [round(self.rho_low + i * step, 10) for i in range(self.grid_points)]

    def replace(self, **changes) -> "StudySpec":
        spec = dataclasses.replace(self, **changes)
        spec.validate()
        return spec

    def validate(self) -> None:
        where = f"study spec ({self.source})"
        if not 0.0 < self.rho_low < self.rho_high <= 1.0:
            raise ConfigError(f"{where}: search.rho_low={self.rho_low!r}, search.rho_high={self.rho_high!r}; "
                              "need 0 < rho_low < rho_high <= 1 (H̄ = rho * log n)")
        _check_choice(where, "search.kind", self.kind, SEARCH_KINDS)
        if not isinstance(self.knots, int) or isinstance(self.knots, bool) or self.knots < 2:
            raise ConfigError(f"{where}: search.knots={self.knots!r} must be an integer >= 2")
        if self.kind != "constant" and self.sampler == "grid":
            raise ConfigError(f"{where}: sampler.name='grid' searches one constant rho; use search.kind='constant'")
        self._check_sharing(where)
        _check_choice(where, "sampler.name", self.sampler, SAMPLERS)
        _check_choice(where, "pruner.name", self.pruner, PRUNERS)
        _check_choice(where, "objective.name", self.objective, OBJECTIVES)
        for name, value in (("objective.last_k", self.last_k), ("sampler.grid_points", self.grid_points),
                            ("pruner.warmup_evals", self.warmup_evals)):
            _check_positive_int(where, name, value)
        if not isinstance(self.startup_trials, int) or self.startup_trials < 0:
            raise ConfigError(f"{where}: pruner.startup_trials={self.startup_trials!r} must be an integer >= 0")
        for profile, budget in self.budgets.items():
            _check_choice(where, "budget", profile, tuple(PROFILES))
            _check_positive_int(where, f"budget.{profile}.trials", budget.trials)
            _check_positive_int(where, f"budget.{profile}.seeds", budget.seeds)

    def _check_sharing(self, where: str) -> None:
        if isinstance(self.sharing, str) or not all(isinstance(v, str) for v in self.sharing):
            raise ConfigError(f"{where}: search.sharing={self.sharing!r} must be a list of: {', '.join(SHARINGS)}")
        for value in self.sharing:
            _check_choice(where, "search.sharing", value, SHARINGS)
        if len(self.sharing) == 1 or len(set(self.sharing)) != len(self.sharing):
            raise ConfigError(f"{where}: search.sharing={list(self.sharing)!r} must list >= 2 different sharings "
                              "(one for every trial: --temperature-sharing)")


def tracking_loggers(where: str, value: Any) -> tuple[str, ...]:
    """A spec's ``tracking.log``: a list of loggers (``autotune.tracking.LOGGERS``)."""
    from autotune.tracking import LOGGERS, check_loggers

    if isinstance(value, str) or not isinstance(value, list):
        raise ConfigError(f"{where}: tracking.log={value!r} must be a list of: {', '.join(LOGGERS)}")
    try:
        return check_loggers(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: tracking.{exc}".replace("tracking.--log", "tracking.log")) from None


def _check_choice(where: str, name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{where}: {name}={value!r} is not one of: {', '.join(valid)}")


def _check_positive_int(where: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {name}={value!r} must be an integer >= 1")


# TOML table -> (key -> StudySpec field). Unknown keys are errors: a typo must not pass silently.
_FIELDS = {
    "search": {"rho_low": "rho_low", "rho_high": "rho_high", "log": "log", "kind": "kind",
               "knots": "knots", "sharing": "sharing"},
    "objective": {"name": "objective", "last_k": "last_k"},
    "sampler": {"name": "sampler", "grid_points": "grid_points"},
    "pruner": {"name": "pruner", "startup_trials": "startup_trials", "warmup_evals": "warmup_evals"},
    "tracking": {"log": "loggers", "wandb_project": "wandb_project", "wandb_entity": "wandb_entity"},
}


def load_spec(path: str | Path | None) -> StudySpec:
    """The spec in ``path`` (a TOML file, or a built-in spec's name such as ``gained``), or the
    built-in default when ``path`` is None."""
    if path is None:
        spec = StudySpec()
        spec.validate()
        return spec
    from autotune.tuning.shipped import find_spec_file

    path = find_spec_file(path, "study spec")
    raw = read_toml(path, "study spec", "see the built-in specs for examples")
    return spec_from_dict(raw, source=str(path))


def read_toml(path: Path, what: str, missing_hint: str) -> dict:
    """A spec file's tables; one ConfigError line when it is missing or not TOML."""
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found ({missing_hint})")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: not valid TOML ({exc})") from exc


def pop_version(raw: dict, where: str, version: int) -> None:
    """Remove ``raw``'s version; a spec of another version fails in one line."""
    found = raw.pop("version", version)
    if found != version:
        raise ConfigError(f"{where}: version={found!r}; this tql-tune reads version {version}")


def spec_from_dict(raw: dict, source: str = "dict") -> StudySpec:
    where = f"study spec ({source})"
    raw = dict(raw)
    pop_version(raw, where, SPEC_VERSION)
    values: dict[str, Any] = {"source": source}
    for table, keys in _FIELDS.items():
        section = raw.pop(table, {})
        for key, value in section.items():
            if key not in keys:
                raise ConfigError(f"{where}: unknown key {table}.{key}; valid: {', '.join(keys)}")
            values[keys[key]] = value
    values["budgets"] = _budgets(where, raw.pop("budget", {}))
    if raw:
        raise ConfigError(f"{where}: unknown table or key {sorted(raw)[0]!r}; "
                          f"valid: version, {', '.join(_FIELDS)}, budget")
    if isinstance(values.get("sharing"), list):
        values["sharing"] = tuple(values["sharing"])
    if "loggers" in values:
        values["loggers"] = tracking_loggers(where, values["loggers"])
    spec = StudySpec(**values)
    spec.validate()
    return spec


def _budgets(where: str, raw: dict) -> dict[str, Budget]:
    budgets = dict(DEFAULT_BUDGETS)
    for profile, section in raw.items():
        _check_choice(where, "budget", profile, tuple(PROFILES))
        unknown = set(section) - {"trials", "seeds"}
        if unknown:
            raise ConfigError(f"{where}: unknown key budget.{profile}.{sorted(unknown)[0]}; valid: trials, seeds")
        default = DEFAULT_BUDGETS.get(profile, Budget(1, 1))
        budgets[profile] = Budget(section.get("trials", default.trials), section.get("seeds", default.seeds))
    return budgets
