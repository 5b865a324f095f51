"""A run's dataset: found, generated when missing, checked against the size the run expects.

Results on 800 transitions are not comparable with results on 40,000, so a run says which data
it trains on (kind, name, episodes, transitions) and warns in one line when the dataset is
smaller than its profile expects. With ``make_data`` a too-small *generated* dataset is not
overwritten: the expected size is made beside it (``sized_folder``), where the next run that
expects that size finds it (``find_dataset``). Official data is never replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tql.data.datasets import DataSize, TaskData, load_task_data, sized_folder
from tql.data.generate import default_episodes, generate_dataset
from tql.errors import MissingDatasetError
from tql.tasks import TaskSpec

DATA_SEED = 0  # generated training data is the same for every run and every seed


def expected_size(task: TaskSpec, episodes: int | None, episode_length: int) -> DataSize:
    """The size a run expects; ``episodes=None`` means OGBench's size for the domain."""
    return DataSize(default_episodes(task.env_base) if episodes is None else episodes, episode_length)


def size_warning(data: TaskData, expect: DataSize, profile: str | None = None) -> str:
    """One line: the dataset is smaller than expected, and how to get the expected size."""
    who = f"profile {profile}" if profile else "this run"
    fix = (f"pass --make-data to make {expect.episodes:,} episodes beside it" if data.kind == "generated"
           else "use the full official files or generated data of that size")
    return (f"dataset {data.paths.train} holds {data.episodes:,} episodes ({data.transitions:,} transitions); "
            f"{who} expects {expect.episodes:,} episodes of {expect.episode_length} steps "
            f"({expect.transitions:,} transitions): results will not be comparable; {fix}")


def provide_task_data(
    task: TaskSpec,
    data_dir: str | Path,
    kind: str,
    expect: DataSize,
    make_data: bool,
    say: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
    *,
    profile: str | None = None,
    progress: bool = True,
    workers: int = 1,
) -> TaskData:
    """Load ``task``'s dataset, generating ``expect`` when it is missing or (generated and)
    too small and ``make_data``; otherwise a too-small dataset is used with a one-line warning.

    say: informational lines (the data line, what is generated); warn: the size warning
    (default: ``say``). Raises MissingDatasetError when nothing is found and not ``make_data``.
    """
    warn = warn or (lambda text: say(f"[yellow]{text}"))
    try:
        data = load_task_data(task, data_dir, kind, expect=expect)
    except MissingDatasetError:
        if not make_data:
            raise
        say(f"[yellow]no dataset for {task.domain}: generating {expect.episodes:,} episodes "
            "(generated data, not official)")
        _generate(task, data_dir, expect, progress, workers, sized=False)
        data = load_task_data(task, data_dir, kind, expect=expect)
    if not expect.held_by(data.episodes, data.transitions):
        if make_data and data.kind == "generated":
            say(f"[yellow]dataset {data.paths.train} holds {data.episodes:,} episodes; generating "
                f"{expect.episodes:,} beside it in {sized_folder(data_dir, *expect)}")
            _generate(task, data_dir, expect, progress, workers, sized=True)
            data = load_task_data(task, data_dir, kind, expect=expect)
        else:
            warn(size_warning(data, expect, profile))
    say(f"data: {data.describe()}")
    return data


def _generate(task: TaskSpec, data_dir: str | Path, size: DataSize, progress: bool, workers: int,
              sized: bool) -> None:
    generate_dataset(task, data_dir, episodes=size.episodes, episode_length=size.episode_length, seed=DATA_SEED,
                     progress=progress, workers=workers, sized=sized)
