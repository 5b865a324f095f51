"""A batched population equals K separate TQLAgents fed the same seeds, batches, noise and H̄,
with either backend (``native``: tql.batched.forward; ``vmap``: the agent's own losses under vmap)."""

from __future__ import annotations

import functools

import pytest
import torch

from tql.agent import AgentConfig, TQLAgent
from tql.batched.forward import BatchedAgent
from tql.batched.stacked import BACKENDS, Population

OBS, ACT, B = 6, 2, 16
SEEDS = [3, 7, 11]
TARGETS = [0.4, 1.3, 2.2]  # log n = log 9 ~ 2.197: below, mid, at the maximum


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _config(**overrides) -> AgentConfig:
    return AgentConfig(size="0.03M", actor_hidden=(32, 32), batch_size=B, flow_steps=3).replace(**overrides)


def _agents(config, seeds=SEEDS) -> list[TQLAgent]:
    agents = []
    for seed in seeds:
        torch.manual_seed(seed)
        agents.append(TQLAgent(OBS, ACT, config))
        agents[-1].noise = torch.Generator().set_state(torch.get_rng_state())  # as a training run goes on
    return agents


def _batches(k: int, step: int, shared: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    lead = () if shared else (k,)
    dtype = torch.get_default_dtype()
    return {
        "observations": torch.randn(*lead, B, OBS, generator=g, dtype=dtype),
        "actions": torch.rand(*lead, B, ACT, generator=g, dtype=dtype) * 2 - 1,
        "next_observations": torch.randn(*lead, B, OBS, generator=g, dtype=dtype),
        "rewards": -torch.rand(*lead, B, generator=g, dtype=dtype),
        "masks": (torch.rand(*lead, B, generator=g) > 0.2).to(dtype),
    }


def _member(tensors: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {key: value[i] for key, value in tensors.items()}


def _assert_member_equals_agent(pop: Population, i: int, agent: TQLAgent, atol: float, rtol: float = 0.0):
    for name, value in agent.state_dict().items():
        torch.testing.assert_close(pop.state[name][i].detach(), value, atol=atol, rtol=rtol, msg=name)


def _assert_metrics_equal(pop_metrics, i, agent_metrics, atol, rtol=0.0):
    assert set(pop_metrics) == set(agent_metrics)
    for key, value in agent_metrics.items():
        torch.testing.assert_close(pop_metrics[key][i], value, atol=atol, rtol=rtol, msg=key)


def _run_both(config, steps, shared=False, atol=1e-10, param_atol=1e-10, rtol=0.0, chunk_size=None,
              backend="native"):
    k = len(SEEDS)
    pop = Population(OBS, ACT, config, k, "cpu", SEEDS, chunk_size=chunk_size, backend=backend)
    agents = _agents(config)
    for i, agent in enumerate(agents):  # same initialisation
        _assert_member_equals_agent(pop, i, agent, atol=0.0)
    for step in range(steps):
        batches = _batches(k, step, shared)
        noise = pop.sample_noise(batches)
        pop_metrics = pop.update(batches, torch.tensor(TARGETS), noise)
        for i, agent in enumerate(agents):
            batch = batches if shared else _member(batches, i)
            metrics = agent.update(batch, TARGETS[i], _member(noise, i))
            _assert_metrics_equal(pop_metrics, i, metrics, atol, rtol)
            _assert_member_equals_agent(pop, i, agent, param_atol, rtol)
    return pop, agents


@pytest.mark.parametrize("backend, chunk_size", [("native", None), ("vmap", None), ("vmap", 2)])
def test_population_update_equals_separate_agents_float64(float64, backend, chunk_size):
    pop, agents = _run_both(_config(), steps=3, chunk_size=chunk_size, backend=backend)
    # Adam moments and step counts too (exported in TQLAgent's optimizer format).
    for i, agent in enumerate(agents):
        exported = pop.member_state(i)["optimizer"]["state"]
        own = agent.optimizer.state_dict()["state"]
        assert set(exported) == set(own)
        for index, entry in own.items():
            for key, value in entry.items():
                torch.testing.assert_close(exported[index][key], value, atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_population_update_equals_separate_agents_float32(backend):
    # Metrics agree to float32 rounding; parameters to a few 1e-5: Adam's first steps are
    # ~lr * sign(grad), so rounding in a near-zero gradient element moves its update.
    _run_both(_config(), steps=2, atol=1e-5, param_atol=5e-5, rtol=1e-5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_batch_equals_separate_agents(float64, backend):
    _run_both(_config(), steps=2, shared=True, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("overrides", [{"entropy_control": False}, {"critic": "mlp", "actor_hidden": (16,)}])
def test_population_without_attention_temperatures_equals_agents(float64, overrides, backend):
    pop, agents = _run_both(_config(**overrides), steps=1, backend=backend)
    assert "temperatures.log_alpha" not in pop.trainable
    alphas = pop.state["temperatures.log_alpha"].detach().exp()
    torch.testing.assert_close(alphas, torch.full_like(alphas, AgentConfig().alpha_init))


def test_member_noise_streams_do_not_depend_on_k(float64):
    """Default noise: member i draws from its own generator, seeded by its seed."""
    config = _config()
    big = Population(OBS, ACT, config, 3, "cpu", SEEDS)
    small = Population(OBS, ACT, config, 1, "cpu", SEEDS[1:2])
    for step in range(2):
        batches = _batches(3, step)
        big_metrics = big.update(batches, torch.tensor(TARGETS))
        small_metrics = small.update({k: v[1:2] for k, v in batches.items()}, TARGETS[1])
        for key, value in small_metrics.items():
            torch.testing.assert_close(big_metrics[key][1], value[0], atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_act_matches_each_agent_with_its_generator(float64, backend):
    config = _config()
    pop = Population(OBS, ACT, config, 3, "cpu", SEEDS, backend=backend)
    agents = _agents(config)
    obs = torch.randn(3, 5, OBS)
    shared = pop.act(obs[0])  # one batch for all members
    own = pop.act(obs)  # a batch per member (the generators have moved on)
    assert shared.shape == own.shape == (3, 5, ACT)
    for i, agent in enumerate(agents):
        g = agent.noise  # member i's stream continues where seed i's run would after initialisation
        torch.testing.assert_close(shared[i], agent.act(obs[0], g), atol=1e-12, rtol=0.0)
        torch.testing.assert_close(own[i], agent.act(obs[i], g), atol=1e-12, rtol=0.0)


def test_member_state_round_trip_and_export(float64):
    config = _config()
    pop = Population(OBS, ACT, config, 3, "cpu", SEEDS)
    for step in range(2):
        pop.update(_batches(3, step), torch.tensor(TARGETS))
    # Export member 1 as a normal agent: its next update equals the member's.
    agent = TQLAgent(OBS, ACT, config)
    agent.load_full_state(pop.member_state(1))
    _assert_member_equals_agent(pop, 1, agent, atol=0.0)
    batches = _batches(3, 5)
    noise = pop.sample_noise(batches)
    agent_metrics = agent.update(_member(batches, 1), TARGETS[1], _member(noise, 1))
    pop_metrics = pop.update(batches, torch.tensor(TARGETS), noise)
    _assert_metrics_equal(pop_metrics, 1, agent_metrics, atol=1e-12)
    _assert_member_equals_agent(pop, 1, agent, atol=1e-12)
    # Import an agent trained elsewhere (another step count) into member 0.
    torch.manual_seed(99)
    outsider = TQLAgent(OBS, ACT, config)
    outsider.update(_member(_batches(3, 7), 0), 1.0)
    pop.load_member_state(0, outsider.full_state())
    _assert_member_equals_agent(pop, 0, outsider, atol=0.0)
    assert pop.steps.tolist() == [1.0, 3.0, 3.0]
    noise = pop.sample_noise(batches)
    outsider_metrics = outsider.update(_member(batches, 0), TARGETS[0], _member(noise, 0))
    pop_metrics = pop.update(batches, torch.tensor(TARGETS), noise)
    _assert_metrics_equal(pop_metrics, 0, outsider_metrics, atol=1e-12)
    _assert_member_equals_agent(pop, 0, outsider, atol=1e-12)
    # A fresh agent (no Adam state yet) round-trips as step 0.
    fresh = TQLAgent(OBS, ACT, config)
    pop.load_member_state(2, fresh.full_state())
    assert pop.member_state(2)["optimizer"]["state"] == {}
    assert float(pop.steps[2]) == 0.0


def test_copy_member_copies_weights_moments_and_temperatures(float64):
    config = _config()
    pop = Population(OBS, ACT, config, 3, "cpu", SEEDS)
    for step in range(2):
        pop.update(_batches(3, step), torch.tensor(TARGETS))
    pop.copy_member(0, 2)
    a, b = pop.member_state(0), pop.member_state(2)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for index, entry in a["optimizer"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key])
    assert torch.equal(pop.state["temperatures.log_alpha"][0], pop.state["temperatures.log_alpha"][2])
    # With the same batch, noise and H̄ the copy then moves exactly like its source ...
    batches = _batches(3, 9, shared=True)
    noise = pop.sample_noise(batches)
    noise = {k: v[[0, 1, 0]] for k, v in noise.items()}
    metrics = pop.update(batches, torch.tensor([TARGETS[0], TARGETS[1], TARGETS[0]]), noise)
    for key, value in metrics.items():
        torch.testing.assert_close(value[2], value[0], atol=1e-12, rtol=0.0, msg=key)
    for name, value in pop.state.items():
        torch.testing.assert_close(value[2], value[0], atol=1e-12, rtol=0.0, msg=name)
    # ... and member 1 was not touched by the copy.
    assert not torch.equal(pop.state["critic.w_pos"][1], pop.state["critic.w_pos"][0])


def test_full_state_round_trip_resumes_identically(float64):
    config = _config()
    pop = Population(OBS, ACT, config, 3, "cpu", SEEDS)
    pop.update(_batches(3, 0), torch.tensor(TARGETS))
    saved = pop.full_state()
    clone = Population(OBS, ACT, config, 3, "cpu", [0, 1, 2])
    clone.load_full_state(saved)
    a = pop.update(_batches(3, 1), torch.tensor(TARGETS))  # default noise: generators restored
    b = clone.update(_batches(3, 1), torch.tensor(TARGETS))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for name in pop.state:
        assert torch.equal(pop.state[name], clone.state[name]), name


def test_bad_shapes_are_rejected():
    pop = Population(OBS, ACT, _config(), 2, "cpu", [0, 1])
    with pytest.raises(ValueError, match="target entropies"):
        pop.update(_batches(2, 0), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="seeds"):
        Population(OBS, ACT, _config(), 2, "cpu", [0])
    with pytest.raises(IndexError):
        pop.member_state(5)


def test_bad_backend_is_rejected():
    with pytest.raises(ValueError, match="backend 'jax' is not one of: native, vmap"):
        Population(OBS, ACT, _config(), 2, "cpu", [0, 1], backend="jax")
    with pytest.raises(ValueError, match="chunk_size"):
        Population(OBS, ACT, _config(), 2, "cpu", [0, 1], chunk_size=1, backend="native")


# ---------------------------------------------------------------- the native backend (tql.batched.forward)
# Options whose code paths differ: '0.03M' has ReLU Q heads, '0.03M-v1' GELU + LayerNorm heads.
NATIVE_OPTIONS = [
    {},
    {"size": "0.03M-v1"},
    {"q_agg": "min", "normalize_q_loss": True},
    {"temperature_sharing": "global", "entropy_reduction": "sum"},
    {"two_sided": True, "temperature_sharing": "layer"},
    {"entropy_control": False},
    {"actor_layer_norm": False},
    {"critic": "mlp", "actor_hidden": (16,)},
]


def _stacked(agents: list[TQLAgent]) -> dict[str, torch.Tensor]:
    """The agents' state stacked as ``Population.state``: leaves with grads where the agent's
    optimiser trains the tensor."""
    trained = {id(p) for group in agents[0].optimizer.param_groups for p in group["params"]}
    params = {n: p for n, p in agents[0].named_parameters()}
    return {name: torch.stack([a.state_dict()[name] for a in agents]).detach().clone()
            .requires_grad_(name in params and id(params[name]) in trained) for name in agents[0].state_dict()}


def _targets(config: AgentConfig) -> torch.Tensor:
    """Per-member H̄: ``[K, depth, 2]`` tables (numbers ``[K]`` for a critic without attention)."""
    if config.critic == "mlp":
        return torch.tensor(TARGETS, dtype=torch.float32)
    return torch.tensor(TARGETS, dtype=torch.float32).view(-1, 1, 1) * torch.tensor([[1.0, 0.8], [0.9, 0.6]])


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("overrides", NATIVE_OPTIONS)
def test_native_losses_metrics_and_gradients_equal_single_agents(float64, overrides, shared):
    config = _config(**overrides)
    agents = _agents(config)
    state, k = _stacked(agents), len(agents)
    batches, target = _batches(k, 0, shared), _targets(config)
    noises = [a.sample_noise(batches if shared else _member(batches, i), torch.Generator().manual_seed(i))
              for i, a in enumerate(agents)]
    noise = {key: torch.stack([n[key] for n in noises]) for key in noises[0]}
    loss, metrics = BatchedAgent(agents[0]).losses(state, batches, target, noise)
    assert loss.shape == (k,)
    loss.sum().backward()
    for i, agent in enumerate(agents):
        own_loss, own = agent.losses(batches if shared else _member(batches, i), target[i], noises[i])
        agent.optimizer.zero_grad(set_to_none=True)
        own_loss.backward()
        torch.testing.assert_close(loss[i], own_loss.detach(), rtol=1e-10, atol=1e-12)
        assert set(metrics) == set(own)
        for key, value in own.items():
            assert metrics[key][i].dtype == value.dtype, key
            torch.testing.assert_close(metrics[key][i], value, rtol=1e-10, atol=1e-12, msg=key)
        for name, p in agent.named_parameters():
            if state[name].requires_grad:
                torch.testing.assert_close(state[name].grad[i], p.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("overrides", NATIVE_OPTIONS)
def test_native_updates_equal_single_agent_updates(float64, overrides):
    """Parameters, Adam moments and metrics after a few updates (per-member batches, H̄ per
    member)."""
    _run_both(_config(**overrides), steps=2)


def test_native_measure_and_act_equal_vmap_float32():
    config = _config()
    pops = [Population(OBS, ACT, config, 3, "cpu", SEEDS, backend=b) for b in BACKENDS]
    for step in range(3):
        batches, noise = _batches(3, step), pops[0].sample_noise(_batches(3, step))
        metrics = [pop.update(batches, torch.tensor(TARGETS), noise) for pop in pops]
        for key in metrics[1]:
            torch.testing.assert_close(metrics[0][key], metrics[1][key], rtol=1e-5, atol=1e-5, msg=key)
    for name in pops[1].state:
        torch.testing.assert_close(pops[0].state[name], pops[1].state[name], rtol=1e-4, atol=5e-5, msg=name)
    held_out = _batches(3, 50, shared=True)
    measured = [pop.measure(held_out, torch.tensor(TARGETS), torch.Generator().manual_seed(0)) for pop in pops]
    for key in measured[1]:
        torch.testing.assert_close(measured[0][key], measured[1][key], rtol=1e-4, atol=1e-4, msg=key)
    obs, noise = held_out["observations"], torch.randn(3, B, ACT)
    torch.testing.assert_close(pops[0].act(obs, noise), pops[1].act(obs, noise), rtol=1e-4, atol=1e-4)


def test_native_bf16_follows_vmap_bf16():
    """bf16 autocast: the native backend keeps the same float32 islands as tql.model, so both
    backends agree to bf16 rounding."""
    config = _config(precision="bf16")
    pops = [Population(OBS, ACT, config, 3, "cpu", SEEDS, backend=b) for b in BACKENDS]
    batches = _batches(3, 0)
    noise = pops[0].sample_noise(batches)
    metrics = [pop.update(batches, torch.tensor(TARGETS), noise) for pop in pops]
    for key in ("critic/td_loss", "actor/bc_flow_loss", "actor/q_loss"):
        torch.testing.assert_close(metrics[0][key], metrics[1][key], rtol=2e-2, atol=1e-3, msg=key)
    torch.testing.assert_close(metrics[0]["entropies"], metrics[1]["entropies"], rtol=0.0, atol=1e-3)
    assert all(t.dtype == torch.float32 for t in pops[0].state.values())
    assert pops[0].act(batches["observations"]).dtype == torch.float32


def test_native_losses_trace_as_one_graph():
    """No host synchronisation or data-dependent shape in the native losses: torch.compile
    traces them whole (fullgraph; the aot_eager backend needs no C++ compiler), the
    precondition for capturing the update in a CUDA graph."""
    pop = Population(OBS, ACT, _config(), 3, "cpu", SEEDS)
    batches = _batches(3, 0)
    noise, target = pop.sample_noise(batches), pop._targets(TARGETS)

    def losses(state, batch, target, noise):
        return pop._native.losses(state, batch, target, noise)

    compiled = torch.compile(losses, fullgraph=True, backend="aot_eager")
    try:
        loss, metrics = compiled(pop.state, batches, target, noise)
    finally:
        torch._dynamo.reset()
    eager_loss, eager_metrics = losses(pop.state, batches, target, noise)
    torch.testing.assert_close(loss, eager_loss)
    for key, value in eager_metrics.items():
        torch.testing.assert_close(metrics[key], value, msg=key)


class _Sampler:
    """Draws held-out batches from fixed arrays with the caller's generator (as ReplaySampler)."""

    def __init__(self):
        self.data = _batches(1, 99, shared=True)

    def sample(self, size, generator):
        index = torch.randint(0, B, (size,), generator=generator)
        return {key: value[index] for key, value in self.data.items()}


def test_held_out_td_loss_draws_the_batch_then_the_target_actions_noise(float64):
    """Restated as it was first written, with ``TQLAgent.act`` drawing z' from the generator."""
    from tql.trainer import held_out_td_loss

    agent, sampler = _agents(_config())[0], _Sampler()
    got = held_out_td_loss(agent, sampler, torch.Generator().manual_seed(5), batch_size=B)
    generator = torch.Generator().manual_seed(5)
    batch = sampler.sample(B, generator)
    next_actions = agent.act(batch["next_observations"], generator)
    next_qs, _ = agent.target_critic(batch["next_observations"], next_actions)
    target = batch["rewards"] + agent.config.gamma * batch["masks"] * next_qs.mean(0)
    qs, _ = agent.critic(batch["observations"], batch["actions"])
    assert got == pytest.approx(float((qs - target).pow(2).mean()), abs=1e-12) and got > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_held_out_td_errors_equal_each_agents(float64, backend):
    from tql.trainer import held_out_td_error

    config = _config()
    pop = Population(OBS, ACT, config, 3, "cpu", SEEDS, backend=backend)
    pop.update(_batches(3, 0), TARGETS)  # critic and target critic apart
    batches, noise = _batches(3, 1), torch.randn(3, B, ACT)
    got = pop.held_out_td_errors(batches, noise)
    assert got.shape == (3,) and len(set(got.tolist())) == 3
    for i in range(3):
        want = held_out_td_error(pop.member_agent(i), _member(batches, i), noise[i])
        torch.testing.assert_close(got[i], want, atol=1e-10, rtol=0.0)


def test_compiled_native_losses_equal_eager_ones(monkeypatch):
    """A population compiles its native losses as an agent compiles its own (``compile=True``,
    or by default where it pays): the same metrics and parameters as the eager population, to
    float32 rounding, over two updates. Traced by dynamo and AOTAutograd as in a run, but run by
    the ``aot_eager`` backend: inductor's code generation takes ~100 s on 2 cores for this graph
    (its numbers are checked on the agent's loss, tests/test_graphs.py; its speed in
    python -m benchmarks.speed.update_speed --members)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    pops = [Population(OBS, ACT, _config(compile=compile_), 2, "cpu", SEEDS[:2]) for compile_ in (False, True)]
    assert not pops[0]._native_losses.compiled and pops[1]._native_losses.compiled
    for step in range(2):
        batches, targets = _batches(2, step), torch.tensor(TARGETS[:2])
        noise = pops[0].sample_noise(batches)
        want, got = pops[0].update(batches, targets, noise), pops[1].update(batches, targets, noise)
        for key in ("critic/td_loss", "critic/loss", "actor/bc_flow_loss", "actor/distill_loss", "entropies"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
    for name in pops[0].trainable:
        torch.testing.assert_close(pops[1].state[name], pops[0].state[name], rtol=1e-4, atol=5e-5, msg=name)
