"""What every controller shares: bounds on rho, H̄ from rho, and the record of what it did."""

from __future__ import annotations

import math
from dataclasses import asdict, fields

from autotune.schedules import Schedule
from tql.errors import ConfigError
from tql.trainer import TrainHooks


class Controller(TrainHooks):
    """Holds the current rho within [rho_min, rho_max] and records each change.

    ``history`` is a list of (progress, rho): the rho in force from that progress on. It is
    part of the checkpointed state, so a resumed run continues (and records) the same path."""

    name = "controller"

    def __init__(self, n_tokens: int, rho_init: float, rho_min: float = 0.1, rho_max: float = 1.0):
        if not 0.0 < rho_min <= rho_init <= rho_max <= 1.0:
            raise ConfigError(f"{self.name} controller: need 0 < rho_min <= rho_init <= rho_max <= 1, got "
                              f"rho_min={rho_min!r}, rho_init={rho_init!r}, rho_max={rho_max!r}")
        self.log_n, self.n_tokens = math.log(n_tokens), n_tokens
        self.rho, self.rho_min, self.rho_max = float(rho_init), float(rho_min), float(rho_max)
        self.history: list[tuple[float, float]] = [(0.0, self.rho)]
        self.progress = 0.0

    def target_entropy(self, step: int, progress: float) -> float:
        self.progress = progress
        return self.rho * self.log_n

    def set_rho(self, rho: float) -> float:
        """Move to ``rho`` clipped to the bounds; recorded from the current progress on."""
        rho = min(max(float(rho), self.rho_min), self.rho_max)
        if rho != self.rho:
            self.rho = rho
            if self.history and self.history[-1][0] == self.progress:
                self.history[-1] = (self.progress, rho)
            else:
                self.history.append((self.progress, rho))
        return self.rho

    def followed_schedule(self, **meta) -> Schedule:
        """The schedule this controller followed, as a step-interpolated piecewise schedule."""
        return schedule_from_history(self.history, source=f"{self.name} controller", n_tokens=self.n_tokens, **meta)

    def state_dict(self) -> dict:
        return {"rho": self.rho, "history": [list(k) for k in self.history], "progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.rho, self.progress = state["rho"], state["progress"]
            self.history = [tuple(k) for k in state["history"]]


def schedule_from_history(history: list[tuple[float, float]], **meta) -> Schedule:
    """A step-interpolated schedule from (progress, rho in force from then on) pairs."""
    knots = [tuple(k) for k in history if k[0] < 1.0]
    if len(knots) == 1 and knots[0][0] == 0.0:
        knots.append((1.0, knots[0][1]))
    elif knots[-1][0] < 1.0:
        knots.append((1.0, knots[-1][1]))
    return Schedule.piecewise(knots, interpolation="step", **meta)


def profile_from_history(history: list[tuple[float, float, float]], **meta) -> Schedule:
    """A depth profile of two step curves from (progress, rho_first, rho_last) triples."""
    first = schedule_from_history([(k[0], k[1]) for k in history])
    last = schedule_from_history([(k[0], k[2]) for k in history])
    return Schedule.profile(first, last, **meta)


def rule_meta(rule, added: tuple[str, ...]) -> dict:
    """A rule's fields for a schedule's meta; the ``added`` options (those that came with
    depth profiles) only when set, so runs without them write the files they always did."""
    defaults = {f.name: f.default for f in fields(rule)}
    return {k: v for k, v in asdict(rule).items() if k not in added or v != defaults[k]}


def followed_schedule_of(hooks, result, **meta) -> Schedule | None:
    """The schedule a controller run followed (a population run: its result's best member),
    or None when ``hooks`` is not a controller."""
    if not hasattr(hooks, "followed_schedule"):
        return None
    if result.members > 1:
        meta["member"] = result.extra["best_member"]
    return hooks.followed_schedule(**meta)
