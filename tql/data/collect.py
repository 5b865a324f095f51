"""Episodes collected by (split, index), in this process or shared among worker processes.

Every episode has its own seeds (``episode_seeds``: split, index and attempt mixed with the
run's seed), so episodes are independent of each other and of which process collects them:
``workers`` processes return the same arrays as one, and a larger dataset starts with the
episodes of a smaller one made with the same seed.
"""

from __future__ import annotations

import multiprocessing
import os

import numpy as np

from tql.data.oracles import make_data_env, make_oracles, random_action_probability, run_episode, scene_is_healthy
from tql.errors import TQLError
from tql.tasks import TaskSpec

# A scene episode is redone (with new seeds) when a physics glitch spoils it; glitches are
# rare, so this many failures in a row means something else is wrong.
MAX_ATTEMPTS = 100
SPLITS = ("train", "val")  # the split's position goes into its episodes' seeds


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


def episodes_to_arrays(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate episodes along time (dtypes: terminals bool, button_states int64, else float32)."""
    return {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
