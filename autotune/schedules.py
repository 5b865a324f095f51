"""H̄ schedules: rho(p) over training progress p in [0, 1], with H̄ = rho * log n.

Expressing the target as a fraction rho of the maximum entropy log n (n = 1 + obs + act
tokens) is what lets one schedule move between environments with different token counts.

File format (JSON, versioned)::

    {"format": "tql-tune-schedule", "version": 1, "kind": "piecewise",
     "knots": [[0.0, 0.8], [0.5, 0.6], [1.0, 0.5]], "interpolation": "linear",
     "meta": {"source": "...", "task": "...", "n_tokens": 43}}

kinds: ``constant`` (``rho``), ``piecewise`` (``knots`` [[p, rho], ...], p from 0 to 1
strictly increasing; ``interpolation`` ``linear`` or ``step``: hold each knot's rho until the
next, which is how controllers record what they did), ``cosine`` (``start`` -> ``end``:
rho(p) = end + (start - end) (1 + cos(pi p)) / 2). ``meta`` is free-form provenance.
These one-curve schedules give every layer of the critic the same rho.

Version 2 adds kind ``profile``: a depth profile, rho per attention layer. ``first`` and
``last`` are one-curve objects as above (``kind`` and its fields, no format, version or meta)
giving rho of the first and of the last layer over progress; the layers in between are
linear between the two (``tql.targets.layer_profile``), and a depth-1 critic follows
``first``. So one file fits critics of any depth and tasks of any n::

    {"format": "tql-tune-schedule", "version": 2, "kind": "profile",
     "first": {"kind": "constant", "rho": 0.8},
     "last": {"kind": "piecewise", "knots": [[0.0, 0.7], [1.0, 0.6]], "interpolation": "linear"},
     "meta": {}}

Both token groups of a layer share its rho. Files are written with the lowest version that
holds them (one-curve schedules stay version 1, readable by older tql-tune); version 2
readers accept every version 1 file unchanged.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tql.errors import ConfigError
from tql.io import atomic_write_json
from tql.targets import in_range
from tql.targets import layer_profile
from tql.trainer import TrainHooks

FORMAT = "tql-tune-schedule"
VERSION = 2  # the newest version this tql-tune reads; see VERSIONS
VERSIONS = (1, 2)
CURVE_KINDS = ("constant", "piecewise", "cosine")  # one rho(p), version 1 and later
KINDS = CURVE_KINDS + ("profile",)  # version 2
INTERPOLATIONS = ("linear", "step")


@dataclass(frozen=True)
class Schedule:
    """One rho(p) curve (kinds constant, piecewise, cosine), or a depth profile (kind
    ``profile``: the curves ``first`` and ``last`` of the first and last layer)."""

    kind: str
    rho: float | None = None
    knots: tuple[tuple[float, float], ...] = ()
    interpolation: str = "linear"
    start: float | None = None
    end: float | None = None
    first: Schedule | None = None
    last: Schedule | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def constant(cls, rho: float, **meta) -> "Schedule":
        return _validated(cls(kind="constant", rho=rho, meta=meta))

    @classmethod
    def piecewise(cls, knots, interpolation: str = "linear", **meta) -> "Schedule":
        return _validated(cls(kind="piecewise", knots=tuple((float(p), float(r)) for p, r in knots),
                              interpolation=interpolation, meta=meta))

    @classmethod
    def cosine(cls, start: float, end: float, **meta) -> "Schedule":
        return _validated(cls(kind="cosine", start=start, end=end, meta=meta))

    @classmethod
    def profile(cls, first: "Schedule | float", last: "Schedule | float", **meta) -> "Schedule":
        """rho per layer: ``first`` for layer 0, ``last`` for the last, linear in between. Each
        is a one-curve schedule (its meta is dropped: provenance belongs to the profile) or a
        number, meaning a constant."""
        return _validated(cls(kind="profile", first=_as_curve(first, "first"), last=_as_curve(last, "last"),
                              meta=meta))

    # ----- evaluation -----------------------------------------------------------------------
    @property
    def is_profile(self) -> bool:
        return self.kind == "profile"

    def curves(self) -> tuple["Schedule", "Schedule"]:
        """The first and the last layer's curves (a one-curve schedule: itself, twice)."""
        return (self.first, self.last) if self.is_profile else (self, self)

    def rho_at(self, progress: float) -> float:
        """rho at ``progress``. A profile's is the mean of its first and last layer's rho,
        which is the mean over the layers of a critic of any depth >= 2: the one-number
        summary that studies record and plots show (``layer_rhos`` gives each layer's)."""
        if self.is_profile:
            return (self.first.rho_at(progress) + self.last.rho_at(progress)) / 2.0
        p = min(max(float(progress), 0.0), 1.0)
        if self.kind == "constant":
            return float(self.rho)
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * (1.0 + math.cos(math.pi * p)) / 2.0
        ps = [k[0] for k in self.knots]
        i = bisect.bisect_right(ps, p) - 1
        if i >= len(ps) - 1:
            return self.knots[-1][1]
        (p0, r0), (p1, r1) = self.knots[i], self.knots[i + 1]
        if self.interpolation == "step":
            return r0
        return r0 + (r1 - r0) * (p - p0) / (p1 - p0)

    def layer_rhos(self, progress: float, depth: int) -> list[float]:
        """rho of each of ``depth`` layers at ``progress`` (every layer the same for one curve)."""
        if not self.is_profile:
            return [self.rho_at(progress)] * depth
        return layer_profile(self.first.rho_at(progress), self.last.rho_at(progress), depth)

    def rho_table(self, progress: float, depth: int) -> list[list[float]]:
        """rho per (layer, token group) ``[depth][2]``: both groups share their layer's value."""
        return [[rho, rho] for rho in self.layer_rhos(progress, depth)]

    def target_table(self, progress: float, depth: int, n_tokens: int) -> list[list[float]]:
        """H̄ in nats per (layer, group) ``[depth][2]``: what ``TrainHooks.target_entropy`` gives."""
        log_n = math.log(n_tokens)
        return [[rho * log_n, rho * log_n] for rho in self.layer_rhos(progress, depth)]

    def target_entropy(self, progress: float, n_tokens: int) -> float:
        """H̄ = rho_at(progress) * log n (a profile: the mean over the layers of a depth >= 2 critic)."""
        return self.rho_at(progress) * math.log(n_tokens)

    def mean_rho(self, points: int = 1001) -> float:
        """Mean rho over progress (a profile: also over layers, as in ``rho_at``)."""
        return sum(self.rho_at(i / (points - 1)) for i in range(points)) / points

    def describe(self) -> str:
        if self.is_profile:
            return f"profile: first layer {self.first.describe()}, last layer {self.last.describe()}"
        if self.kind == "constant":
            return f"constant rho={self.rho:.3f}"
        if self.kind == "cosine":
            return f"cosine rho {self.start:.3f} -> {self.end:.3f}"
        knots = ", ".join(f"{p:.2f}:{r:.3f}" for p, r in self.knots)
        return f"piecewise-{self.interpolation} [{knots}]"

    # ----- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The file's content: version 1 for one curve (as tql-tune wrote before profiles), 2
        for a profile."""
        if self.is_profile:
            data = {"format": FORMAT, "version": 2, "kind": "profile", "first": self.first._curve_dict(),
                    "last": self.last._curve_dict()}
        else:
            data = {"format": FORMAT, "version": 1, **self._curve_dict()}
        data["meta"] = dict(self.meta)
        return data

    def _curve_dict(self) -> dict[str, Any]:
        if self.kind == "constant":
            return {"kind": self.kind, "rho": self.rho}
        if self.kind == "cosine":
            return {"kind": self.kind, "start": self.start, "end": self.end}
        return {"kind": self.kind, "knots": [list(k) for k in self.knots], "interpolation": self.interpolation}

    def save(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "schedule") -> "Schedule":
        return _parse(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        path = Path(path)
        where = f"schedule file {str(path)!r}"
        if not path.is_file():
            raise ConfigError(f"{where} not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
        return _parse(data, where)


def _as_curve(value: "Schedule | float", name: str) -> Schedule:
    if isinstance(value, Schedule):
        if value.is_profile:
            raise ConfigError(f"profile {name}: a profile's curves are one-curve schedules "
                              f"({', '.join(CURVE_KINDS)}), not another profile")
        return dataclasses.replace(value, meta={})
    return Schedule(kind="constant", rho=value)


# ----- validation ------------------------------------------------------------------------------

_ALLOWED = {"constant": {"rho"}, "cosine": {"start", "end"}, "piecewise": {"knots", "interpolation"},
            "profile": {"first", "last"}}
_ENVELOPE = {"format", "version", "kind", "meta"}


def _parse(data: Any, where: str) -> Schedule:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ConfigError(f"{where}: format={data.get('format')!r}; expected {FORMAT!r}")
    version = data.get("version")
    if isinstance(version, bool) or version not in VERSIONS:
        raise ConfigError(f"{where}: version={version!r}; this tql-tune reads versions "
                          f"{', '.join(map(str, VERSIONS))}")
    kinds = KINDS if version >= 2 else CURVE_KINDS
    kind = data.get("kind")
    if kind not in kinds:
        hint = " (kind 'profile' needs version 2)" if kind == "profile" else ""
        raise ConfigError(f"{where}: kind={kind!r} is not one of: {', '.join(kinds)}{hint}")
    _check_fields(data, kind, where, "", _ENVELOPE)
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: meta must be an object")
    if kind != "profile":
        return dataclasses.replace(_parse_curve(data, where, ""), meta=meta)
    first, last = (_parse_curve(_curve_object(data, name, where), where, f"{name}.") for name in ("first", "last"))
    return Schedule(kind="profile", first=first, last=last, meta=meta)


def _curve_object(data: dict, name: str, where: str) -> dict:
    """A profile's ``first`` or ``last``: a one-curve object with its kind and fields only."""
    raw = data.get(name)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {name}={raw!r} must be a curve object such as "
                          '{"kind": "constant", "rho": 0.8}')
    if raw.get("kind") not in CURVE_KINDS:
        raise ConfigError(f"{where}: {name}.kind={raw.get('kind')!r} is not one of: {', '.join(CURVE_KINDS)}")
    _check_fields(raw, raw["kind"], where, f"{name}.", {"kind"})
    return raw


