"""When can H̄ change a run? The temperatures' path while attention sits above its targets.

With the published control (DESIGN.md 3a) the temperature loss is ``alpha * sg(H - H̄)``.
While every entropy H stays above its target, that loss's gradient in ``log_alpha`` has one
sign, and Adam moves each ``log_alpha`` down by about its learning rate per update,
whatever the size of the gap:

    alpha(t) ~ alpha_init * exp(-sum_{s < t} lr_s),    lr_s = peak rate x schedule factor

(``alpha_path`` follows Adam's recursion exactly, which matters at fast rates).

The critic's side of the control, ``sg(alpha) * (H̄ - H)``, has a gradient that does not
depend on H̄ at all. So two runs that differ only in H̄ take exactly the same updates (up to
Adam's epsilon) until one run's entropy comes near its H̄: H̄ can only matter once the
critic, held up by a temperature that is still large, lets its attention fall that far.
This module predicts the first half of that from a run's configuration alone: how far
alpha has decayed by each update, so a run that ends while alpha is still near its start is
known in advance to be one that H̄ cannot change. ``benchmarks/learning/engagement.py``
measures the second half (when attention, left to itself, falls below H̄).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tql.agent import AgentConfig, lr_factor

# An entropy within this many nats of its target counts as held by the control ("engaged").
ENGAGE_MARGIN = 0.1


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


@functools.lru_cache(maxsize=64)
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
