"""Optimisers as published: AdamW decay on weight matrices only, warm-up + cosine schedule in
the checkpoint, temperatures in the critic's optimiser; FQL's and tql-tune 0.1's settings."""

from __future__ import annotations

import pytest
import torch

from tql.agent import AgentConfig, TQLAgent, decayed_parameter_names, lr_factor
from tql.batched.stacked import Population
from tql.tasks import get_task

OBS, ACT = 6, 2


def _config(**overrides) -> AgentConfig:
    return AgentConfig(size="0.03M", actor_hidden=(8, 8), batch_size=4, flow_steps=2).replace(**overrides)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(n, OBS, generator=g), "actions": torch.rand(n, ACT, generator=g) * 2 - 1,
            "next_observations": torch.randn(n, OBS, generator=g), "rewards": -torch.rand(n, generator=g),
            "masks": torch.ones(n)}


def test_weight_decay_goes_to_weight_matrices_only():
    agent = TQLAgent(OBS, ACT, _config())
    expected_critic = {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("qkv", "proj", "fc1", "fc2")}
    expected_critic |= {"q_heads.w_in", "q_heads.w_hidden.0", "q_heads.w_out"}
    assert decayed_parameter_names(agent.critic) == expected_critic
    # Actor MLP: Linear, GELU, LayerNorm per hidden layer, then the output Linear.
    assert decayed_parameter_names(agent.actor) == {"net.0.weight", "net.3.weight", "net.6.weight"}
    names = {id(p): n for n, p in agent.named_parameters()}
    decayed = {names[id(p)] for g in agent.optimizer.param_groups if g["weight_decay"] for p in g["params"]}
    assert decayed == {f"critic.{n}" for n in expected_critic} | \
        {f"{m}.net.{i}.weight" for m in ("actor", "flow") for i in (0, 3, 6)}
    for never in ("critic.value_token", "critic.w_pos", "critic.b_pos", "critic.pos_emb", "critic.modality_emb",
                  "critic.ln_f.weight", "critic.blocks.0.qkv.bias", "temperatures.log_alpha", "actor.net.2.weight"):
        assert never not in decayed, never
    assert all(g["weight_decay"] in (0.0, 0.01) for g in agent.optimizer.param_groups)
    assert isinstance(agent.optimizer, torch.optim.AdamW)


def test_learning_rates_and_temperatures_in_the_critics_optimiser():
    agent = TQLAgent(OBS, ACT, _config(lr_schedule="constant"))
    lrs = {names: g["lr"] for g in agent.optimizer.param_groups
           for names in [tuple(n for n, p in agent.named_parameters() if any(p is q for q in g["params"]))]}
    by_param = {n: lr for names, lr in lrs.items() for n in names}
    assert by_param["critic.blocks.0.qkv.weight"] == 1e-4 and by_param["critic.value_token"] == 1e-4
    assert by_param["actor.net.0.weight"] == 5e-4 and by_param["flow.net.0.bias"] == 5e-4
    assert by_param["temperatures.log_alpha"] == 1e-4  # the critic's rate (published)
    assert float(agent.temperatures.alphas().detach()[0, 0]) == pytest.approx(1.0)  # published initial alpha


@pytest.mark.parametrize("step, factor", [(0, 0.01), (10, 1.0), (505, 0.55), (1000, 0.1), (5000, 0.1)])
def test_schedule_at_its_landmarks(step, factor):
    """1,001 updates: warm-up over round(0.01 x 1001) = 10 from 1%, then cosine over
    updates 10..1000 (half-way at 505) down to 10% at the last update, held after it."""
    assert float(lr_factor(step, 1001, 0.01)) == pytest.approx(factor, abs=1e-12)
    agent = TQLAgent(OBS, ACT, _config(), total_steps=1001)
    agent.lr_step = step
    agent._set_learning_rates()
    critic_group = agent.optimizer.param_groups[0]  # fused AdamW: the rate is a float32 tensor
    assert float(critic_group["lr"]) == pytest.approx(1e-4 * factor, rel=1e-7)


def test_warmup_is_linear_and_updates_advance_it():
    assert float(lr_factor(5, 1001, 0.01)) == pytest.approx(0.01 + 0.99 * 5 / 10)
    agent = TQLAgent(OBS, ACT, _config(), total_steps=1001)
    lrs = []
    for _ in range(3):
        lrs.append(float(agent.optimizer.param_groups[0]["lr"]))
        agent.update(_batch(), 1.0)
    assert lrs == pytest.approx([1e-4 * (0.01 + 0.099 * k) for k in range(3)])
    assert agent.lr_step == 3


