"""Agent pieces with known answers: flow matching, Euler sampling, TD targets, one update."""

import pytest
import torch

from tql.agent import AgentConfig, FlowPolicy, TQLAgent, flat_metrics, flow_matching_loss, td_target
from tql.errors import ConfigError

OBS, ACT = 6, 2


class StraightLineFlow(FlowPolicy):
    """The exact velocity field for data concentrated on one action a*: v = (a* - x) / (1 - t)."""

    def __init__(self, target):
        super().__init__(OBS, ACT, (8,))
        self.target = target

    def forward(self, obs, x_t, t):
        return (self.target - x_t) / (1.0 - t)


class ShiftedFlow(StraightLineFlow):
    def forward(self, obs, x_t, t):
        return super().forward(obs, x_t, t) + 0.5


def test_flow_matching_target_is_action_minus_noise():
    target = torch.tensor([0.3, -0.6])
    flow = StraightLineFlow(target)
    obs, noise = torch.randn(32, OBS), torch.randn(32, ACT)
    t = torch.rand(32, 1) * 0.9
    # The exact field has zero flow-matching loss against (a - x0) ...
    assert flow_matching_loss(flow, obs, target.expand(32, ACT), noise, t) < 1e-10
    # ... and a field that is off by a constant c has loss exactly c^2.
    assert flow_matching_loss(ShiftedFlow(target), obs, target.expand(32, ACT), noise, t) == pytest.approx(0.25)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_sampling_reaches_the_target_along_straight_lines(steps):
    target = torch.tensor([0.3, -0.6])
    samples = StraightLineFlow(target).sample(torch.zeros(5, OBS), torch.randn(5, ACT), steps)
    torch.testing.assert_close(samples, target.expand(5, ACT), atol=1e-5, rtol=0)


def test_euler_sampling_clips_to_the_action_box():
    samples = StraightLineFlow(torch.tensor([3.0, -2.0])).sample(torch.zeros(4, OBS), torch.randn(4, ACT), 4)
    assert torch.all(samples == torch.tensor([1.0, -1.0]))


def test_td_target_uses_masks_and_the_ensemble_mean():
    rewards = torch.tensor([-1.0, 0.0, -2.0])
    masks = torch.tensor([1.0, 0.0, 1.0])
    next_qs = torch.tensor([[10.0, 4.0, -3.0], [20.0, 8.0, -5.0]])
    expected = [-1.0 + 0.9 * 15.0, 0.0, -2.0 + 0.9 * -4.0]
    torch.testing.assert_close(td_target(rewards, masks, next_qs, 0.9), torch.tensor(expected))


def _batch(n=16, rewards=None, masks=None):
    g = torch.Generator().manual_seed(0)
    return {
        "observations": torch.randn(n, OBS, generator=g),
        "actions": torch.rand(n, ACT, generator=g) * 2 - 1,
        "next_observations": torch.randn(n, OBS, generator=g),
        "rewards": rewards if rewards is not None else -torch.rand(n, generator=g),
        "masks": masks if masks is not None else torch.ones(n),
    }


def _agent(**overrides):
    config = AgentConfig(size="0.4M", actor_hidden=(32, 32), batch_size=16, flow_steps=3).replace(**overrides)
    torch.manual_seed(0)
    return TQLAgent(OBS, ACT, config)


def test_terminal_masks_make_the_td_target_the_reward():
    rewards = -torch.arange(16, dtype=torch.float32)
    metrics = _agent().update(_batch(rewards=rewards, masks=torch.zeros(16)), target_entropy=1.0)
    assert float(metrics["critic/target_q"]) == pytest.approx(float(rewards.mean()))


@pytest.mark.parametrize("critic", ["tql", "mlp"])
def test_update_changes_every_trained_parameter_and_moves_the_target_critic(critic):
    agent = _agent(critic=critic)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    metrics = agent.update(_batch(), target_entropy=2.0)
    after = agent.state_dict()
    for name, param in agent.named_parameters():
        if param.requires_grad and param.numel():
            assert not torch.equal(before[name], after[name]), f"{name} did not change"
    moved = [k for k in after if k.startswith("target_critic.") and not torch.equal(before[k], after[k])]
    assert moved, "target critic did not follow the online critic"
    flat = flat_metrics(metrics)
    depth = agent.critic.depth
    assert sum(k.startswith("entropy/") for k in flat) == 2 * depth
    assert flat["target_entropy"] == pytest.approx(2.0)


def test_temperatures_rise_when_entropy_is_below_target_in_the_agent():
    agent = _agent()
    log_n = torch.log(torch.tensor(1.0 + OBS + ACT))
    alphas0 = agent.temperatures.alphas().detach().clone()
    agent.update(_batch(), target_entropy=float(log_n))  # entropy < log n always
    assert torch.all(agent.temperatures.alphas() > alphas0)
    agent = _agent()
    agent.update(_batch(), target_entropy=1e-3)  # entropy > ~0 always
    assert torch.all(agent.temperatures.alphas() < alphas0)


def test_without_entropy_control_temperatures_stay_fixed():
    agent = _agent(entropy_control=False)
    alphas0 = agent.temperatures.alphas().detach().clone()
    agent.update(_batch(), target_entropy=3.0)
    torch.testing.assert_close(agent.temperatures.alphas(), alphas0)


def test_state_round_trip_restores_the_same_next_update():
    agent = _agent()
    agent.update(_batch(), 2.0)
    state = agent.full_state()
    clone = _agent()
    clone.load_full_state(state)
    torch.manual_seed(1)
    a = agent.update(_batch(), 2.0)
    torch.manual_seed(1)
    b = clone.update(_batch(), 2.0)
    assert float(a["critic/loss"]) == pytest.approx(float(b["critic/loss"]), rel=1e-6)


def test_bad_agent_options_are_rejected_with_choices():
    with pytest.raises(ConfigError, match="tql, mlp"):
        AgentConfig(critic="cnn").validate()
    with pytest.raises(ConfigError, match="lr"):
        AgentConfig().replace(critic_lr=0.0)
    with pytest.raises(ConfigError, match="unknown agent option"):
        AgentConfig().replace(learning_rate=1.0)
