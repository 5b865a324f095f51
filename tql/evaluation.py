"""Batched policy evaluation in OGBench single-task environments.

Episodes run as a batch: a pool of ``num_envs`` environments is stepped together and the
policy is called ONCE per step on the observations of all running environments, so a
network pays its per-call overhead (Python, kernel launches, host/device copies) once per
step instead of once per environment. The environments themselves are stepped one after
another in this process (MuJoCo steps are cheap next to process hand-offs on a small
machine).

Reproducibility: episode ``i`` is reset with seed ``seed * 100003 + i`` whatever env of the
pool runs it, so successes, returns and lengths do not depend on ``num_envs``. A stochastic
policy keeps that property when its noise is drawn per episode (``EpisodeNoise``): episode
``i`` then sees the same noise whichever episodes share its policy calls, in this process or
in another one (``tql.eval_workers`` spreads episodes over processes and merges the results
with ``merge_results``).

Episode end: an episode ends when the env reports ``terminated`` (OGBench single-task envs
terminate on success) or ``truncated`` (the env's own ``TimeLimit``, i.e. the task's
episode length), or when our own step counter reaches ``max_steps``. ``max_steps`` can
therefore only shorten episodes: when it is larger than the env's ``TimeLimit``, the
``TimeLimit`` still applies. Success is ``info['success']`` of the episode's last step.

Progress grades what success leaves binary. OGBench's single-task reward is (subtasks
achieved) - N, so an episode's progress is 1 + r / N with r its last step's reward: the
fraction of the task's N subtasks (cubes, buttons, drawer, window) achieved at its end;
cube-single's is its success. Which subtasks were achieved is read from the last state with
the same subgoal checks that relabel the datasets (``tql.data.datasets.subgoal_successes``).

Progress counts subtasks already done when the episode starts (cube-double task 1 starts with
one of its two cubes in place, so a policy that does nothing scores 50%). ``gained`` counts
from the start state instead: the subtasks the episode changed from not done to done, as a
fraction of those not done at its start (0 when none was left to do). A policy that does
nothing gains 0; one that solves the task gains 1 (``gained_from``).
"""

from __future__ import annotations

import atexit
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from tql.data.datasets import TaskGoal, goal_from_env, subgoal_successes
from tql.envs import make_env
from tql.errors import ConfigError
from tql.tasks import MANIPULATION_ENVS, TaskSpec

Policy = Callable[[np.ndarray], np.ndarray]
# With ``EpisodeNoise``: (observations [E, obs_dim], each running episode's noise [E, dim]) -> actions.
NoisyPolicy = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Seed stride between evaluation seeds: episode i of evaluation seed s uses s * 100003 + i,
# a prime larger than any episode count we run, so seeds never share an episode.
SEED_STRIDE = 100003
DEFAULT_MAX_ENVS = 16


@dataclass
class EvalResult:
    """Outcome of ``evaluate``; the lists are indexed by episode number."""

    task: str
    episodes: int
    success_rate: float  # in [0, 1]
    successes: list[bool]
    returns: list[float]
    lengths: list[int]
    env_steps: int
    seconds: float  # wall time: of evaluate() (env creation included) or of run_episodes()
    progress: list[float] = field(default_factory=list)  # per episode: fraction of subtasks achieved at its end
    subtasks: list[list[bool]] = field(default_factory=list)  # per episode: each subtask achieved at its end
    start_subtasks: list[list[bool]] = field(default_factory=list)  # per episode: each subtask done at its start
    gained: list[float] = field(default_factory=list)  # per episode: progress counted from its start (gained_from)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (Python scalars only)."""
        return asdict(self)

    @property
    def mean_progress(self) -> float | None:
        """Mean over episodes of the fraction of subtasks achieved at the episode's end."""
        return sum(self.progress) / len(self.progress) if self.progress else None

    @property
    def mean_gained(self) -> float | None:
        """Mean over episodes of the progress made from each episode's start state."""
        return sum(self.gained) / len(self.gained) if self.gained else None

    @property
    def subtask_rates(self) -> list[float]:
        """Per subtask, the fraction of episodes that ended with it achieved."""
        if not self.subtasks:
            return []
        return [sum(column) / len(self.subtasks) for column in zip(*self.subtasks)]