def _check_fields(data: dict, kind: str, where: str, prefix: str, envelope: set[str]) -> None:
    extra = set(data) - envelope - _ALLOWED[kind]
    if extra:
        valid = sorted(_ALLOWED[kind]) + (["meta"] if "meta" in envelope else [])
        raise ConfigError(f"{where}: unknown field {prefix + sorted(extra)[0]!r} for kind {kind!r}; "
                          f"valid: {', '.join(valid)}")


def _parse_curve(data: dict, where: str, prefix: str) -> Schedule:
    """One curve's fields (``prefix`` names where it sits: '' at the top, 'first.' in a profile)."""
    kind = data["kind"]
    if kind == "constant":
        schedule = Schedule(kind=kind, rho=_number(data, "rho", where, prefix))
    elif kind == "cosine":
        schedule = Schedule(kind=kind, start=_number(data, "start", where, prefix),
                            end=_number(data, "end", where, prefix))
    else:
        schedule = Schedule(kind=kind, knots=_knots(data.get("knots"), where, prefix),
                            interpolation=data.get("interpolation", "linear"))
    return _validated(schedule, where, prefix)


def _number(data: dict, key: str, where: str, prefix: str = "") -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {prefix}{key}={value!r} must be a number")
    return float(value)


def _knots(raw: Any, where: str, prefix: str = "") -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigError(f"{where}: {prefix}knots must be a list of at least two [progress, rho] pairs")
    knots = []
    for i, pair in enumerate(raw):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair)):
            raise ConfigError(f"{where}: {prefix}knots[{i}]={pair!r} must be a [progress, rho] pair of numbers")
        knots.append((float(pair[0]), float(pair[1])))
    return tuple(knots)


