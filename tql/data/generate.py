"""Generate OGBench-format manipulation datasets offline with OGBench's scripted oracles.

OGBench's datasets are downloaded from a web server, which our machines cannot reach. The
``ogbench`` package does ship the manipulation environments and the scripted oracles its
authors used to collect the "play" (plan oracles, temporally correlated noise) and "noisy"
(Markov oracles, per-episode Gaussian action noise, and at each step with probability
``p_random_action`` a uniformly random action instead) datasets, so we re-run that procedure:

* reset the multi-task env in ``mode='data_collection'`` (random scene + random sub-task);
* the oracle for the current sub-task (cube / button / drawer / window) acts; when it is
  done, the env draws a new sub-task (``set_new_target``) and its oracle takes over;
* each step records the pre-step observation, the action, ``terminals`` (end of episode) and
  the pre-step ``qpos``/``qvel``/``button_states`` that single-task reward relabelling needs.

Every episode has its own seeds (``episode_seeds``: split, index and attempt mixed with the
run's seed), so episodes are independent of each other and of which process collects them:
``workers`` processes write the same arrays as one, and a larger file starts with the episodes
of a smaller one made with the same seed.

Files are written as ``<out_dir>/generated/<domain>-v0.npz`` and ``...-v0-val.npz`` (same
names as OGBench's, distinct folder; ``sized=True``: in ``generated/<N>ep-<L>steps/``) with a ``tql_generated`` metadata key, so they can never
be mistaken for official data. Writes are atomic (temp file + fsync + os.replace).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tql.data.datasets import META_KEY, GeneratedPaths, dataset_paths, sized_dataset_paths
from tql.envs import make_env
from tql.errors import TQLError
from tql.tasks import TaskSpec, get_task

# 2: 'noisy' files gained OGBench's random actions (version-1 noisy files have none); 'play'
# files are unchanged (same arrays for the same seed).
# 3: per-episode seeds (``episode_seeds``) so that several processes can share the work: files
# differ from version 2's for the same seed (both kinds), and no longer depend on the workers.
GENERATOR_VERSION = 3
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
DEFAULT_EPISODE_LENGTH = 1001
# OGBench's dataset sizes (training episodes of DEFAULT_EPISODE_LENGTH steps): 1M transitions
# per domain, 3M for cube-triple.
DEFAULT_EPISODES = 1000
DEFAULT_EPISODES_BY_ENV = {"cube-triple": 3000}
# A scene episode is redone (with new seeds) when a physics glitch spoils it; glitches are
# rare, so this many failures in a row means something else is wrong.
MAX_ATTEMPTS = 100
SPLITS = ("train", "val")  # the split's position goes into its episodes' seeds
# OGBench's p_random_action for its 'noisy' datasets (its data_gen_scripts/commands.sh);
# 'play' datasets use none.
P_RANDOM_ACTION_CUBE_SCENE = 0.1
P_RANDOM_ACTION_PUZZLE = 0.2


# --------------------------------------------------------------------------------------------
# Environment and oracles
# --------------------------------------------------------------------------------------------


def _check_supported(task: TaskSpec, dataset_type: str) -> None:
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


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


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


def default_episodes(env_base: str) -> int:
    """Training episodes of OGBench's dataset for a domain (3000 for cube-triple, else 1000)."""
    return DEFAULT_EPISODES_BY_ENV.get(env_base, DEFAULT_EPISODES)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def episode_seeds(seed: int, split: str, index: int, attempt: int = 0) -> tuple[int, int]:
    """(numpy global RNG seed, env reset seed) of one try at one episode.

    Both are 32-bit words of ``numpy.random.SeedSequence([seed, split position, index,
    attempt])``: distinct, well-mixed streams per episode that depend on nothing else, which is
    what lets any process collect any episode. ``attempt`` counts redone scene episodes.
    """
    words = np.random.SeedSequence([seed, SPLITS.index(split), index, attempt]).generate_state(2)
    return int(words[0]), int(words[1])


def collect_episode(
    env, agents: dict, env_base: str, markov: bool, seed: int, split: str, index: int, p_random: float = 0.0
) -> tuple[dict[str, np.ndarray], int]:
    """Collect episode ``index`` of ``split``: its arrays and how many tries were redone.

    Seeds numpy's global RNG (which the oracles draw from) and the env's reset from
    ``episode_seeds``; a scene episode failing ``scene_is_healthy`` is tried again with the
    next attempt's seeds.
    """
    for attempt in range(MAX_ATTEMPTS):
        numpy_seed, env_seed = episode_seeds(seed, split, index, attempt)
        np.random.seed(numpy_seed)
        episode = run_episode(env, agents, env_base, markov, seed=env_seed, p_random=p_random)
        if env_base != "scene" or scene_is_healthy(episode["qpos"]):
            return episode, attempt
    raise TQLError(f"{split} episode {index} of {env_base} failed the health check {MAX_ATTEMPTS} times (seed {seed})")