def episode_progress(final_reward: float, n_subtasks: int) -> float:
    """The fraction of a task's ``n_subtasks`` achieved at an episode's end, from its last
    reward (OGBench's single-task reward is achieved - N)."""
    return min(1.0, max(0.0, 1.0 + float(final_reward) / n_subtasks))


def gained_from(start: Sequence[bool], end: Sequence[bool]) -> float:
    """The fraction of the subtasks not done at an episode's start that are done at its end
    (0.0 when all were done at the start: the episode had nothing left to gain)."""
    if len(start) != len(end):
        raise ValueError(f"start has {len(start)} subtasks, end {len(end)}")
    open_ = [k for k, done in enumerate(start) if not done]
    return sum(bool(end[k]) for k in open_) / len(open_) if open_ else 0.0


def grading_goal(task: TaskSpec, env) -> TaskGoal | None:
    """The subtasks that grade ``task``'s episodes, read from one of its reset envs (a
    single-task env's goal is the same at every reset); None outside OGBench's manipulation
    families, whose episodes are then not graded."""
    return goal_from_env(task.env_name, env) if task.env_base.startswith(MANIPULATION_ENVS) else None


def achieved_subtasks(goal: TaskGoal, info: dict) -> list[bool]:
    """Which of ``goal``'s subtasks the state in a step's ``info`` (``qpos``, and
    ``button_states`` where the env has buttons) satisfies."""
    state = {key: np.asarray(info[key])[None] for key in ("qpos", "button_states") if key in info}
    return [bool(x) for x in subgoal_successes(goal, state)[0]]


def episode_seed(seed: int, episode: int) -> int:
    """Reset seed of episode ``episode`` in the evaluation with seed ``seed``."""
    return seed * SEED_STRIDE + episode


@dataclass(frozen=True)
class EpisodeNoise:
    """Standard-normal policy noise drawn per episode, not per batch.

    Episode ``i`` draws its steps' noise, in order, from its own generator seeded
    ``(seed, i)``: an episode's actions then depend on its own observations only, not on
    which episodes share a policy call, so batching and processes leave results unchanged.
    """

    seed: int
    dim: int

    def generator(self, episode: int) -> np.random.Generator:
        # SeedSequence wants non-negative words: a negative seed wraps to its 64-bit pattern.
        return np.random.default_rng([self.seed % (1 << 64), episode])


def random_policy(act_dim: int, seed: int = 0) -> Policy:
    """Uniform random actions in [-1, 1]: the baseline of learning checks.

    One generator serves the whole batch, so the actions an episode receives depend on how
    episodes are batched: results are reproducible for a fixed ``num_envs`` only.
    """
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(len(obs), act_dim)).astype(np.float32)

    return policy


# Envs of closed pools, per env name, that the next pool of this process takes before it
# builds any: a study or comparison trains many runs one after another in one process.
_IDLE_ENVS: dict[str, list] = {}


@atexit.register
def close_idle_envs() -> None:
    """Close the envs closed pools left for the next pool of this process."""
    for envs in _IDLE_ENVS.values():
        while envs:
            envs.pop().close()


class EnvPool:
    """``num_envs`` instances of one gymnasium env, created once and closed together.

    Creating an OGBench env and its first reset (MuJoCo model compilation) take about 1 s
    of CPU per env (as long as ~800 env steps), so a trainer that evaluates often
    can keep one pool and pass it to ``run_episodes``; and a pool closes into a per-process
    store of idle envs (at most ``DEFAULT_MAX_ENVS`` per env name) from which the next pool
    of the same env takes its envs. That changes no result: every episode seeds its env's
    reset and action sampler (``_start``), so it never depends on what the env ran before
    (a test runs the same episodes on fresh and on reused envs).
    Usable as a context manager.
    """

    def __init__(self, env_name: str, num_envs: int):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.env_name = env_name
        idle = _IDLE_ENVS.setdefault(env_name, [])
        self.envs: list = [idle.pop() for _ in range(min(num_envs, len(idle)))]
        try:
            while len(self.envs) < num_envs:
                self.envs.append(make_env(env_name))
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.envs)

    def close(self) -> None:
        idle = _IDLE_ENVS.setdefault(self.env_name, [])
        while self.envs:
            env = self.envs.pop()
            if len(idle) < DEFAULT_MAX_ENVS:
                idle.append(env)
            else:
                env.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None:  # an error mid-episode: these envs are closed, not kept
            while self.envs:
                self.envs.pop().close()
        self.close()


