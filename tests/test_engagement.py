"""tql.engagement: the temperatures' predicted path against the agent's own updates."""

from __future__ import annotations

import math

import pytest
import torch

from tql.agent import AgentConfig, TQLAgent, flat_metrics
from tql.engagement import alpha_path, final_alpha, update_when_alpha_below
from tql.targets import rho_table
from tql.tasks import get_task

TASK = get_task("cube-double-play-singletask-task1-v0")


def measured_alphas(config: AgentConfig, steps: int) -> list[float]:
    """Every update's mean alpha, training on random batches with H̄ far below uniform."""
    torch.manual_seed(0)
    agent = TQLAgent(TASK.obs_dim, TASK.act_dim, config, torch.device("cpu"), total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    target = torch.tensor(rho_table(0.1, 2, TASK.max_entropy))  # H stays far above it: the one-sign regime
    alphas = []
    for _ in range(steps):
        batch = {"observations": torch.randn(16, TASK.obs_dim, generator=generator),
                 "actions": torch.rand(16, TASK.act_dim, generator=generator) * 2 - 1,
                 "next_observations": torch.randn(16, TASK.obs_dim, generator=generator),
                 "rewards": -torch.ones(16), "masks": torch.ones(16)}
        row = flat_metrics(agent.update(batch, target))
        alphas.append(sum(v for k, v in row.items() if k.startswith("alpha/")) / 4)
    return alphas


def _config(**settings) -> AgentConfig:
    return AgentConfig.for_task(TASK, size="0.03M", batch_size=16, actor_hidden=(32, 32), flow_steps=2,
                                warmup_fraction=0.1, **settings)


def test_at_the_published_rate_alpha_follows_the_predicted_path_update_by_update():
    config = _config(lr_schedule="warmup_cosine", critic_lr=1e-4, alpha_init=1.0)
    steps = 120
    for got, want in zip(measured_alphas(config, steps), alpha_path(config, steps)):
        assert math.log(got) == pytest.approx(math.log(want), abs=0.02 * abs(math.log(want)) + 1e-6)


@pytest.mark.parametrize("settings", [
    dict(lr_schedule="warmup_cosine", critic_lr=1e-3, alpha_init=1.0),
    dict(lr_schedule="constant", critic_lr=3e-3, alpha_init=0.1),
    dict(lr_schedule="warmup_cosine", critic_lr=1e-4, alpha_lr=5e-3, alpha_init=1.0),
])
def test_alpha_never_decays_faster_than_predicted(settings):
    """Where alpha shrinks fast against Adam's ~1000-update memory of larger gradients, Adam's
    steps fall a little under its rate: the path is then a bound (alpha is at least as large,
    so the control engages no earlier than predicted), and still within 10% of the decay."""
    config, steps = _config(**settings), 120
    measured, predicted = measured_alphas(config, steps), alpha_path(config, steps)
    assert measured[-1] < 0.95 * config.alpha_init  # it did decay
    for got, want in zip(measured, predicted):
        decay = math.log(config.alpha_init / want)
        assert math.log(want) - 1e-6 <= math.log(got) <= math.log(want) + 0.1 * decay + 1e-6


def test_the_published_alpha_barely_moves_in_a_short_run():
    config = AgentConfig.for_task(TASK, size="0.03M")  # alpha from 1.0 at the critic's 1e-4, warm-up + cosine
    # The cpu profile's 3,000 updates: sum(lr) = 1e-4 x 3000 x (mean factor ~0.55) ~ 0.165.
    assert final_alpha(config, 3000) == pytest.approx(math.exp(-0.165), abs=0.01)
    assert update_when_alpha_below(config, 3000, 0.5) is None
    # Halving needs sum(lr) = ln 2: ceil(ln 2 / 1e-4) updates at a constant rate ...
    constant = config.replace(lr_schedule="constant")
    assert update_when_alpha_below(constant, 100_000, 0.5) == math.ceil(math.log(2) / 1e-4)
    # ... and at the paper's 1M, the 10k warm-up updates give ~0.505 of it, ~1.9k full-rate ones the rest.
    assert update_when_alpha_below(config, 1_000_000, 0.5) == pytest.approx(10_000 + 1_880, abs=150)
