"""Tests of tql.evaluation: batching, seeding, success counting, clipping, errors.

Two test environments are registered with gymnasium under ``tqltest-*`` ids:
- a scripted env whose success step is a known function of the reset seed, which records
  the actions it receives and whether it was closed (exact expectations, no physics);
- a real OGBench cube-double env wrapped so that it teleports the cubes onto their targets
  at a seed-dependent step: success is then detected by OGBench's own logic.
"""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest

from tql.errors import ConfigError
from tql.evaluation import (EnvPool, close_idle_envs, achieved_subtasks, episode_progress, episode_seed, evaluate, gained_from,
                            grading_goal, random_policy, run_episodes)
from tql.tasks import TaskSpec, get_task

# ---------------------------------------------------------------- scripted env
SCRIPTED_ID = "tqltest-scripted-singletask-task1-v0"
SCRIPTED_TIME_LIMIT = 10
SCRIPTED_TASK = TaskSpec(
    name="tqltest-scripted-play-singletask-task1-v0",
    env_base="tqltest-scripted",
    dataset_type="play",
    task_id=1,
    obs_dim=3,
    act_dim=2,
    episode_length=SCRIPTED_TIME_LIMIT,
)


def success_step(reset_seed: int) -> int | None:
    """Step at which the scripted env succeeds (and terminates); None = never."""
    return None if reset_seed % 3 == 2 else 2 + reset_seed % 4


class ScriptedEnv(gymnasium.Env):
    """obs = [reset seed, steps taken, 0]; reward -1 per step; success at success_step."""

    instances: list[ScriptedEnv] = []

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.actions: list[np.ndarray] = []
        self.closed = False
        ScriptedEnv.instances.append(self)

    def _obs(self):
        return np.array([self.reset_seed, self.t, 0.0])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.reset_seed, self.t = seed, 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        self.t += 1
        success = self.t == success_step(self.reset_seed)
        return self._obs(), -1.0, success, False, {"success": success}

    def close(self):
        self.closed = True


# ---------------------------------------------------------------- teleporting real env
TELEPORT_ID = "tqltest-teleport-singletask-task1-v0"
TELEPORT_TASK = TaskSpec(
    name="tqltest-teleport-play-singletask-task1-v0",
    env_base="tqltest-teleport",
    dataset_type="play",
    task_id=1,
    obs_dim=37,
    act_dim=5,
    episode_length=500,
)


def teleport_step(reset_seed: int) -> int | None:
    return 3 + reset_seed % 3 if reset_seed % 2 == 0 else None


class TeleportWrapper(gymnasium.Wrapper):
    """After step teleport_step(seed), put every cube exactly on its target (at rest)."""

    def reset(self, *, seed=None, options=None):
        self.reset_seed, self.t = seed, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        out = self.env.step(action)
        self.t += 1
        if self.t == teleport_step(self.reset_seed):
            self._teleport()
        return out

    def _teleport(self):
        import mujoco

        env = self.env.unwrapped  # OGBench internals: cube joints and target mocaps
        for i, mocap_id in enumerate(env._cube_target_mocap_ids):
            joint = env._data.joint(f"object_joint_{i}")
            joint.qpos[:3] = env._data.mocap_pos[mocap_id]
            joint.qpos[3:] = [1.0, 0.0, 0.0, 0.0]
            joint.qvel[:] = 0.0
        mujoco.mj_forward(env._model, env._data)


def _make_teleport_env():
    import ogbench  # noqa: F401

    return TeleportWrapper(gymnasium.make("cube-double-singletask-task1-v0"))


if SCRIPTED_ID not in gymnasium.registry:
    gymnasium.register(SCRIPTED_ID, entry_point=ScriptedEnv, max_episode_steps=SCRIPTED_TIME_LIMIT)
if TELEPORT_ID not in gymnasium.registry:
    gymnasium.register(TELEPORT_ID, entry_point=_make_teleport_env)