@dataclass
class _Slot:
    """One env of the pool and the episode it is currently running."""

    env: object
    episode: int = -1
    obs: np.ndarray | None = None
    ret: float = 0.0
    length: int = 0
    info: dict = field(default_factory=dict)
    start_info: dict = field(default_factory=dict)  # the reset's info: the state the episode started in
    noise: np.random.Generator | None = None  # the episode's own noise (EpisodeNoise)


def _start(slot: _Slot, episode: int, seed: int, noise: EpisodeNoise | None) -> None:
    s = episode_seed(seed, episode)
    # OGBench's reset takes random steps with action_space.sample() to build the goal;
    # seed that sampler too so an episode never depends on what the env ran before.
    slot.env.action_space.seed(s)
    obs, info = slot.env.reset(seed=s)
    slot.episode, slot.obs, slot.ret, slot.length, slot.info, slot.start_info = episode, obs, 0.0, 0, info, info
    slot.noise = noise.generator(episode) if noise is not None else None


def _act(policy: Policy | NoisyPolicy, running: list[_Slot], act_dim: int, noise: EpisodeNoise | None) -> np.ndarray:
    """One batched policy call; check the shape and clip to the action box [-1, 1]."""
    obs = np.stack([s.obs for s in running]).astype(np.float32)
    if noise is None:
        actions = policy(obs)
    else:
        actions = policy(obs, np.stack([s.noise.standard_normal(noise.dim) for s in running]))
    actions = np.asarray(actions, dtype=np.float32)
    if actions.shape != (len(obs), act_dim):
        raise ValueError(
            f"policy returned actions of shape {actions.shape} for {len(obs)} observations; "
            f"expected ({len(obs)}, {act_dim})"
        )
    if not np.isfinite(actions).all():
        raise ValueError("policy returned non-finite actions (NaN or inf)")
    return np.clip(actions, -1.0, 1.0)


def _check_positive(name: str, value: int | None) -> None:
    """None passes (means "default"); otherwise an int >= 1 (bools are refused)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def run_episodes(
    policy: Policy | NoisyPolicy,
    pool: EnvPool,
    task: TaskSpec,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    noise: EpisodeNoise | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes on an existing pool (all its envs, at most ``episodes``).

    See the module docstring for seeding and episode ends; ``progress`` is called with the
    number of finished episodes each time one finishes. With ``noise`` the policy is called
    as ``policy(obs, z)``, ``z`` holding each running episode's own noise draw.
    """
    _check_positive("episodes", episodes)
    return run_episode_numbers(policy, pool, task, range(episodes), seed, max_steps, progress, noise)


