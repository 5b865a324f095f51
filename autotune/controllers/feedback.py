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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from autotune.controllers.base import Controller
from tql.errors import ConfigError

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

    def validate(self) -> None:
        if self.interval < 1:
            raise ConfigError(f"feedback rule: interval={self.interval!r} must be >= 1")
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError(f"feedback rule: smoothing={self.smoothing!r} must be in (0, 1]")
        if not 0.0 < self.lower < self.upper:
            raise ConfigError(f"feedback rule: need 0 < lower < upper, got lower={self.lower!r}, upper={self.upper!r}")
        if not 0.0 < self.step <= 0.5:
            raise ConfigError(f"feedback rule: step={self.step!r} must be in (0, 0.5]")


class FeedbackController(Controller):
    name = "feedback"

    def __init__(self, n_tokens: int, rule: FeedbackRule = FeedbackRule()):
        rule.validate()
        super().__init__(n_tokens, rule.rho_init, rule.rho_min, rule.rho_max)
        self.rule = rule
        self.gap: float | None = None
        self.last_decision = 0
        self.decisions: list[dict] = []

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

    def followed_schedule(self, **meta):
        return super().followed_schedule(rule=asdict(self.rule), **meta)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "gap": self.gap, "last_decision": self.last_decision,
                "decisions": self.decisions}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state:
            self.gap, self.last_decision, self.decisions = state["gap"], state["last_decision"], state["decisions"]
