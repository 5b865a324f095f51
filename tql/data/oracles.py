"""One episode as OGBench's scripted oracles collect it, in a data-collection env.

* reset the multi-task env in ``mode='data_collection'`` (random scene + random sub-task);
* the oracle for the current sub-task (cube / button / drawer / window) acts; when it is
  done, the env draws a new sub-task (``set_new_target``) and its oracle takes over;
* each step records the pre-step observation, the action, ``terminals`` (end of episode) and
  the pre-step ``qpos``/``qvel``/``button_states`` that single-task reward relabelling needs.

"play" datasets use the plan oracles (temporally correlated noise); "noisy" ones the Markov
oracles with per-episode Gaussian action noise and, at each step with probability
``p_random_action``, a uniformly random action instead. All randomness comes from numpy's
global RNG and the env's reset seed (``tql.data.collect`` seeds both per episode).
"""

from __future__ import annotations

import inspect

import numpy as np

from tql.envs import make_env
from tql.errors import TQLError
from tql.tasks import TaskSpec

SUPPORTED_ENVS = (
    "cube-single",
    "cube-double",
    "cube-triple",
    "cube-quadruple",
    "scene",
    "puzzle-3x3",
    "puzzle-4x4",
    "puzzle-4x5",
    "puzzle-4x6",
)
SUPPORTED_TYPES = ("play", "noisy")

# OGBench's data-collection constants.
NOISE = 0.1  # plan-oracle noise level; upper bound of the per-episode noise xi of 'noisy'
NOISE_SMOOTHING = 0.5
MIN_NORM = 0.4  # Markov oracles' minimum norm of the relative position
MARKOV_NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # std = xi * this (xyz, yaw, gripper)
# OGBench's p_random_action for its 'noisy' datasets (its data_gen_scripts/commands.sh);
# 'play' datasets use none.
P_RANDOM_ACTION_CUBE_SCENE = 0.1
P_RANDOM_ACTION_PUZZLE = 0.2


def check_supported(task: TaskSpec, dataset_type: str) -> None:
    if task.env_base not in SUPPORTED_ENVS:
        raise TQLError(
            f"cannot generate data for domain {task.domain!r}: the generator supports the manipulation "
            f"environments {', '.join(SUPPORTED_ENVS)} (dataset types {', '.join(SUPPORTED_TYPES)})"
        )
    if dataset_type not in SUPPORTED_TYPES:
        raise TQLError(
            f"cannot generate dataset type {dataset_type!r} for {task.env_base}: supported types are "
            f"{', '.join(SUPPORTED_TYPES)}"
        )


def make_data_env(task: TaskSpec, episode_length: int):
    """The multi-task env in data-collection mode; episodes never end at a goal, only by time."""
    return make_env(
        task.data_env_name, terminate_at_goal=False, mode="data_collection", max_episode_steps=episode_length
    )


