"""Feedback controller: one run, no population; moves rho from the critic's generalisation gap.

Rule (documented in the README; every constant is a field of ``FeedbackRule``):

- signal: g = val_td / train_td, the TD error on a held-out batch of the ``-val`` dataset
  over the TD error on the training batch, smoothed by an exponential moving average
  (weight ``smoothing`` on the newest value). Both are logged every ``log_every`` steps.
- every ``interval`` steps: if g > ``upper`` the critic fits the training data better than
  held-out data, so rho rises by ``step`` (more attention entropy acts as a regulariser: it
  keeps attention spread over tokens and Q smoother); if g < ``lower`` it generalises well, so
  rho falls by ``step`` (sharper attention, more capacity); otherwise rho stays.
- rho always stays in [rho_min, rho_max]; H̄ = rho * log n.
- ``profile_offset`` (default 0: every layer at rho): a fixed depth profile moved as a whole.
  rho is then the first layer's, the last layer's is rho + profile_offset, the layers between
  linear; rho's bounds narrow so that both stay in [rho_min, rho_max], and the followed
  schedule is a profile (version 2 file). Published targets fall with depth (docs/published.md:
  rho_last - rho_first about -0.13), a shape this one-signal rule cannot learn but can keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.controllers.base import Controller, rule_meta
from autotune.schedules import Schedule
from tql.errors import ConfigError
from tql.targets import layer_profile

EPS = 1e-8


@dataclass(frozen=True)
class FeedbackRule:
    interval: int = 500
    smoothing: float = 0.3
    upper: float = 1.5
    lower: float = 1.1
    step: float = 0.05
    rho_init: float = 0.6
    rho_min: float = 0.2
    rho_max: float = 1.0
    profile_offset: float = 0.0  # rho of the last layer minus rho of the first (0: one rho for all)

    def validate(self) -> None:
        if self.interval < 1:
            raise ConfigError(f"feedback rule: interval={self.interval!r} must be >= 1")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError(f"feedback rule: smoothing={self.smoothing!r} must be in (0, 1]")
        if not 0.0 < self.lower < self.upper:
            raise ConfigError(f"feedback rule: need 0 < lower < upper, got lower={self.lower!r}, upper={self.upper!r}")
        if not 0.0 < self.step <= 0.5:
            raise ConfigError(f"feedback rule: step={self.step!r} must be in (0, 0.5]")
        last = self.rho_init + self.profile_offset
        if self.profile_offset and not (math.isfinite(last) and self.rho_min <= last <= self.rho_max):
            raise ConfigError(f"feedback rule: profile_offset={self.profile_offset!r} puts the last layer's first "
                              f"rho (rho_init + profile_offset = {last:.3g}) outside [rho_min, rho_max] = "
                              f"[{self.rho_min!r}, {self.rho_max!r}]")


ADDED_OPTIONS = ("profile_offset",)  # left out of schedule files while at their defaults


class FeedbackController(Controller):
    name = "feedback"

    def __init__(self, n_tokens: int, rule: FeedbackRule = FeedbackRule(), depth: int | None = None):
        """``depth``: the critic's attention layers (``tql.agent.critic_depth``), needed only
        with a ``profile_offset`` (hooks are built before the trainer that knows it)."""
        rule.validate()
        super().__init__(n_tokens, rule.rho_init, rule.rho_min, rule.rho_max)
        self.rule, self.depth = rule, depth
        if rule.profile_offset:
            if depth is None:
                raise ConfigError(f"feedback rule: profile_offset={rule.profile_offset!r} gives each layer its own "
                                  "H̄, so the controller needs the critic's depth (tql.agent.critic_depth)")
            # rho is the first layer's; these bounds keep the last layer's (rho + offset) in the rule's too.
            self.rho_min = max(rule.rho_min, rule.rho_min - rule.profile_offset)
            self.rho_max = min(rule.rho_max, rule.rho_max - rule.profile_offset)
        self.gap: float | None = None
        self.last_decision = 0
        self.decisions: list[dict] = []

    def last_rho(self, rho: float) -> float:
        """The last layer's rho when the first layer's is ``rho`` (clipped against rounding)."""
        return min(max(rho + self.rule.profile_offset, self.rule.rho_min), self.rule.rho_max)

    def target_entropy(self, step: int, progress: float):
        """A number (every layer) without an offset, as before; else one H̄ per layer."""
        value = super().target_entropy(step, progress)
        if not self.rule.profile_offset:
            return value
        return layer_profile(value, self.last_rho(self.rho) * self.log_n, self.depth)

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if "val/td_loss" not in metrics or "critic/td_loss" not in metrics:
            return
        gap = metrics["val/td_loss"] / max(metrics["critic/td_loss"], EPS)
        w = self.rule.smoothing
        self.gap = gap if self.gap is None else (1 - w) * self.gap + w * gap
        if step - self.last_decision >= self.rule.interval:
            self.last_decision = step
            self._decide(step)

    def _decide(self, step: int) -> None:
        before = self.rho
        if self.gap > self.rule.upper:
            self.set_rho(self.rho + self.rule.step)
        elif self.gap < self.rule.lower:
            self.set_rho(self.rho - self.rule.step)
        self.decisions.append({"step": step, "gap": self.gap, "rho_before": before, "rho": self.rho})

    def followed_schedule(self, **meta) -> Schedule:
        """A step schedule of rho; with an offset, a profile whose last layer follows it."""
        followed = super().followed_schedule(rule=rule_meta(self.rule, ADDED_OPTIONS), **meta)
        if not self.rule.profile_offset:
            return followed
        last = Schedule.piecewise([(p, self.last_rho(r)) for p, r in followed.knots], interpolation="step")
        return Schedule.profile(followed, last, **followed.meta)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "gap": self.gap, "last_decision": self.last_decision,
                "decisions": self.decisions}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state:
            self.gap, self.last_decision, self.decisions = state["gap"], state["last_decision"], state["decisions"]