class EpisodeCollector:
    """One data-collection env with its oracles, collecting episodes by (split, index).

    Built once per process: in the caller's process for one worker, in each pool process
    otherwise (``_start_worker``).
    """

    def __init__(self, task: TaskSpec, dataset_type: str, episode_length: int, seed: int):
        self.task, self.seed, self.markov = task, seed, dataset_type == "noisy"
        self.p_random = random_action_probability(task.env_base, dataset_type)
        self.env = make_data_env(task, episode_length)
        self.agents = make_oracles(self.env, task.env_base, dataset_type)

    def __call__(self, job: tuple[str, int]) -> tuple[tuple[str, int], dict[str, np.ndarray], int]:
        split, index = job
        episode, redone = collect_episode(
            self.env, self.agents, self.task.env_base, self.markov, self.seed, split, index, self.p_random
        )
        return job, episode, redone

    def close(self) -> None:
        self.env.close()


_WORKER_COLLECTOR: EpisodeCollector | None = None  # the pool process's own collector


def _start_worker(task: TaskSpec, dataset_type: str, episode_length: int, seed: int) -> None:
    global _WORKER_COLLECTOR
    _WORKER_COLLECTOR = EpisodeCollector(task, dataset_type, episode_length, seed)


def _worker_episode(job: tuple[str, int]):
    assert _WORKER_COLLECTOR is not None, "pool process started without _start_worker"
    return _WORKER_COLLECTOR(job)


