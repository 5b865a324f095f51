"""When can H̄ change a run? The temperatures' path while attention sits above its targets.

With the published control (DESIGN.md 3a) the temperature loss is ``alpha * sg(H - H̄)``.
While every entropy H stays above its target, that loss's gradient in ``log_alpha`` has one
sign, and Adam moves each ``log_alpha`` down by about its learning rate per update,
whatever the size of the gap:

    alpha(t) = alpha_init * exp(-sum_{s < t} lr_s),    lr_s = peak rate x schedule factor.

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


def alpha_path(config: AgentConfig, total_steps: int) -> np.ndarray:
    """Predicted alpha after each update 1..total_steps while attention stays above target
    (every temperature moves alike: one array serves every (layer, group))."""
    rate = config.alpha_lr or config.critic_lr
    return config.alpha_init * np.exp(-rate * np.cumsum(schedule_factors(config, total_steps)))


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