# ---------------------------------------------------------------- helpers
class Recorder:
    """Policy wrapper that records every batch it is called with."""

    def __init__(self, policy):
        self.policy, self.batches = policy, []

    def __call__(self, obs):
        self.batches.append(obs.copy())
        return self.policy(obs)

    @property
    def sizes(self):
        return [len(b) for b in self.batches]


def zero_policy(act_dim):
    return lambda obs: np.zeros((len(obs), act_dim), np.float32)


def linear_policy(obs_dim, act_dim, seed=0):
    """Deterministic function of the observation, computed row by row so that a row's
    action is bit-identical whatever the batch size (batched BLAS could round differently)."""
    w = np.random.default_rng(seed).normal(size=(act_dim, obs_dim)).astype(np.float32)
    return lambda obs: np.stack([np.tanh(w @ o) for o in obs])


def expected_scripted(seed, episodes, limit):
    """Independent expectation: (successes, lengths) per episode of the scripted env."""
    successes, lengths = [], []
    for i in range(episodes):
        k = success_step(episode_seed(seed, i))
        done_by_success = k is not None and k <= limit
        successes.append(done_by_success)
        lengths.append(k if done_by_success else limit)
    return successes, lengths


@pytest.fixture(autouse=True)
def _reset_instances():
    close_idle_envs()  # no env left by another test's pool
    ScriptedEnv.instances.clear()


# ---------------------------------------------------------------- scripted-env tests
@pytest.mark.parametrize("num_envs", [1, 3, 16])
@pytest.mark.parametrize("max_steps", [None, 4, 100])
def test_success_counting_and_lengths_scripted(num_envs, max_steps):
    seed, episodes = 2, 9
    rec = Recorder(zero_policy(2))
    done = []
    res = evaluate(rec, SCRIPTED_TASK, episodes, seed=seed, num_envs=num_envs,
                   max_steps=max_steps, progress=done.append)
    # max_steps=None and 100 both end at the env's TimeLimit (10): max_steps never lengthens.
    limit = min(max_steps or SCRIPTED_TIME_LIMIT, SCRIPTED_TIME_LIMIT)
    successes, lengths = expected_scripted(seed, episodes, limit)
    assert 0 < sum(successes) < episodes  # the schedule mixes both outcomes
    assert res.successes == successes
    assert res.lengths == lengths
    assert res.success_rate == pytest.approx(sum(successes) / episodes)
    assert res.returns == [-float(n) for n in lengths]
    assert res.env_steps == sum(lengths) == sum(rec.sizes)
    assert done == list(range(1, episodes + 1))
    # Independent check from what the policy saw: rows per reset seed = episode length,
    # and a successful episode stopped at its success step (obs[1] counts steps taken).
    seen = {}
    for batch in rec.batches:
        for s, t, _ in batch:
            seen.setdefault(int(s), []).append(int(t))
    assert sorted(seen) == sorted(episode_seed(seed, i) for i in range(episodes))
    for i in range(episodes):
        assert seen[episode_seed(seed, i)] == list(range(lengths[i]))


def test_batch_sizes_shrink_at_the_end():
    rec = Recorder(zero_policy(2))
    res = evaluate(rec, SCRIPTED_TASK, episodes=7, num_envs=3, max_steps=8)
    assert len(ScriptedEnv.instances) == 3  # envs are created once and reused
    assert rec.sizes[0] == 3
    assert all(a >= b for a, b in zip(rec.sizes, rec.sizes[1:]))  # never grows back
    assert rec.sizes[-1] < 3  # the tail runs only the envs still busy
    assert sum(rec.sizes) == res.env_steps
    assert all(b.dtype == np.float32 and b.shape[1] == 3 for b in rec.batches)


def test_default_num_envs_is_min_of_episodes_and_16():
    rec = Recorder(zero_policy(2))
    evaluate(rec, SCRIPTED_TASK, episodes=5, max_steps=2)
    assert rec.sizes[0] == 5 and len(ScriptedEnv.instances) == 5


