"""The update's two branches at the same time on a CPU (tql.cores, TQLAgent(concurrent_branches=True)):
the plan from the core count, the same numbers as one backward of the whole loss, errors and
copies, and the trainer's choice."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tql.agent import AgentConfig, TQLAgent
from tql.compiled import CompiledOrEager
from tql.cores import CorePlan, available_cpus, branch_plan
from tql.trainer import TrainConfig, Trainer

from tests.conftest import TINY_TASK

OBS, ACT = 6, 2


def _config(**overrides) -> AgentConfig:
    return AgentConfig(size="0.03M", actor_hidden=(16, 16), batch_size=8, flow_steps=3).replace(**overrides)


def _agent(concurrent: bool, **overrides) -> TQLAgent:
    torch.manual_seed(0)
    return TQLAgent(OBS, ACT, _config(**overrides), total_steps=50, concurrent_branches=concurrent)


def _batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return {"observations": torch.randn(8, OBS, generator=g), "actions": torch.rand(8, ACT, generator=g) * 2 - 1,
            "next_observations": torch.randn(8, OBS, generator=g), "rewards": -torch.rand(8, generator=g),
            "masks": torch.ones(8)}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_branch_plan_gives_each_branch_half_the_cores_of_a_cpu():
    assert branch_plan("cpu", 2) == CorePlan(threads=1, concurrent_branches=True)
    assert branch_plan("cpu", 5) == CorePlan(threads=2, concurrent_branches=True)
    assert branch_plan("cpu", 1) == CorePlan(threads=1, concurrent_branches=False)
    assert branch_plan("cuda", 8) == CorePlan(threads=8, concurrent_branches=False)
    assert branch_plan("cpu", 5).cores == 4 and branch_plan("cpu").cores <= available_cpus()


def test_concurrent_branches_compute_what_one_backward_of_the_whole_loss_does():
    """Same initialisation, batches, noise and H̄: every metric and every parameter after each
    of four updates agrees to float32 rounding (the gradients reach disjoint parameters)."""
    single, branched = _agent(False), _agent(True)
    target = torch.full((2, 2), 1.2)
    for step in range(4):
        batch = _batch(step)
        noise = single.sample_noise(batch, torch.Generator().manual_seed(10 + step))
        want, got = single.update(batch, target, noise), branched.update(batch, target, noise)
        assert list(got) == list(want)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7, msg=key)
        for (name, p), q in zip(single.named_parameters(), branched.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
    assert branched._branch_pool is not None  # the policy branch ran on its own thread
    assert single._branch_pool is None


def test_a_failing_policy_branch_raises_in_the_caller_and_the_next_update_runs():
    agent = _agent(True)
    agent.update(_batch(0), 1.0)
    agent.update(_batch(1), 1.0)  # concurrent from the second update on
    policy = agent._fns["policy_losses"]

    def broken(*args):
        raise FloatingPointError("policy branch broke")

    agent._fns["policy_losses"] = CompiledOrEager(broken, compile_=False)
    with pytest.raises(FloatingPointError, match="policy branch broke"):
        agent.update(_batch(2), 1.0)
    agent._fns["policy_losses"] = policy
    assert torch.isfinite(agent.update(_batch(3), 1.0)["actor/q_loss"])


def test_an_agent_whose_branch_thread_runs_copies_and_pickles():
    agent = _agent(True)
    for step in range(2):
        agent.update(_batch(step), 1.0)
    for twin in (copy.deepcopy(agent), pickle.loads(pickle.dumps(agent))):
        assert twin._branch_pool is None and twin.concurrent_branches
        noise = agent.sample_noise(_batch(5), torch.Generator().manual_seed(1))
        state = copy.deepcopy(agent.full_state())
        want = agent.update(_batch(5), 1.0, noise)
        got = twin.update(_batch(5), 1.0, noise)
        torch.testing.assert_close(got["critic/loss"], want["critic/loss"])
        agent.load_full_state(state)


def test_the_trainer_runs_two_branches_on_two_cpu_cores_and_one_on_one(tiny_data_dir, tmp_path, restore_threads):
    for threads, plan in ((2, CorePlan(1, True)), (1, CorePlan(1, False))):
        config = TrainConfig.from_profile(TINY_TASK, "smoke", steps=2, device="cpu", threads=threads,
                                          data_dir=str(tiny_data_dir))
        trainer = Trainer(config, tmp_path / f"run{threads}", progress=False)
        assert trainer.cores == plan and trainer.agent.concurrent_branches == plan.concurrent_branches
        assert torch.get_num_threads() == plan.threads
