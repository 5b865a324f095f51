"""When can H̄ change a run? The temperatures' path while attention sits above its targets.

With the published control (docs/published.md) the temperature loss is ``alpha * sg(H - H̄)``.
While every entropy H stays above its target, that loss's gradient in ``log_alpha`` has one
sign, and Adam moves each ``log_alpha`` down by about its learning rate per update,
whatever the size of the gap:

    alpha(t) ~ alpha_init * exp(-sum_{s < t} lr_s),    lr_s = peak rate x schedule factor

(``alpha_path`` follows Adam's recursion exactly, which matters at fast rates).

The critic's side of the control, ``sg(alpha) * (H̄ - H)``, has a gradient that does not
depend on H̄ at all. So two runs that differ only in H̄ take exactly the same updates (up to
Adam's epsilon) until one run's entropy comes near its H̄: H̄ can only matter once the
critic, held up by a temperature that is still large, lets its attention fall that far.
This module predicts both halves from a run's configuration alone:

- how far alpha has decayed by each update (``alpha_path``, exact while attention stays
  above its targets);
- when attention would fall to the target if left to itself, and when alpha has decayed
  below the critic's growing pull (``EngagementModel``, fitted to the runs measured by
  ``benchmarks/learning/engagement.py``; ``predict_engagement`` combines the two).

So a run that ends before the control engages is known in advance to be one that H̄ cannot
change, and the tools say so before it is trained.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from tql.agent import AgentConfig, lr_factor
from tql.model import get_preset

# An entropy within this many nats of its target counts as held by the control ("engaged").
ENGAGE_MARGIN = 0.1
# Attention more than this many nats below log n has "left uniform".
UNIFORM_MARGIN = 0.05


def schedule_factors(config: AgentConfig, total_steps: int) -> np.ndarray:
    """The learning-rate schedule's factor at each update 0..total_steps-1 (``TQLAgent``'s)."""
    if config.lr_schedule == "constant":
        return np.ones(total_steps)
    return lr_factor(torch.arange(total_steps), total_steps, config.warmup_fraction).numpy()


def alpha_path(config: AgentConfig, total_steps: int, betas: tuple[float, float] = (0.9, 0.999),
               eps: float = 1e-8) -> np.ndarray:
    """Predicted alpha after each update 1..total_steps while attention stays above target
    (every temperature moves alike: one array serves every (layer, group)).

    Adam (torch's defaults, as ``TQLAgent`` builds it) on ``log_alpha`` with the gradient
    ``alpha x gap``, the gap held constant (attention near uniform, a fixed target): Adam is
    blind to the gradient's scale, so only its shrinking with alpha matters. Where alpha
    changes little within Adam's ~1000-update memory (the published 1e-4) each step is about
    the learning rate, ``alpha_init exp(-sum lr)``; where it shrinks faster, Adam's memory of
    larger gradients makes the steps smaller, and the recursion below follows that."""
    return _adam_alpha_path(config.alpha_init, config.alpha_lr or config.critic_lr, config.lr_schedule,
                            config.warmup_fraction, total_steps, betas, eps)


@functools.lru_cache(maxsize=16)  # a 2M-update path is 16 MB
def _adam_alpha_path(alpha_init: float, rate: float, schedule: str, warmup_fraction: float, total_steps: int,
                     betas: tuple[float, float], eps: float) -> np.ndarray:
    config = AgentConfig(lr_schedule=schedule, warmup_fraction=warmup_fraction)
    rates = rate * schedule_factors(config, total_steps)
    beta1, beta2 = betas
    log_alpha, m, v = math.log(alpha_init), 0.0, 0.0
    path = np.empty(total_steps)
    for step in range(total_steps):
        grad = math.exp(log_alpha)  # x the gap, a constant Adam does not see
        m = beta1 * m + (1.0 - beta1) * grad
        v = beta2 * v + (1.0 - beta2) * grad * grad
        m_hat, v_hat = m / (1.0 - beta1 ** (step + 1)), v / (1.0 - beta2 ** (step + 1))
        log_alpha -= rates[step] * m_hat / (math.sqrt(v_hat) + eps)
        path[step] = math.exp(log_alpha)
    path.flags.writeable = False  # cached: shared by every caller
    return path


def update_when_alpha_below(config: AgentConfig, total_steps: int, level: float) -> int | None:
    """The first update after which alpha has decayed below ``level`` (None: not in this run)."""
    below = np.flatnonzero(alpha_path(config, total_steps) < level)
    return int(below[0]) + 1 if below.size else None


def final_alpha(config: AgentConfig, total_steps: int) -> float:
    """Alpha at the end of a run whose attention never came near its targets."""
    return float(alpha_path(config, total_steps)[-1])


def engagement_steps(rows: list[dict]) -> dict[str, int | None]:
    """Per (layer, group) of a run's logged ``metrics.jsonl`` train rows: the first logged step
    whose entropy is within ``ENGAGE_MARGIN`` of its target (None: never in these rows)."""
    keys = sorted({k.split("/", 1)[1] for row in rows for k in row if k.startswith("entropy/")})
    return {key: next((row["step"] for row in rows if f"target_entropy/{key}" in row
                       and row[f"entropy/{key}"] <= row[f"target_entropy/{key}"] + ENGAGE_MARGIN), None)
            for key in keys}


def first_engagement(rows: list[dict]) -> int | None:
    """The first logged step at which any layer's control engaged (None: H̄ never acted)."""
    steps = [step for step in engagement_steps(rows).values() if step is not None]
    return min(steps) if steps else None


# ----- when the control engages: the model ------------------------------------------------------

def learning_distance(config: AgentConfig, total_steps: int) -> np.ndarray:
    """``D[t] = sum_{s < t} rate_s``, t = 0..total_steps: how far the critic's optimiser has moved
    it after t updates. The schedule is relative to the run's length, so update t of a short
    run lies further along than update t of a long one."""
    return np.concatenate([[0.0], np.cumsum(config.critic_lr * schedule_factors(config, total_steps))])


@dataclass(frozen=True)
class EngagementModel:
    """When the control engages, from the configuration alone, with constants fitted to the
    runs ``benchmarks/learning/engagement.py`` measured (``engagement_model.py --fit`` refits
    them and prints every point beside its prediction). Outside the measured configurations
    (``measured_*``) a forecast extrapolates, and says so.

    Left to itself, attention leaves uniform once the critic has travelled the learning
    distance ``D_leave = leave_distance (rate / 1e-3)^rate_exponent (transitions / 4004)^
    data_exponent (dim / 32)^width_exponent`` (more data, or a faster rate that overshoots:
    attention takes longer to specialise; a wider critic: sooner), and falls to rho log n at
    ``D_rho = D_leave exp(depth_rate (rho_left - rho))``. With the control on it gets there
    only once alpha has also fallen below the critic's pull on attention, which grows with the
    distance travelled past that point: ``alpha <= pull (rate / 1e-3)^-pull_rate_exponent
    (D / D_rho)^pull_exponent``. So a large alpha_init delays engagement by however long alpha
    takes to decay, and a small one lets it follow the free run."""

    # benchmarks/learning/results/engagement_model_refit.txt: the two-stage fit to all 44 points
    leave_distance: float = 0.223
    rate_exponent: float = 0.309
    data_exponent: float = 0.144
    width_exponent: float = -0.437
    depth_rate: float = 2.69
    pull: float = 0.00318
    pull_exponent: float = 3.20
    pull_rate_exponent: float = -0.432
    measured_presets: tuple[str, ...] = ("0.03M", "0.4M")
    measured_rates: tuple[float, float] = (1e-4, 1e-3)
    measured_transitions: tuple[int, int] = (4_004, 200_200)  # 4 to 200 episodes of 1001 steps
    measured_steps: int = 20_000

    def free_distance(self, rate: float, transitions: int, rho: float, log_n: float, width: int = 32) -> float:
        """The learning distance at which free attention's lowest entropy reaches rho log n, for a
        critic ``width`` wide (its preset's dim)."""
        leave = (self.leave_distance * (rate / 1e-3) ** self.rate_exponent
                 * (max(transitions, 1) / self.measured_transitions[0]) ** self.data_exponent
                 * (width / 32) ** self.width_exponent)
        rho_left = 1.0 - UNIFORM_MARGIN / log_n
        return leave * math.exp(self.depth_rate * max(0.0, rho_left - rho))

    def pull_at(self, rate: float) -> float:
        """The critic's pull on attention where free attention reaches the target, at ``rate``."""
        return self.pull * (rate / 1e-3) ** -self.pull_rate_exponent

    def extrapolates(self, config: AgentConfig, total_steps: int, transitions: int) -> bool:
        low, high = self.measured_rates
        t_low, t_high = self.measured_transitions
        return (config.size not in self.measured_presets or not low <= config.critic_lr <= high
                or not t_low <= transitions <= t_high or total_steps > self.measured_steps)


MODEL = EngagementModel()


@dataclass(frozen=True)
class EngagementForecast:
    """A run's predicted engagement: the first update at which some layer's attention comes
    within ``ENGAGE_MARGIN`` of its target (None: not within ``steps``)."""

    steps: int
    engaged: int | None
    free: int | None = None  # when attention, left to itself, would reach that target
    blocked: str = ""  # why H̄ cannot act at all (no attention, control off); "" when it can
    extrapolated: bool = False

    @property
    def acts(self) -> bool:
        return self.engaged is not None and not self.blocked


def predict_engagement(config: AgentConfig, total_steps: int, rho: float, log_n: float, transitions: int,
                       model: EngagementModel = MODEL) -> EngagementForecast:
    """When a run whose highest target is ``rho log n`` first engages (the highest target is
    the one attention reaches first). A target within ``ENGAGE_MARGIN`` of uniform counts as
    engaged from the start, as the measurement counts it, though it cannot pull attention."""
    extrapolated = model.extrapolates(config, total_steps, transitions)
    if config.critic != "tql":
        return EngagementForecast(total_steps, None, blocked="the critic has no attention")
    if not config.entropy_control:
        return EngagementForecast(total_steps, None, blocked="the entropy control is off")
    rho_engaged = rho + ENGAGE_MARGIN / log_n
    if rho_engaged >= 1.0:
        return EngagementForecast(total_steps, 1, 1, extrapolated=extrapolated)
    distance = learning_distance(config, total_steps)[1:]
    target = model.free_distance(config.critic_lr, transitions, rho_engaged, log_n, get_preset(config.size).dim)
    reached = np.flatnonzero(distance >= target)
    if not reached.size:
        return EngagementForecast(total_steps, None, extrapolated=extrapolated)
    free = int(reached[0])
    pull = model.pull_at(config.critic_lr) * (distance[free:] / target) ** model.pull_exponent
    held = np.flatnonzero(alpha_path(config, total_steps)[free:] <= pull)
    engaged = free + int(held[0]) + 1 if held.size else None
    return EngagementForecast(total_steps, engaged, free + 1, extrapolated=extrapolated)


def steps_to_engage(config: AgentConfig, total_steps: int, rho: float, log_n: float, transitions: int,
                    longest: int = 2_000_000) -> int | None:
    """The shortest run (of total_steps x 1.5^k, up to ``longest``) in which the control
    engages: the schedule is relative to the run's length, so a longer run is a different run,
    not the same one continued. None: not within ``longest`` updates."""
    steps = total_steps
    while steps <= longest:
        forecast = predict_engagement(config, steps, rho, log_n, transitions)
        if forecast.blocked:
            return None
        if forecast.acts:
            return steps
        steps = int(steps * 1.5) + 1
    return None


def engaging_change(config: AgentConfig, total_steps: int, rho: float, log_n: float,
                    transitions: int) -> dict[str, float] | None:
    """The smallest agent change (alpha_init 0.01, then also critic_lr 1e-3) with which the
    control engages within this run's updates; None when neither does."""
    for change in ({"alpha_init": 0.01}, {"alpha_init": 0.01, "critic_lr": 1e-3}):
        changed = replace(config, **change)
        if predict_engagement(changed, total_steps, rho, log_n, transitions).acts:
            return change
    return None