def _validated(schedule: Schedule, where: str = "schedule", prefix: str = "") -> Schedule:
    def check_rho(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {prefix}{name}={value!r} must be a number")
        if not in_range(value):
            raise ConfigError(f"{where}: {prefix}{name}={value!r} is outside (0, 1] (rho = H̄ / log n)")

    if schedule.kind == "profile":
        _validated(schedule.first, where, "first.")
        _validated(schedule.last, where, "last.")
    elif schedule.kind == "constant":
        check_rho("rho", schedule.rho)
    elif schedule.kind == "cosine":
        check_rho("start", schedule.start)
        check_rho("end", schedule.end)
    elif schedule.kind == "piecewise":
        _check_knots(schedule, where, prefix, check_rho)
    else:
        raise ConfigError(f"{where}: {prefix}kind={schedule.kind!r} is not one of: {', '.join(KINDS)}")
    return schedule


def _check_knots(schedule: Schedule, where: str, prefix: str, check_rho) -> None:
    if schedule.interpolation not in INTERPOLATIONS:
        raise ConfigError(f"{where}: {prefix}interpolation={schedule.interpolation!r} is not one of: "
                          f"{', '.join(INTERPOLATIONS)}")
    knots = schedule.knots
    if len(knots) < 2:
        raise ConfigError(f"{where}: {prefix}knots must be a list of at least two [progress, rho] pairs")
    if knots[0][0] != 0.0 or knots[-1][0] != 1.0:
        raise ConfigError(f"{where}: {prefix}knots must start at progress 0 and end at 1 "
                          f"(got {knots[0][0]!r} ... {knots[-1][0]!r})")
    for i, (p, rho) in enumerate(knots):
        check_rho(f"knots[{i}][1]", rho)
        if i and p <= knots[i - 1][0]:
            raise ConfigError(f"{where}: {prefix}knots[{i}][0]={p!r} must be greater than "
                              f"{prefix}knots[{i - 1}][0]={knots[i - 1][0]!r}")


# ----- driving a run ----------------------------------------------------------------------------

class ScheduleHooks(TrainHooks):
    """Gives the training loop H̄ = rho(progress) * log n per (layer, group) from a fixed
    schedule. A profile's layers differ, so the hook needs the critic's depth: hooks are
    built before the trainer, hence passed in (``for_config`` reads it from the config)."""

    def __init__(self, schedule: Schedule, n_tokens: int, depth: int):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ConfigError(f"schedule hooks: depth={depth!r} must be the critic's attention layers (an integer "
                              ">= 0, tql.agent.critic_depth)")
        self.schedule, self.n_tokens, self.depth = schedule, n_tokens, depth

    @classmethod
    def for_config(cls, schedule: Schedule, config) -> "ScheduleHooks":
        """Hooks for a ``tql.trainer.TrainConfig``: its task's n and its critic's depth."""
        from tql.agent import critic_depth

        return cls(schedule, config.spec.n_tokens, critic_depth(config.agent))

    def target_entropy(self, step: int, progress: float) -> list[list[float]]:
        return self.schedule.target_table(progress, self.depth, self.n_tokens)


class CombinedHooks(TrainHooks):
    """Several hooks as one: the first that gives a target wins; any may stop the run; every
    hook hears every log, record and the run's start and end."""

    def __init__(self, *hooks: TrainHooks):
        self.hooks = [h for h in hooks if h is not None]

    def target_entropy(self, step: int, progress: float) -> float | None:
        for hook in self.hooks:
            target = hook.target_entropy(step, progress)
            if target is not None:
                return target
        return None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.on_log(step, metrics)

    def on_eval(self, step: int, result) -> bool:
        return any([hook.on_eval(step, result) for hook in self.hooks])  # a list: every hook sees it

    def on_start(self, run: dict) -> None:
        for hook in self.hooks:
            hook.on_start(run)

    def on_record(self, record: dict) -> None:
        for hook in self.hooks:
            hook.on_record(record)

    def on_close(self, summary: dict | None) -> None:
        for hook in self.hooks:
            hook.on_close(summary)

    def state_dict(self) -> dict:
        return {str(i): hook.state_dict() for i, hook in enumerate(self.hooks)}

    def load_state_dict(self, state: dict) -> None:
        for i, hook in enumerate(self.hooks):
            hook.load_state_dict(state.get(str(i), {}))


class ObservedHooks(TrainHooks):
    """A run's hooks with observers beside them (loggers: ``autotune.tracking``). The hooks
    drive the run (targets, stopping, population copies) and alone own the checkpointed
    state, so a run resumes the same with or without observers; the observers hear
    everything the run says."""

    def __init__(self, hooks: TrainHooks | None, observers: TrainHooks):
        self.inner, self.observers = hooks or TrainHooks(), observers

    def target_entropy(self, step: int, progress: float):
        return self.inner.target_entropy(step, progress)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.inner.on_log(step, metrics)
        self.observers.on_log(step, metrics)

    def on_eval(self, step: int, result) -> bool:
        self.observers.on_eval(step, result)
        return self.inner.on_eval(step, result)

    def on_population(self, step: int, fitness: list[float]) -> list[tuple[int, int]]:
        return self.inner.on_population(step, fitness)

    def on_start(self, run: dict) -> None:
        self.inner.on_start(run)
        self.observers.on_start(run)

    def on_record(self, record: dict) -> None:
        self.inner.on_record(record)
        self.observers.on_record(record)

    def on_close(self, summary: dict | None) -> None:
        self.inner.on_close(summary)
        self.observers.on_close(summary)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def observed(hooks: TrainHooks | None, observers: TrainHooks | None) -> TrainHooks | None:
    """``hooks`` with ``observers`` beside them (``ObservedHooks``), or ``hooks`` alone."""
    return hooks if observers is None else ObservedHooks(hooks, observers)