def test_schedule_is_part_of_the_checkpoint():
    agent = TQLAgent(OBS, ACT, _config(), total_steps=50)
    for _ in range(7):
        agent.update(_batch(), 1.0)
    state = agent.full_state()
    resumed = TQLAgent(OBS, ACT, _config(), total_steps=999)  # a resumed run keeps the schedule it began
    resumed.load_full_state(state)
    assert (resumed.lr_step, resumed.total_steps) == (7, 50)
    assert [float(g["lr"]) for g in resumed.optimizer.param_groups] == \
        [float(g["lr"]) for g in agent.optimizer.param_groups]
    assert float(resumed.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-4 * float(lr_factor(7, 50, 0.01)),
                                                                        rel=1e-7)


def test_mlp_critic_keeps_fqls_settings():
    config = AgentConfig.for_task(get_task("cube-double-play-singletask-task1-v0"), critic="mlp")
    assert (config.critic_lr, config.actor_lr, config.weight_decay, config.lr_schedule, config.actor_layer_norm) == \
        (3e-4, 3e-4, 0.0, "constant", False)
    agent = TQLAgent(OBS, ACT, config.replace(actor_hidden=(8,)))
    assert type(agent.optimizer) is torch.optim.Adam
    assert [float(g["lr"]) for g in agent.optimizer.param_groups] == pytest.approx([3e-4] * 2)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in agent.actor.modules())


def test_actor_init_is_glorot_uniform_with_zero_bias():
    torch.manual_seed(0)
    agent = TQLAgent(OBS, ACT, _config(actor_hidden=(256, 256)))
    first = agent.actor.net[0]
    weight = first.weight.detach()
    bound = (6.0 / (first.in_features + first.out_features)) ** 0.5
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.95 * bound
    assert float(weight.std()) == pytest.approx(bound / 3**0.5, rel=0.05)  # uniform's std
    assert torch.count_nonzero(first.bias) == 0


def test_config_of_tql_tune_0_1_loads_as_that_run():
    old = {"critic": "tql", "size": "1M", "num_q": 2, "lr": 3e-4, "batch_size": 256, "gamma": 0.99, "tau": 0.005,
           "alpha_fql": 300.0, "flow_steps": 10, "actor_hidden": [512, 512], "normalize_q_loss": False,
           "alpha_lr": 3e-4, "alpha_init": 0.01, "entropy_control": True, "compile": False, "precision": "fp32"}
    config = AgentConfig.from_dict(old)
    assert config.size == "1M-d5"
    assert (config.critic_lr, config.actor_lr, config.alpha_init, config.alpha_lr) == (3e-4, 3e-4, 0.01, 3e-4)
    assert (config.entropy_reduction, config.lr_schedule, config.weight_decay, config.actor_layer_norm) == \
        ("sum", "constant", 0.0, False)
    agent = TQLAgent(OBS, ACT, config.replace(size="0.03M-v1", actor_hidden=(8,)))
    # tql-tune 0.1's optimiser layout: Adam with [critic, policies, temperatures] groups.
    assert type(agent.optimizer) is torch.optim.Adam
    assert [g["lr"] for g in agent.optimizer.param_groups] == [3e-4, 3e-4, 3e-4]


def test_population_with_per_layer_targets_and_schedule_equals_agents():
    """Members with their own (layer, group) tables, AdamW and a schedule that moves fast
    (20 updates: warm-up and decay within the test) equal single agents."""
    torch.set_default_dtype(torch.float64)
    try:
        config = _config(warmup_fraction=0.1)
        seeds, tables = [1, 2], torch.tensor([[[2.0, 1.5], [1.0, 0.5]], [[0.5, 0.5], [2.1, 1.8]]])
        pop = Population(OBS, ACT, config, 2, "cpu", seeds, total_steps=20)
        agents = []
        for seed in seeds:
            torch.manual_seed(seed)
            agents.append(TQLAgent(OBS, ACT, config, total_steps=20))
        for step in range(6):
            batch = _batch(seed=step)
            noise = pop.sample_noise(batch)
            pop_metrics = pop.update(batch, tables, noise)
            for i, agent in enumerate(agents):
                metrics = agent.update(batch, tables[i], {k: v[i] for k, v in noise.items()})
                for key, value in metrics.items():
                    torch.testing.assert_close(pop_metrics[key][i], value, atol=1e-10, rtol=0, msg=key)
        for i, agent in enumerate(agents):
            for name, value in agent.state_dict().items():
                torch.testing.assert_close(pop.state[name][i], value, atol=1e-10, rtol=0, msg=name)
            assert pop.member_state(i)["lr_step"] == agent.lr_step == 6
    finally:
        torch.set_default_dtype(torch.float32)