def _process_context():
    """'forkserver' where the OS has it, else 'spawn': workers never inherit the caller's
    threads (torch, OpenMP) as plain fork would, and with forkserver this module and its
    imports are loaded once for all workers instead of once per worker."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def collect_episodes(
    task: TaskSpec, dataset_type: str, episode_length: int, seed: int, jobs: list[tuple[str, int]],
    workers: int = 1, on_episode=None,
) -> tuple[dict[tuple[str, int], dict[str, np.ndarray]], int]:
    """Collect every (split, index) in ``jobs``: episodes by job, and the number of redone tries.

    ``workers`` > 1 shares the jobs among that many processes (``_process_context``), one
    episode at a time so ``on_episode`` (called in this process per finished episode, with its
    step count) moves steadily; the result does not depend on ``workers``. One worker collects
    here, without a pool. As with any multiprocessing, a script calling this with several
    workers needs the ``if __name__ == "__main__":`` guard.
    """
    episodes: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    redone = 0
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        collector = EpisodeCollector(task, dataset_type, episode_length, seed)
        results = map(collector, jobs)
    else:
        collector = None
        pool = _process_context().Pool(
            workers, initializer=_start_worker, initargs=(task, dataset_type, episode_length, seed)
        )
        results = pool.imap_unordered(_worker_episode, jobs, chunksize=1)
    try:
        for job, episode, tries in results:
            episodes[job] = episode
            redone += tries
            if on_episode is not None:
                on_episode(len(episode["actions"]))
    finally:
        if collector is not None:
            collector.close()
        else:
            pool.terminate()
            pool.join()
    return episodes, redone


_DTYPES = {"terminals": bool, "button_states": np.int64}  # OGBench's; everything else float32


def _steps_to_arrays(steps: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=_DTYPES.get(k, np.float32)) for k, v in steps.items()}


def episodes_to_arrays(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate episodes along time (dtypes: terminals bool, button_states int64, else float32)."""
    return {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write a compressed .npz so that ``path`` is either the old file or the complete new one.

    The data go to a temporary file in the same folder (same file system, so os.replace is
    atomic), are fsynced, then renamed over ``path``; on any error the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez_compressed(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ogbench_version() -> str:
    try:
        return importlib.metadata.version("ogbench")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _metadata(task: TaskSpec, name: str, split: str, **fields) -> np.ndarray:
    meta = {
        "generator": "tql.data.generate",
        "generator_version": GENERATOR_VERSION,
        "dataset": name,
        "split": split,
        "env": task.data_env_name,
        "ogbench_version": _ogbench_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    # 0-d unicode array: readable without pickle.
    return np.array(json.dumps(meta, sort_keys=True))


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _preserved_numpy_state() -> Iterator[None]:
    """Restore the caller's global numpy RNG state afterwards (each episode reseeds it)."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str, total: int) -> Iterator:
    """Yield a callback advancing a rich progress bar by one episode (a no-op when disabled)."""
    if not enabled:
        yield lambda n_steps: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(description, total=total)
        yield lambda n_steps: progress.advance(bar)


def _as_task(task_or_domain: TaskSpec | str) -> TaskSpec:
    """Accept a TaskSpec, a task name, or a domain such as 'cube-double-play'."""
    if isinstance(task_or_domain, TaskSpec):
        return task_or_domain
    name = task_or_domain.strip()
    return get_task(name if "singletask" in name else f"{name}-singletask-v0")


def generate_dataset(
    task_or_domain: TaskSpec | str,
    out_dir: str | Path,
    episodes: int | None = None,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    seed: int = 0,
    dataset_type: str | None = None,
    progress: bool = True,
    workers: int = 1,
    sized: bool = False,
) -> GeneratedPaths:
    """Generate ``<out_dir>/generated/<env>-<type>-v0.npz`` (+ ``-val``) for a task's domain.

    task_or_domain: a TaskSpec (or a task name / domain name such as 'cube-double-play').
    episodes: training episodes (default: OGBench's size, ``default_episodes``);
        ``max(1, episodes // 10)`` more go to the validation file.
    episode_length: steps per episode (OGBench: 1001, giving 1000 transitions each).
    seed: mixed into every episode's seeds (``episode_seeds``); numpy's global RNG state is
        restored afterwards.
    dataset_type: 'play' (plan oracles) or 'noisy' (Markov oracles plus OGBench's random actions,
        ``random_action_probability``, recorded as ``p_random_action`` in the metadata); default:
        the task's.
    workers: processes collecting episodes (``available_cpus()`` uses every core); the arrays
        are the same whatever the number.
    sized: write into ``generated/<N>ep-<L>steps/`` (``sized_dataset_paths``) instead, leaving
        a dataset of another size in ``generated/`` alone.
    Raises TQLError for a non-manipulation domain, an unsupported dataset type or bad sizes.
    """
    task = _as_task(task_or_domain)
    dataset_type = dataset_type or task.dataset_type
    _check_supported(task, dataset_type)
    episodes = default_episodes(task.env_base) if episodes is None else episodes
    _check_sizes(episodes, episode_length, seed, workers)
    name = f"{task.env_base}-{dataset_type}-v0"
    paths = (sized_dataset_paths(out_dir, name, episodes, episode_length) if sized
             else dataset_paths(out_dir, name, generated=True))
    n_val = max(1, episodes // 10)
    jobs = [("train", i) for i in range(episodes)] + [("val", j) for j in range(n_val)]
    workers = min(workers, len(jobs))

    start = time.perf_counter()
    with _preserved_numpy_state(), _progress_bar(progress, f"generating {name}", len(jobs)) as tick:
        collected, redone = collect_episodes(task, dataset_type, episode_length, seed, jobs, workers, tick)
    seconds = time.perf_counter() - start

    common = dict(
        dataset_type=dataset_type,
        p_random_action=random_action_probability(task.env_base, dataset_type),
        episode_length=episode_length,
        seed=seed,
        seeding="per-episode",
        train_episodes=episodes,
        val_episodes=n_val,
        redone_episodes=redone,
        workers=workers,
        generation_seconds=round(seconds, 3),
        transitions_per_second=round(len(jobs) * episode_length / max(seconds, 1e-9), 1),
    )
    # Validation first: a present train file then implies a complete pair.
    for split, path in (("val", paths.val), ("train", paths.train)):
        split_episodes = [collected[job] for job in jobs if job[0] == split]
        arrays = episodes_to_arrays(split_episodes)
        arrays[META_KEY] = _metadata(task, name, split, episodes=len(split_episodes), **common)
        write_npz_atomic(path, arrays)
    return paths


def _check_sizes(episodes: int, episode_length: int, seed: int, workers: int) -> None:
    if episodes < 1 or episode_length < 2:
        raise TQLError(f"need episodes >= 1 and episode_length >= 2 (got {episodes}, {episode_length})")
    if seed < 0:
        raise TQLError(f"seed {seed} must be >= 0")
    if workers < 1:
        raise TQLError(f"workers {workers} must be >= 1 (default: every core, {available_cpus()} here)")