def make_oracles(env, env_base: str, dataset_type: str) -> dict:
    """Oracle per sub-task name (``info['privileged/target_task']``), as OGBench collected them."""
    if dataset_type == "play":
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        kw = dict(env=env, noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
        if env_base.startswith("cube"):
            return {"cube": CubePlanOracle(**kw)}
        if env_base == "scene":
            return {
                "cube": CubePlanOracle(**kw),
                "button": ButtonPlanOracle(**kw),
                "drawer": DrawerPlanOracle(**kw),
                "window": WindowPlanOracle(**kw),
            }
        # Puzzles: only buttons, pressed with a closed gripper.
        return {"button": ButtonPlanOracle(**kw, gripper_always_closed=True)}

    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

    kw = dict(env=env, min_norm=MIN_NORM)
    if env_base.startswith("cube"):
        return {"cube": CubeMarkovOracle(**kw)}
    if env_base == "scene":
        return {
            "cube": CubeMarkovOracle(**kw, max_step=100),
            "button": ButtonMarkovOracle(**kw),
            "drawer": DrawerMarkovOracle(**kw),
            "window": WindowMarkovOracle(**kw),
        }
    return {"button": ButtonMarkovOracle(**kw, gripper_always_closed=True)}


def random_action_probability(env_base: str, dataset_type: str) -> float:
    """Per-step probability that a uniformly random action replaces the oracle's.

    OGBench's 'noisy' datasets contain such actions (0.2 for puzzles, 0.1 for cube and scene), so
    ours must too to be the same kind of data; its 'play' datasets have none.
    """
    if dataset_type != "noisy":
        return 0.0
    return P_RANDOM_ACTION_PUZZLE if env_base.startswith("puzzle") else P_RANDOM_ACTION_CUBE_SCENE


def maybe_random_action(rng, p: float, act_dim: int) -> np.ndarray | None:
    """With probability ``p`` a uniform action in [-1, 1]^act_dim, else None (the oracle acts).

    Deciding before the oracle is queried mirrors OGBench: on a random step the oracle is not
    called (its step counter, which times sub-tasks out, does not advance) and no Gaussian noise
    is added. ``p <= 0`` draws nothing, so 'play' generation consumes the same random numbers as
    before. ``rng``: anything with numpy's ``uniform`` (``np.random``, a RandomState, a Generator);
    the generator passes numpy's seeded global RNG so files are reproducible per seed.
    """
    if p <= 0.0 or rng.uniform() >= p:
        return None
    return rng.uniform(-1.0, 1.0, size=act_dim)


def sample_p_stack(env_base: str) -> float:
    """Per-episode probability that a cube sub-task stacks onto another cube (OGBench's schedule)."""
    if "single" in env_base:
        return 0.0
    if "double" in env_base:
        return np.random.uniform(0.0, 0.25)
    if "triple" in env_base:
        return np.random.uniform(0.05, 0.35)
    if "quadruple" in env_base:
        return np.random.uniform(0.1, 0.5)
    return 0.5  # scene (one cube: never stacks) and puzzles (ignored)


def _new_target(env, p_stack: float):
    """Draw the next sub-task; only environments with cubes take p_stack."""
    set_new_target = env.unwrapped.set_new_target
    if "p_stack" in inspect.signature(set_new_target).parameters:
        return set_new_target(p_stack=p_stack)
    return set_new_target()


def scene_is_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube stays visible (not past the right edge, not left of the
    table outside the drawer). Rare physics glitches violate it; such episodes are redone."""
    xyz = qpos[:, 14:17]
    too_right = xyz[:, 1] >= 0.29
    out_left = (xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))
    return not bool(too_right.any() or out_left.any())


def run_episode(
    env, agents: dict, env_base: str, markov: bool, seed: int | None = None, p_random: float = 0.0
) -> dict[str, np.ndarray]:
    """Collect one episode (until time-out) and return its arrays (rows = steps).

    p_random: per-step probability of a uniformly random action (``random_action_probability``).
    """
    ob, info = env.reset(seed=seed)
    p_stack = sample_p_stack(env_base)
    xi = np.random.uniform(0.0, NOISE) if markov else 0.0
    agent = agents[info["privileged/target_task"]]
    agent.reset(ob, info)
    has_buttons = hasattr(env.unwrapped, "_cur_button_states")
    steps: dict[str, list] = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
    if has_buttons:
        steps["button_states"] = []

    done = False
    while not done:
        action = maybe_random_action(np.random, p_random, env.action_space.shape[0])
        if action is None:
            action = agent.select_action(ob, info)
            if markov:
                action = action + np.random.normal(0.0, xi * MARKOV_NOISE_SCALE, size=np.shape(action))
        action = np.clip(action, -1.0, 1.0)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)

        # info['prev_*'] is the state *before* this step, i.e. the state of `ob`.
        steps["observations"].append(ob)
        steps["actions"].append(action)
        steps["terminals"].append(done)
        steps["qpos"].append(info["prev_qpos"])
        steps["qvel"].append(info["prev_qvel"])
        if has_buttons:
            steps["button_states"].append(info["prev_button_states"])

        if agent.done:
            agent_ob, agent_info = _new_target(env, p_stack)
            agent = agents[agent_info["privileged/target_task"]]
            agent.reset(agent_ob, agent_info)
            # The new target's info (same state, new target fields) drives the next action;
            # the step's info would still describe the finished sub-task.
            info = agent_info
        ob = next_ob
    # Compact float32 arrays per episode: python lists of float64 rows would need ~3x the memory.
    return _steps_to_arrays(steps)


_DTYPES = {"terminals": bool, "button_states": np.int64}  # OGBench's; everything else float32


def _steps_to_arrays(steps: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=_DTYPES.get(k, np.float32)) for k, v in steps.items()}