def test_actions_are_clipped_before_env_step():
    raw = np.array([[3.0, -0.5], [-7.0, 2.0]], np.float32)

    def policy(obs):
        return np.resize(raw, (len(obs), 2))

    evaluate(policy, SCRIPTED_TASK, episodes=2, num_envs=2, max_steps=3)
    sent = np.concatenate([np.stack(e.actions) for e in ScriptedEnv.instances])
    assert sent.min() >= -1.0 and sent.max() <= 1.0
    assert {tuple(a) for a in sent.tolist()} <= {(1.0, -0.5), (-1.0, 1.0)}


def test_envs_closed_also_on_error():
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda obs: np.zeros((len(obs), 3)), SCRIPTED_TASK, episodes=3, num_envs=2)
    assert ScriptedEnv.instances and all(e.closed for e in ScriptedEnv.instances)
    ScriptedEnv.instances.clear()
    evaluate(zero_policy(2), SCRIPTED_TASK, episodes=3, num_envs=2, max_steps=2)
    kept = list(ScriptedEnv.instances)  # a pool that ends well leaves its envs for the next one
    assert len(kept) == 2 and not any(e.closed for e in kept)
    evaluate(zero_policy(2), SCRIPTED_TASK, episodes=3, num_envs=3, max_steps=2)
    assert ScriptedEnv.instances[:2] == kept and len(ScriptedEnv.instances) == 3  # took both, built one
    close_idle_envs()
    assert all(e.closed for e in ScriptedEnv.instances)


def test_envs_another_pool_ran_give_the_episodes_of_fresh_ones():
    """A pool's envs go to the next pool of the process: an episode never depends on what its
    env ran before, on a real OGBench env too (its reset and action sampler are seeded)."""
    task = get_task("cube-double-play-singletask-task1-v0")
    policy = lambda obs: np.tile(np.linspace(-0.8, 0.8, task.act_dim, dtype=np.float32), (len(obs), 1))  # noqa: E731
    with EnvPool(task.env_name, 2) as pool:
        fresh = run_episodes(policy, pool, task, episodes=3, seed=5, max_steps=40)
        envs = list(pool.envs)
        run_episodes(lambda obs: -policy(obs), pool, task, episodes=2, seed=9, max_steps=60)
    with EnvPool(task.env_name, 2) as pool:
        assert sorted(map(id, pool.envs)) == sorted(map(id, envs))  # the same two envs, reused
        reused = run_episodes(policy, pool, task, episodes=3, seed=5, max_steps=40)
    assert reused.returns == fresh.returns and reused.lengths == fresh.lengths  # bit for bit
    assert reused.successes == fresh.successes and reused.subtasks == fresh.subtasks
    assert reused.start_subtasks == fresh.start_subtasks


def test_non_finite_actions_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(lambda obs: np.full((len(obs), 2), np.nan), SCRIPTED_TASK, episodes=1)


def test_pool_reuse_gives_same_results():
    with EnvPool(SCRIPTED_ID, 2) as pool:
        a = run_episodes(zero_policy(2), pool, SCRIPTED_TASK, episodes=5, seed=1)
        b = run_episodes(zero_policy(2), pool, SCRIPTED_TASK, episodes=5, seed=1)
    assert (a.successes, a.lengths, a.returns) == (b.successes, b.lengths, b.returns)
    assert len(ScriptedEnv.instances) == 2


def test_to_dict_is_json_serialisable():
    res = evaluate(zero_policy(2), SCRIPTED_TASK, episodes=3, max_steps=5)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["task"] == SCRIPTED_TASK.name and d["episodes"] == 3
    assert set(d) == {"task", "episodes", "success_rate", "successes", "returns", "lengths",
                      "env_steps", "seconds", "progress", "subtasks", "start_subtasks", "gained"}
    # a test double outside OGBench's families: ungraded
    assert d["progress"] == d["subtasks"] == d["start_subtasks"] == d["gained"] == []


@pytest.mark.parametrize("kwargs", [
    {"episodes": 0}, {"episodes": -3}, {"episodes": 2.5},
    {"episodes": 2, "num_envs": 0}, {"episodes": 2, "max_steps": 0},
])
def test_invalid_counts_raise_config_error(kwargs):
    with pytest.raises(ConfigError) as err:
        evaluate(zero_policy(2), SCRIPTED_TASK, **kwargs)
    assert "\n" not in str(err.value) and ">= 1" in str(err.value)
    assert not ScriptedEnv.instances  # refused before creating any env


