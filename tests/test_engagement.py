"""tql.engagement: the temperatures' predicted path against the agent's own updates."""

from __future__ import annotations

import math

import pytest
import torch

from tql.agent import AgentConfig, TQLAgent, flat_metrics, lr_factor
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


@pytest.mark.parametrize("settings", [
    dict(lr_schedule="warmup_cosine", critic_lr=1e-4, alpha_init=1.0),  # as published
    dict(lr_schedule="warmup_cosine", critic_lr=1e-3, alpha_init=1.0),
    dict(lr_schedule="constant", critic_lr=3e-3, alpha_init=0.1),
    dict(lr_schedule="warmup_cosine", critic_lr=1e-4, alpha_lr=5e-3, alpha_init=1.0),
])
def test_alpha_follows_the_predicted_path_update_by_update(settings):
    """Adam's recursion on log alpha, gradient proportional to alpha: within 1% of the decay
    at every update, at the published rate and at fast ones (where Adam's memory of larger
    gradients makes its steps smaller than its rate, and exp(-sum lr) would be 5% off)."""
    config, steps = _config(**settings), 120
    measured, predicted = measured_alphas(config, steps), alpha_path(config, steps)
    assert measured[-1] < 0.995 * config.alpha_init  # it did decay
    for got, want in zip(measured, predicted):
        decay = math.log(config.alpha_init / want)
        assert math.log(got) == pytest.approx(math.log(want), abs=0.01 * decay + 1e-6)


def torch_adam_alphas(config: AgentConfig, total_steps: int, until: float) -> list[float]:
    """alpha under torch's own Adam on one log alpha with the loss alpha x (H - H̄), H - H̄ = 1,
    the rate scheduled by ``tql.agent.lr_factor``: an implementation independent of ours."""
    log_alpha = torch.nn.Parameter(torch.tensor(math.log(config.alpha_init), dtype=torch.float64))
    optimizer = torch.optim.Adam([log_alpha], lr=config.critic_lr)
    alphas = []
    for step in range(total_steps):
        factor = 1.0 if config.lr_schedule == "constant" else float(lr_factor(step, total_steps, config.warmup_fraction))
        optimizer.param_groups[0]["lr"] = config.critic_lr * factor
        optimizer.zero_grad()
        log_alpha.exp().backward()
        optimizer.step()
        alphas.append(float(log_alpha.exp()))
        if alphas[-1] < until:
            break
    return alphas


def test_the_published_alpha_barely_moves_in_a_short_run():
    config = AgentConfig.for_task(TASK, size="0.03M")  # alpha from 1.0 at the critic's 1e-4, warm-up + cosine
    # The cpu profile's 3,000 updates: sum(lr) = 1e-4 x 3000 x (mean factor ~0.55) ~ 0.165.
    assert final_alpha(config, 3000) == pytest.approx(math.exp(-0.165), abs=0.01)
    assert update_when_alpha_below(config, 3000, 0.5) is None
    # Halving takes a little longer than ln 2 / rate (6,932 updates at a constant 1e-4): torch's
    # Adam, run here, agrees with the prediction to the update.
    for settings, total in ((dict(lr_schedule="constant"), 100_000), ({}, 1_000_000)):
        setting = config.replace(**settings)
        halved = len(torch_adam_alphas(setting, total, until=0.5))
        assert update_when_alpha_below(setting, total, 0.5) == pytest.approx(halved, abs=1)
        assert halved > math.ceil(math.log(2) / 1e-4)
