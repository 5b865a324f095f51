"""Test environments for process-parallel evaluation, registered when this module is imported.

Worker processes are fresh interpreters: they know a test env only if they import the module
that registers it. The tasks here are ``ImportingTaskSpec`` instances, so unpickling one in a
worker imports this module (and registers the envs) before the worker calls gymnasium.make.

- ``ACTION_TASK``: obs = [reset seed, steps taken, 0]; reward = 1000 * a[0] + a[1], so an
  episode's return encodes every action it received; success (and termination) at a step
  that is a known function of the reset seed, so episodes have different lengths.
- ``CUBE_TASK``: OGBench cube-double with reward = a fixed projection of the observation,
  so an episode's return encodes its whole physical trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np

from tql.tasks import TaskSpec

ACTION_TIME_LIMIT = 12
CUBE_OBS_DIM, CUBE_ACT_DIM = 37, 5


@dataclass(frozen=True)
class ImportingTaskSpec(TaskSpec):
    """A TaskSpec whose pickle imports this module (see the module docstring)."""


ACTION_TASK = ImportingTaskSpec(name="tqltest-action-play-singletask-task1-v0", env_base="tqltest-action",
                                dataset_type="play", task_id=1, obs_dim=3, act_dim=2,
                                episode_length=ACTION_TIME_LIMIT)
CUBE_TASK = ImportingTaskSpec(name="tqltest-cubeobs-play-singletask-task2-v0", env_base="tqltest-cubeobs",
                              dataset_type="play", task_id=2, obs_dim=CUBE_OBS_DIM, act_dim=CUBE_ACT_DIM,
                              episode_length=500)


def action_success_step(reset_seed: int) -> int | None:
    """Step at which the action env succeeds and terminates; None = never."""
    return None if reset_seed % 3 == 0 else 3 + reset_seed % 5


class ActionEnv(gymnasium.Env):
    """See ``ACTION_TASK``."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.reset_seed, self.t = seed, 0
        return np.array([seed, 0.0, 0.0]), {}

    def step(self, action):
        self.t += 1
        success = self.t == action_success_step(self.reset_seed)
        reward = 1000.0 * float(action[0]) + float(action[1])
        return np.array([self.reset_seed, self.t, 0.0]), reward, success, False, {"success": success}


class ObservationReward(gymnasium.Wrapper):
    """reward = w . obs for a fixed random w: returns follow the trajectory, not just success."""

    weights = np.random.default_rng(0).normal(size=CUBE_OBS_DIM)

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(self.weights @ obs), terminated, truncated, info


def _make_cube_env():
    import ogbench  # noqa: F401  (registers the OGBench environments)

    return ObservationReward(gymnasium.make("cube-double-singletask-task2-v0"))


if ACTION_TASK.env_name not in gymnasium.registry:
    gymnasium.register(ACTION_TASK.env_name, entry_point=ActionEnv, max_episode_steps=ACTION_TIME_LIMIT)
if CUBE_TASK.env_name not in gymnasium.registry:
    gymnasium.register(CUBE_TASK.env_name, entry_point=_make_cube_env)
