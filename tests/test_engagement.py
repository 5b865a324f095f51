"""tql.engagement: the temperatures' predicted path against the agent's own updates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tql.agent import AgentConfig, TQLAgent, flat_metrics, lr_factor
from tql.engagement import (MODEL, UNIFORM_MARGIN, alpha_path, engaging_change, final_alpha, learning_distance,
                            predict_engagement, steps_to_engage, update_when_alpha_below)
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


# ----- the engagement model against the measured runs --------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "learning" / "results"


def measured_runs(name: str) -> list[dict]:
    return json.loads((RESULTS / name).read_text())["runs"]


def run_config(run: dict, **settings) -> AgentConfig:
    return AgentConfig.for_task(TASK, size=run["size"], critic_lr=run["critic_lr"], **settings)


def test_predicted_engagement_is_within_a_quarter_of_each_measured_one():
    """The control grid (alpha from 1, 0.1, 0.01; H̄ 0.5 and 0.9 log n; 40 episodes, 3,000
    updates at rate 1e-3): where a run engaged, the prediction is within 25% of the update; where
    it did not within 3,000, the prediction is at least 75% of the way there (one is: rho 0.5
    from alpha 0.01 is predicted at ~2,400)."""
    for run in measured_runs("engagement_control.json"):
        config = run_config(run, alpha_init=run["alpha_init"])
        predicted = predict_engagement(config, run["steps"], run["rho"], TASK.max_entropy, run["episodes"] * 1001)
        measured = run["summary"]["first_engaged"]
        if measured is None:
            assert predicted.engaged is None or predicted.engaged >= 0.75 * run["steps"], run["name"]
        else:
            assert predicted.engaged == pytest.approx(measured, rel=0.25), run["name"]


def test_predicted_departure_from_uniform_is_within_a_fifth_of_each_free_run():
    """The free grid (control off; critic rate 1e-4, 3e-4, 1e-3; 4 and 40 episodes): the update at
    which attention leaves uniform, within 20%, and "never" where it never did in 3,000."""
    log_n = TASK.max_entropy
    for run in measured_runs("engagement_free.json"):
        config = run_config(run)
        need = MODEL.free_distance(run["critic_lr"], run["episodes"] * 1001, 1.0 - UNIFORM_MARGIN / log_n, log_n)
        reached = np.flatnonzero(learning_distance(config, run["steps"])[1:] >= need)
        predicted = int(reached[0]) + 1 if reached.size else None
        measured = run["summary"]["leaves_uniform"]
        if measured is None:
            assert predicted is None, run["name"]
        else:
            assert predicted == pytest.approx(measured, rel=0.2), run["name"]


def test_learning_distance_sums_the_scheduled_rate():
    config = AgentConfig.for_task(TASK, size="0.03M", critic_lr=1e-3)
    factors = [float(lr_factor(step, 500, config.warmup_fraction)) for step in range(500)]
    distance = learning_distance(config, 500)
    assert distance[0] == 0 and distance[-1] == pytest.approx(1e-3 * sum(factors), rel=1e-6)
    constant = learning_distance(AgentConfig.for_task(TASK, size="0.03M", lr_schedule="constant"), 100)
    assert constant[37] == pytest.approx(37e-4)


def test_a_small_alpha_engages_sooner_and_a_blocked_control_never():
    rate = dict(critic_lr=1e-3)
    times = [predict_engagement(AgentConfig.for_task(TASK, size="0.03M", alpha_init=a, **rate), 3000, 0.9,
                                TASK.max_entropy, 40_040).engaged for a in (1.0, 0.1, 0.01)]
    assert times[0] > times[1] > times[2] > 0
    off = AgentConfig.for_task(TASK, size="0.03M", entropy_control=False, **rate)
    assert predict_engagement(off, 3000, 0.9, TASK.max_entropy, 40_040).blocked == "the entropy control is off"
    near_uniform = predict_engagement(AgentConfig.for_task(TASK, size="0.03M"), 200, 0.99, TASK.max_entropy, 800)
    assert near_uniform.engaged == 1  # within ENGAGE_MARGIN of log n: counted engaged from the start


def test_a_longer_run_or_a_smaller_alpha_is_what_the_forecast_offers():
    config = AgentConfig.for_task(TASK, size="0.03M")  # published: alpha from 1 at rate 1e-4
    assert not predict_engagement(config, 3000, 0.9, TASK.max_entropy, 40_040).acts
    needed = steps_to_engage(config, 3000, 0.9, TASK.max_entropy, 40_040)
    assert predict_engagement(config, needed, 0.9, TASK.max_entropy, 40_040).acts
    shorter = int((needed - 1) / 1.5)  # the previous length tried
    assert not predict_engagement(config, shorter, 0.9, TASK.max_entropy, 40_040).acts
    change = engaging_change(config, 3000, 0.9, TASK.max_entropy, 40_040)
    assert change == {"alpha_init": 0.01, "critic_lr": 1e-3}