def test_random_policy():
    pol = random_policy(5, seed=3)
    a = pol(np.zeros((4, 37), np.float32))
    assert a.shape == (4, 5) and a.dtype == np.float32
    assert a.min() >= -1 and a.max() <= 1 and len(np.unique(a)) == a.size
    np.testing.assert_array_equal(a, random_policy(5, seed=3)(np.zeros((4, 37))))


# ---------------------------------------------------------------- real OGBench envs
def test_real_env_results_independent_of_num_envs():
    task = get_task("cube-double-play-singletask-task2-v0")
    policy = linear_policy(task.obs_dim, task.act_dim)
    rec1, rec3 = Recorder(policy), Recorder(policy)
    one = evaluate(rec1, task, episodes=4, seed=7, num_envs=1, max_steps=30)
    three = evaluate(rec3, task, episodes=4, seed=7, num_envs=3, max_steps=30)
    assert one.successes == three.successes
    assert one.returns == three.returns
    assert one.lengths == three.lengths == [30] * 4
    assert one.env_steps == three.env_steps == 120
    assert rec1.sizes == [1] * 120 and rec3.sizes[0] == 3
    # Returns are coarse (-2 per step until a cube sits on its target), so also compare the
    # trajectories: the same observation rows, bit for bit, only batched differently.
    rows = lambda rec: sorted(r.tobytes() for b in rec.batches for r in b)  # noqa: E731
    assert rows(rec1) == rows(rec3)
    rec_other = Recorder(policy)
    evaluate(rec_other, task, episodes=1, seed=8, num_envs=1, max_steps=2)
    assert not np.array_equal(rec_other.batches[0], rec1.batches[0])  # another seed differs


def test_real_env_success_detected_and_terminates_early():
    max_steps, episodes, seed = 15, 4, 0
    res = evaluate(zero_policy(5), TELEPORT_TASK, episodes, seed=seed, num_envs=2,
                   max_steps=max_steps)
    for i in range(episodes):
        k = teleport_step(episode_seed(seed, i))
        if k is None:
            assert not res.successes[i] and res.lengths[i] == max_steps
        else:
            # OGBench single-task envs compute success before the action ('pre' timing) and
            # terminate on it: the episode ends one or two steps after the teleport.
            assert res.successes[i] and k < res.lengths[i] <= k + 2
    assert res.success_rate == 0.5
    assert res.env_steps == sum(res.lengths)


# ---------------------------------------------------------------- progress
GRADED_TASKS = ("cube-double-play-singletask-task2-v0", "scene-play-singletask-task2-v0",
                "puzzle-3x3-play-singletask-task1-v0")


def test_episode_progress_is_the_fraction_of_subtasks_the_last_reward_says():
    assert episode_progress(0.0, 2) == 1.0  # success: reward 0
    assert episode_progress(-1.0, 2) == 0.5
    assert episode_progress(-3.0, 5) == pytest.approx(0.4)
    assert episode_progress(-1.0, 1) == 0.0 and episode_progress(0.0, 1) == 1.0  # cube-single: its success


def _goal_and_state(name: str):
    """A task's goal and a reset state of its env (qpos, button_states) to edit by hand."""
    from tql.envs import make_env

    env = make_env(get_task(name).env_name)
    try:
        _, info = env.reset(seed=0)
        return grading_goal(get_task(name), env), {k: np.array(info[k]) for k in ("qpos", "button_states") if k in info}
    finally:
        env.close()


def _place_cube(state: dict, goal, cube: int, at_goal: bool) -> None:
    start = 14 + 7 * cube
    state["qpos"][start:start + 3] = goal.cube_xyzs[cube] + (0.0 if at_goal else 0.2)


@pytest.mark.parametrize("done", [(), (0,), (1,), (0, 1)])
def test_cube_subtasks_from_a_hand_built_final_state(done):
    goal, state = _goal_and_state("cube-double-play-singletask-task2-v0")
    for cube in range(2):
        _place_cube(state, goal, cube, cube in done)
    assert achieved_subtasks(goal, state) == [cube in done for cube in range(2)]


