"""Generate OGBench-format manipulation datasets offline with OGBench's scripted oracles.

OGBench's datasets are downloaded from a web server, which our machines cannot reach. The
``ogbench`` package does ship the manipulation environments and the scripted oracles its
authors used to collect the "play" and "noisy" datasets, so we re-run that procedure
(``tql.data.oracles``: one episode; ``tql.data.collect``: episodes with their own seeds, over
worker processes) and write the result here.

Files are written as ``<out_dir>/generated/<domain>-v0.npz`` and ``...-v0-val.npz`` (same
names as OGBench's, distinct folder; ``sized=True``: in ``generated/<N>ep-<L>steps/``) with a
``tql_generated`` metadata key, so they can never be mistaken for official data. Writes are
atomic (temp file + fsync + os.replace).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tql.data.collect import available_cpus, collect_episodes, episodes_to_arrays
from tql.data.datasets import META_KEY, GeneratedPaths, dataset_paths, sized_dataset_paths
from tql.data.oracles import check_supported, random_action_probability
from tql.errors import TQLError
from tql.tasks import TaskSpec, get_task

# 2: 'noisy' files gained OGBench's random actions (version-1 noisy files have none); 'play'
# files are unchanged (same arrays for the same seed).
# 3: per-episode seeds (``episode_seeds``) so that several processes can share the work: files
# differ from version 2's for the same seed (both kinds), and no longer depend on the workers.
GENERATOR_VERSION = 3
DEFAULT_EPISODE_LENGTH = 1001
# OGBench's dataset sizes (training episodes of DEFAULT_EPISODE_LENGTH steps): 1M transitions
# per domain, 3M for cube-triple.
DEFAULT_EPISODES = 1000
DEFAULT_EPISODES_BY_ENV = {"cube-triple": 3000}


def default_episodes(env_base: str) -> int:
    """Training episodes of OGBench's dataset for a domain (3000 for cube-triple, else 1000)."""
    return DEFAULT_EPISODES_BY_ENV.get(env_base, DEFAULT_EPISODES)


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
    check_supported(task, dataset_type)
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