def run_episode_numbers(
    policy: Policy | NoisyPolicy,
    pool: EnvPool,
    task: TaskSpec,
    numbers: Sequence[int],
    seed: int = 0,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    noise: EpisodeNoise | None = None,
) -> EvalResult:
    """``run_episodes`` for the episodes numbered ``numbers`` only (part of an evaluation run
    elsewhere, e.g. by one worker process); the result's lists follow ``numbers``' order."""
    numbers = list(numbers)
    _check_positive("episodes", len(numbers))
    _check_positive("max_steps", max_steps)
    limit = max_steps if max_steps is not None else task.episode_length
    count = len(numbers)
    successes: list[bool] = [False] * count
    returns: list[float] = [0.0] * count
    lengths: list[int] = [0] * count
    fractions: list[float] = [0.0] * count
    subtasks: list[list[bool]] = [[] for _ in range(count)]
    start_subtasks: list[list[bool]] = [[] for _ in range(count)]
    start = time.perf_counter()
    running = [_Slot(env) for env in pool.envs[: min(len(pool), count)]]
    for slot, number in zip(running, numbers):
        _start(slot, number, seed, noise)
    goal = grading_goal(task, running[0].env)
    next_position, finished, env_steps = len(running), 0, 0
    position = {number: k for k, number in enumerate(numbers)}
    if len(position) != count:
        raise ConfigError(f"episode numbers must be distinct, got {numbers!r}")
    while running:
        actions = _act(policy, running, task.act_dim, noise)
        still_running = []
        for slot, action in zip(running, actions):
            slot.obs, reward, terminated, truncated, slot.info = slot.env.step(action)
            slot.ret += float(reward)
            slot.length += 1
            env_steps += 1
            if not (terminated or truncated or slot.length >= limit):
                still_running.append(slot)
                continue
            k = position[slot.episode]
            successes[k] = bool(slot.info.get("success", False))
            returns[k], lengths[k] = slot.ret, slot.length
            if goal is not None:
                subtasks[k] = achieved_subtasks(goal, slot.info)
                start_subtasks[k] = achieved_subtasks(goal, slot.start_info)
                fractions[k] = episode_progress(reward, len(subtasks[k]))
            finished += 1
            if progress is not None:
                progress(finished)
            if next_position < count:  # reuse this env for the next pending episode
                _start(slot, numbers[next_position], seed, noise)
                next_position += 1
                still_running.append(slot)
        running = still_running  # shrinks at the end: the policy sees running envs only
    return EvalResult(
        task=task.name,
        episodes=count,
        success_rate=sum(successes) / count,
        successes=successes,
        returns=returns,
        lengths=lengths,
        env_steps=env_steps,
        seconds=time.perf_counter() - start,
        progress=fractions if goal is not None else [],
        subtasks=subtasks if goal is not None else [],
        start_subtasks=start_subtasks if goal is not None else [],
        gained=[gained_from(a, b) for a, b in zip(start_subtasks, subtasks)] if goal is not None else [],
    )


def evaluate(
    policy: Policy,
    task: TaskSpec,
    episodes: int,
    seed: int = 0,
    num_envs: int | None = None,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Evaluate ``policy`` for ``episodes`` episodes of ``task``'s single-task env.

    ``policy`` maps float32 observations [E, obs_dim] to actions [E, act_dim] (clipped to
    [-1, 1] here); E is the number of running envs, ``min(episodes, num_envs)`` at first
    and smaller once no episode is left to start. ``num_envs`` defaults to
    ``min(episodes, 16)``. ``max_steps`` truncates episodes early (quick CPU checks); it
    cannot lengthen them past the env's own TimeLimit. ``EvalResult.seconds`` is the wall
    time of this call, including creating the envs (about 1 s each on a CPU core).
    """
    _check_positive("episodes", episodes)
    _check_positive("num_envs", num_envs)
    _check_positive("max_steps", max_steps)
    start = time.perf_counter()
    n = min(episodes, num_envs if num_envs is not None else DEFAULT_MAX_ENVS)
    with EnvPool(task.env_name, n) as pool:
        result = run_episodes(policy, pool, task, episodes, seed, max_steps, progress)
    return replace(result, seconds=time.perf_counter() - start)


def merge_results(task: TaskSpec, parts: Sequence[tuple[Sequence[int], EvalResult]], seconds: float) -> EvalResult:
    """One evaluation from parts run apart: ``(episode numbers, their result)`` pairs whose
    numbers together are 0..N-1; the lists come out in episode order."""
    placed = {}
    for numbers, result in parts:
        ungraded = [None] * len(numbers)  # a part run without progress (EvalResult built by hand)
        placed.update(zip(numbers, zip(result.successes, result.returns, result.lengths,
                                       result.progress or ungraded, result.subtasks or ungraded,
                                       result.start_subtasks or ungraded, result.gained or ungraded)))
    episodes = len(placed)
    if sorted(placed) != list(range(episodes)):
        raise ValueError(f"parts cover episodes {sorted(placed)}, not 0..{episodes - 1}")
    successes, returns, lengths, progress, subtasks, starts, gained = (
        list(column) for column in zip(*(placed[i] for i in range(episodes))))
    graded, from_start = None not in progress, None not in gained
    return EvalResult(task=task.name, episodes=episodes, success_rate=sum(successes) / episodes,
                      successes=successes, returns=returns, lengths=lengths,
                      env_steps=sum(result.env_steps for _, result in parts), seconds=seconds,
                      progress=progress if graded else [], subtasks=subtasks if graded else [],
                      start_subtasks=starts if graded and from_start else [],
                      gained=gained if graded and from_start else [])
