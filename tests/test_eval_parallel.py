"""Process-parallel evaluation (tql.eval_workers): the same episodes, successes, returns and
lengths as in-process evaluation, whatever the number of worker processes.

Returns are made to carry the evidence: in the action env an episode's return encodes every
action it received, in the cube env its whole trajectory (tests/eval_parallel_envs.py).
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from tests.eval_parallel_envs import ACTION_TASK, CUBE_TASK, action_success_step
from tql.agent import AgentConfig, TQLAgent
from tql.errors import ConfigError
from tql.eval_workers import (ActorPolicy, EvalRequest, PolicyEvaluator, check_eval_workers, deal_requests,
                              parse_eval_workers, resolve_eval_workers, split_episodes)
from tql.evaluation import EnvPool, EpisodeNoise, EvalResult, episode_seed, merge_results, run_episodes
from tql.trainer import TrainConfig


def tiny_actor(task, hidden=(16, 16), seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TQLAgent(task.obs_dim, task.act_dim, AgentConfig(actor_hidden=hidden), torch.device("cpu")).actor


def same_episodes(a: EvalResult, b: EvalResult) -> None:
    assert a.successes == b.successes
    assert a.returns == b.returns  # exact: the same actions (and trajectories), bit for bit
    assert a.lengths == b.lengths
    assert a.env_steps == b.env_steps and a.success_rate == b.success_rate


# ---------------------------------------------------------------- per-episode noise
@pytest.mark.parametrize("num_envs", [1, 3])
def test_each_episode_draws_its_own_noise(num_envs):
    """Episode i's actions are its own generator's draws, in order, however envs are shared."""
    seed, noise_seed, episodes = 4, 11, 7
    with EnvPool(ACTION_TASK.env_name, num_envs) as pool:
        result = run_episodes(lambda obs, z: z, pool, ACTION_TASK, episodes, seed,
                              noise=EpisodeNoise(noise_seed, ACTION_TASK.act_dim))
    for i in range(episodes):
        rng = np.random.default_rng([noise_seed, i])  # independent restatement of EpisodeNoise
        success_at = action_success_step(episode_seed(seed, i))
        length = success_at or ACTION_TASK.episode_length
        actions = [np.clip(rng.standard_normal(2).astype(np.float32), -1, 1) for _ in range(length)]
        assert result.lengths[i] == length
        assert result.successes[i] == (success_at is not None)
        assert result.returns[i] == sum(1000.0 * float(a[0]) + float(a[1]) for a in actions)


def test_actor_policy_is_the_agents_one_step_policy():
    actor = tiny_actor(CUBE_TASK, hidden=(32, 32))
    obs = np.random.default_rng(1).normal(size=(5, CUBE_TASK.obs_dim)).astype(np.float32)
    z = np.random.default_rng(2).normal(size=(5, CUBE_TASK.act_dim))
    with torch.no_grad():
        expected = actor(torch.from_numpy(obs), torch.from_numpy(z).float()).clamp(-1, 1).numpy()
    actions = ActorPolicy(actor)(obs, z)
    assert actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    # Row by row or batched: float64 then rounded to float32 gives the same bits.
    rows = np.concatenate([ActorPolicy(actor)(obs[k:k + 1], z[k:k + 1]) for k in range(5)])
    np.testing.assert_array_equal(rows, actions)
    again = ActorPolicy.from_bytes(ActorPolicy(actor).to_bytes())(obs, z)
    np.testing.assert_array_equal(again, actions)


# ---------------------------------------------------------------- processes vs in-process
def test_workers_match_in_process_on_the_action_env():
    actor, episodes, seed = tiny_actor(ACTION_TASK), 7, 2
    with PolicyEvaluator(ACTION_TASK, episodes, workers=1) as here:
        local = [here.run(actor, episodes, seed, noise_seed=n) for n in (5, 6)]
    # Sized for 4 episodes: 2 envs per worker, so each worker reuses its envs for 7 episodes.
    with PolicyEvaluator(ACTION_TASK, 4, workers=2) as spread:
        first = spread.run(actor, episodes, seed, noise_seed=5)
        processes = [w.process for w in spread._workers]
        second = spread.run(actor, episodes, seed, noise_seed=6)  # the same processes, kept
        assert [w.process for w in spread._workers] == processes and all(p.is_alive() for p in processes)
        one = spread.run(actor, 1, seed, noise_seed=5)  # fewer episodes than workers
        wrong_actor = tiny_actor(CUBE_TASK)  # expects 42 inputs, gets 5: the worker's error comes back
        with pytest.raises(RuntimeError, match="evaluation worker 0 failed"):
            spread.run(wrong_actor, episodes, seed, noise_seed=5)
        assert not spread._workers  # closed after a failure: the next run starts afresh
    assert not any(p.is_alive() for p in processes)
    same_episodes(local[0], first)
    same_episodes(local[1], second)
    assert local[0].returns != local[1].returns  # the noise seed matters
    assert 0 < sum(first.successes) < episodes and len(set(first.lengths)) > 1
    assert one.returns == first.returns[:1] and one.episodes == 1


def test_workers_match_in_process_on_a_real_cube_env():
    actor, episodes, seed, max_steps = tiny_actor(CUBE_TASK, hidden=(32, 32)), 2, 1, 25
    with PolicyEvaluator(CUBE_TASK, episodes, workers=1) as here:
        local = here.run(actor, episodes, seed, noise_seed=3, max_steps=max_steps)
    with PolicyEvaluator(CUBE_TASK, episodes, workers=2) as spread:
        spread_result = spread.run(actor, episodes, seed, noise_seed=3, max_steps=max_steps)
    same_episodes(local, spread_result)
    assert local.lengths == [max_steps] * episodes
    assert len(set(local.returns)) == episodes  # different trajectories per episode


def test_many_policies_at_once_give_each_policys_own_results():
    """A batch's members evaluated together (episodes of several actors dealt over the same
    processes, shares crossing actor boundaries) give what each gives alone, in request order."""
    actors = [tiny_actor(ACTION_TASK, seed=s) for s in range(3)]
    asks = [(actors[0], 3, 2, 5), (actors[1], 1, 4, 6), (actors[2], 5, 2, 7), (actors[0], 2, 9, 5)]
    with PolicyEvaluator(ACTION_TASK, 3, workers=1) as here:
        alone = [here.run(actor, episodes, seed, noise_seed=n) for actor, episodes, seed, n in asks]
        assert [r.returns for r in here.run_many([EvalRequest.of(*a[:3], noise_seed=a[3]) for a in asks])] == \
            [r.returns for r in alone]
    with PolicyEvaluator(ACTION_TASK, 3, workers=2) as spread:
        requests = [EvalRequest.of(actor, episodes, seed, noise_seed=n) for actor, episodes, seed, n in asks]
        together = spread.run_many(requests)
        assert spread.run_many([]) == []
    for one, many in zip(alone, together):
        same_episodes(one, many)
    assert len({tuple(r.returns) for r in alone}) == len(asks)  # the requests differ: the order is checked


def test_an_evaluator_of_several_members_may_use_more_processes():
    assert PolicyEvaluator(ACTION_TASK, 1, workers=2).workers == 1  # one episode: one process
    assert PolicyEvaluator(ACTION_TASK, 1, workers=2, members=3).workers == 2
    assert PolicyEvaluator(ACTION_TASK, 2, workers=16, members=3).workers == 6
    with pytest.raises(ConfigError, match="members must be an integer >= 1, got 0"):
        PolicyEvaluator(ACTION_TASK, 2, workers=2, members=0)


def test_a_request_keeps_the_actor_as_it_was_asked():
    actor = tiny_actor(ACTION_TASK)
    request = EvalRequest.of(actor, 2, 0, noise_seed=1)
    with torch.no_grad():
        for parameter in actor.parameters():
            parameter.add_(1.0)
    with PolicyEvaluator(ACTION_TASK, 2) as here:
        asked, changed = here.run_many([request, EvalRequest.of(actor, 2, 0, noise_seed=1)])
        before = here.run(tiny_actor(ACTION_TASK), 2, 0, noise_seed=1)
    assert asked.returns == before.returns != changed.returns


# ---------------------------------------------------------------- splitting and merging
def test_split_and_merge_restore_episode_order():
    shares = split_episodes(7, 3)
    assert sorted(i for share in shares for i in share) == list(range(7))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert split_episodes(2, 5) == [[0], [1]]

    def part(numbers):
        return numbers, EvalResult("t", len(numbers), 0.0, [i % 2 == 0 for i in numbers], [float(i) for i in numbers],
                                   [10 + i for i in numbers], sum(10 + i for i in numbers), 0.0)

    merged = merge_results(ACTION_TASK, [part(s) for s in shares], seconds=1.5)
    assert merged.returns == [float(i) for i in range(7)]
    assert merged.lengths == [10 + i for i in range(7)] and merged.env_steps == sum(merged.lengths)
    assert merged.success_rate == pytest.approx(4 / 7) and merged.seconds == 1.5
    with pytest.raises(ValueError, match="not 0..3"):
        merge_results(ACTION_TASK, [part([0, 1]), part([3, 4])], seconds=0.0)


def test_dealing_several_requests_balances_the_episodes():
    counts = [8] * 16  # a batch of 16 members, 8 episodes each, over 15 processes
    shares = deal_requests(counts, 15)
    sizes = [sum(len(numbers) for _, numbers in share) for share in shares]
    assert len(shares) == 15 and max(sizes) - min(sizes) <= 1 and sum(sizes) == 128
    dealt = sorted((r, n) for share in shares for r, numbers in share for n in numbers)
    assert dealt == [(r, n) for r in range(16) for n in range(8)]  # every episode once
    assert all(len({r for r, _ in share}) == len(share) for share in shares)  # one part per request
    assert all(len(share) <= 3 for share in shares)  # cut in order: a share spans few actors
    assert deal_requests([2, 1], 8) == [[(0, [0])], [(0, [1])], [(1, [0])]]  # no empty share
    assert deal_requests([5], 2) == [[(0, [0, 2, 4])], [(0, [1, 3])]]  # one request: split_episodes


# ---------------------------------------------------------------- how many processes
def test_auto_is_in_process_on_a_cpu_and_uses_spare_cores_on_cuda(monkeypatch):
    import tql.eval_workers as eval_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # device objects only: no GPU needed
    monkeypatch.setattr(eval_workers, "available_cores", lambda: 16)
    assert resolve_eval_workers("auto", cpu, 50) == 1
    assert resolve_eval_workers("auto", cuda, 50) == 15  # one core stays with the training
    assert resolve_eval_workers("auto", cuda, 8) == 8
    assert resolve_eval_workers("auto", cuda, 50, threads=4) == 3  # a run's share of the machine
    monkeypatch.setattr(eval_workers, "available_cores", lambda: 64)
    assert resolve_eval_workers("auto", cuda, 50) == 16
    monkeypatch.setattr(eval_workers, "available_cores", lambda: 1)
    assert resolve_eval_workers("auto", cuda, 50) == 1
    assert resolve_eval_workers(4, cpu, 50) == 4 and resolve_eval_workers(4, cpu, 2) == 2


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "many", None])
def test_bad_eval_workers_are_refused(bad):
    with pytest.raises(ConfigError, match=f"eval_workers must be 'auto' or an integer >= 1, got {bad!r}"):
        check_eval_workers(bad)


@pytest.mark.parametrize("bad", [0, "many"])
def test_train_config_refuses_bad_eval_workers(bad):
    with pytest.raises(ConfigError, match=f"eval_workers .* got {bad!r}"):
        TrainConfig.from_profile("cube-double-play-singletask-task2-v0", "smoke", eval_workers=bad)


def test_parse_eval_workers():
    assert parse_eval_workers("auto") == "auto" and parse_eval_workers(" 3 ") == 3
    for text, shown in (("0", "0"), ("-1", "-1"), ("x", "'x'")):
        with pytest.raises(ConfigError, match=f"got {shown}$"):
            parse_eval_workers(text)


# ---------------------------------------------------------------- a training run's evaluations
def test_a_run_evaluating_in_workers_records_the_in_process_results(tiny_data_dir, tmp_path):
    from tests.conftest import TINY_TASK
    from tql.trainer import Trainer, eval_record, policy_episodes

    config = TrainConfig.from_profile(TINY_TASK, "smoke", {"batch_size": 16}, steps=10, eval_every=10,
                                      eval_episodes=3, eval_max_steps=5, log_every=5, data_dir=str(tiny_data_dir),
                                      eval_workers=2)
    trainer = Trainer(config, tmp_path, progress=False)
    result = trainer.run()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("tql-eval")]  # closed
    with PolicyEvaluator(config.spec, config.eval_episodes, workers=1) as here:
        again = policy_episodes(trainer.agent, here, config, config.eval_episodes, config.seed, trainer.step)
    assert result.evals == [eval_record(10, again)]