def test_scene_subtasks_from_a_hand_built_final_state():
    """Scene's subtasks, in OGBench's order: its cube, its two buttons, the drawer, the window."""
    goal, state = _goal_and_state("scene-play-singletask-task2-v0")
    _place_cube(state, goal, 0, at_goal=False)
    state["button_states"] = np.array([goal.button_states[0], 1 - goal.button_states[1]])
    slides = 14 + 7 * goal.num_cubes + goal.num_buttons
    state["qpos"][slides] = goal.drawer_pos  # drawer at its target
    state["qpos"][slides + 1] = goal.window_pos + 0.5  # window far from it
    assert achieved_subtasks(goal, state) == [False, True, False, True, False]


def test_puzzle_subtasks_from_a_hand_built_final_state():
    goal, state = _goal_and_state("puzzle-3x3-play-singletask-task1-v0")
    flipped = {1, 4, 8}
    state["button_states"] = np.array([1 - b if i in flipped else b for i, b in enumerate(goal.button_states)])
    assert achieved_subtasks(goal, state) == [i not in flipped for i in range(9)]


@pytest.mark.parametrize("name", GRADED_TASKS)
def test_progress_from_the_reward_agrees_with_the_subtasks_from_the_state(name):
    """Two independent readings of an episode's end: 1 + r/N from OGBench's reward, and the
    fraction of subtasks our relabelling checks find achieved in the last state."""
    task = get_task(name)
    result = evaluate(random_policy(task.act_dim, 0), task, episodes=3, max_steps=25)
    assert len(result.progress) == len(result.subtasks) == 3
    for fraction, achieved in zip(result.progress, result.subtasks):
        assert fraction == pytest.approx(sum(achieved) / len(achieved))
    assert result.mean_progress == pytest.approx(sum(result.progress) / 3)
    assert result.subtask_rates == [sum(column) / 3 for column in zip(*result.subtasks)]


# ---------------------------------------------------------------- progress from the start state
def test_gained_counts_only_subtasks_the_episode_changed_to_done():
    assert gained_from([True, False], [True, True]) == 1.0  # the one open subtask done: all it could gain
    assert gained_from([True, False], [True, False]) == 0.0  # nothing changed
    assert gained_from([False, False, False], [True, False, True]) == pytest.approx(2 / 3)
    assert gained_from([True, False, False], [False, True, False]) == 0.5  # undoing a done one costs nothing here
    assert gained_from([True, True], [True, True]) == 0.0  # nothing was left to gain
    with pytest.raises(ValueError, match="start has 2 subtasks, end 3"):
        gained_from([True, False], [True, False, True])


@pytest.mark.parametrize("name", ["cube-double-play-singletask-task1-v0", "scene-play-singletask-task1-v0"])
def test_a_policy_that_does_nothing_gains_nothing_where_progress_credits_the_start(name):
    """cube-double task 1 and scene task 1 start with subtasks done: progress credits them to
    any policy, progress from the start state does not."""
    task = get_task(name)
    result = evaluate(zero_policy(task.act_dim), task, episodes=3, max_steps=20)
    assert result.mean_progress > 0.0  # what today's progress gives a do-nothing policy
    assert result.gained == [0.0, 0.0, 0.0] and result.mean_gained == 0.0
    for start, end, fraction in zip(result.start_subtasks, result.subtasks, result.progress):
        assert start == end and any(start)  # nothing moved; something was done from the start
        assert fraction == pytest.approx(sum(start) / len(start))


def test_gained_is_one_for_an_episode_that_succeeds_from_an_open_start():
    res = evaluate(zero_policy(5), TELEPORT_TASK, 4, seed=0, num_envs=2, max_steps=15)
    assert any(res.successes)
    for success, start, gained in zip(res.successes, res.start_subtasks, res.gained):
        assert gained == (gained_from(start, [True] * len(start)) if success else 0.0)
        if success and not all(start):
            assert gained == 1.0
