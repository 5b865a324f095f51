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
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tql.errors import ConfigError
from tql.io import atomic_write_json
from tql.train import TrainHooks

FORMAT = "tql-tune-schedule"
VERSION = 1
KINDS = ("constant", "piecewise", "cosine")
INTERPOLATIONS = ("linear", "step")


@dataclass(frozen=True)
class Schedule:
    kind: str
    rho: float | None = None
    knots: tuple[tuple[float, float], ...] = ()
    interpolation: str = "linear"
    start: float | None = None
    end: float | None = None
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

    # ----- evaluation -----------------------------------------------------------------------
    def rho_at(self, progress: float) -> float:
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

    def target_entropy(self, progress: float, n_tokens: int) -> float:
        return self.rho_at(progress) * math.log(n_tokens)

    def mean_rho(self, points: int = 1001) -> float:
        return sum(self.rho_at(i / (points - 1)) for i in range(points)) / points

    def describe(self) -> str:
        if self.kind == "constant":
            return f"constant rho={self.rho:.3f}"
        if self.kind == "cosine":
            return f"cosine rho {self.start:.3f} -> {self.end:.3f}"
        knots = ", ".join(f"{p:.2f}:{r:.3f}" for p, r in self.knots)
        return f"piecewise-{self.interpolation} [{knots}]"

    # ----- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": self.kind}
        if self.kind == "constant":
            data["rho"] = self.rho
        elif self.kind == "cosine":
            data.update(start=self.start, end=self.end)
        else:
            data.update(knots=[list(k) for k in self.knots], interpolation=self.interpolation)
        data["meta"] = dict(self.meta)
        return data

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


# ----- validation ------------------------------------------------------------------------------

_ALLOWED = {"constant": {"rho"}, "cosine": {"start", "end"}, "piecewise": {"knots", "interpolation"}}


def _parse(data: Any, where: str) -> Schedule:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ConfigError(f"{where}: format={data.get('format')!r}; expected {FORMAT!r}")
    if data.get("version") != VERSION:
        raise ConfigError(f"{where}: version={data.get('version')!r}; this tql-tune reads version {VERSION}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind={kind!r} is not one of: {', '.join(KINDS)}")
    extra = set(data) - {"format", "version", "kind", "meta"} - _ALLOWED[kind]
    if extra:
        raise ConfigError(f"{where}: unknown field {sorted(extra)[0]!r} for kind {kind!r}; "
                          f"valid: {', '.join(sorted(_ALLOWED[kind]))}, meta")
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: meta must be an object")
    if kind == "constant":
        schedule = Schedule(kind=kind, rho=_number(data, "rho", where), meta=meta)
    elif kind == "cosine":
        schedule = Schedule(kind=kind, start=_number(data, "start", where), end=_number(data, "end", where), meta=meta)
    else:
        schedule = Schedule(kind=kind, knots=_knots(data.get("knots"), where),
                            interpolation=data.get("interpolation", "linear"), meta=meta)
    return _validated(schedule, where)


def _number(data: dict, key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key}={value!r} must be a number")
    return float(value)


def _knots(raw: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ConfigError(f"{where}: knots must be a list of at least two [progress, rho] pairs")
    knots = []
    for i, pair in enumerate(raw):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pair)):
            raise ConfigError(f"{where}: knots[{i}]={pair!r} must be a [progress, rho] pair of numbers")
        knots.append((float(pair[0]), float(pair[1])))
    return tuple(knots)


def _validated(schedule: Schedule, where: str = "schedule") -> Schedule:
    def check_rho(name: str, value: float) -> None:
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ConfigError(f"{where}: {name}={value!r} is outside (0, 1] (rho = H̄ / log n)")

    if schedule.kind == "constant":
        check_rho("rho", schedule.rho)
    elif schedule.kind == "cosine":
        check_rho("start", schedule.start)
        check_rho("end", schedule.end)
    else:
        if schedule.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"{where}: interpolation={schedule.interpolation!r} is not one of: "
                              f"{', '.join(INTERPOLATIONS)}")
        knots = schedule.knots
        if len(knots) < 2:
            raise ConfigError(f"{where}: knots must be a list of at least two [progress, rho] pairs")
        if knots[0][0] != 0.0 or knots[-1][0] != 1.0:
            raise ConfigError(f"{where}: knots must start at progress 0 and end at 1 "
                              f"(got {knots[0][0]!r} ... {knots[-1][0]!r})")
        for i, (p, rho) in enumerate(knots):
            check_rho(f"knots[{i}][1]", rho)
            if i and p <= knots[i - 1][0]:
                raise ConfigError(f"{where}: knots[{i}][0]={p!r} must be greater than knots[{i - 1}][0]="
                                  f"{knots[i - 1][0]!r}")
    return schedule


# ----- driving a run ----------------------------------------------------------------------------

class ScheduleHooks(TrainHooks):
    """Gives the training loop H̄ = rho(progress) * log n from a fixed schedule."""

    def __init__(self, schedule: Schedule, n_tokens: int):
        self.schedule, self.log_n = schedule, math.log(n_tokens)

    def target_entropy(self, step: int, progress: float) -> float:
        return self.schedule.rho_at(progress) * self.log_n


class CombinedHooks(TrainHooks):
    """Several hooks as one: the first that gives a target wins; any may stop the run."""

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

    def state_dict(self) -> dict:
        return {str(i): hook.state_dict() for i, hook in enumerate(self.hooks)}

    def load_state_dict(self, state: dict) -> None:
        for i, hook in enumerate(self.hooks):
            hook.load_state_dict(state.get(str(i), {}))
