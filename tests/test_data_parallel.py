"""Per-episode seeds, parallel generation, default sizes and dataset-size reporting.

Datasets are tiny (a few episodes of 30-40 steps); the one test with two worker processes
pays their start-up (a few seconds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tql.data import (
    META_KEY,
    DataSize,
    default_episodes,
    expected_size,
    generate_dataset,
    load_task_data,
    provide_task_data,
    read_generated_meta,
    sized_folder,
)
from tql.data.collect import episode_seeds
from tql.data.generate import GENERATOR_VERSION
from tql.errors import MissingDatasetError, TQLError
from tql.tasks import get_task

CUBE = "cube-double-play-singletask-task2-v0"


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path) as file:
        return {key: file[key] for key in file.files if key != META_KEY}


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_parallel_generation_writes_the_same_arrays_as_serial(tmp_path):
    """Two worker processes, each collecting whichever episodes come next, write the file that
    one process writes (scene: four oracles, button states and the health check)."""
    task = get_task("scene-play-singletask-task1-v0")
    kw = dict(episodes=3, episode_length=40, seed=3, progress=False)
    serial = generate_dataset(task, tmp_path / "w1", workers=1, **kw)
    parallel = generate_dataset(task, tmp_path / "w2", workers=2, **kw)
    for a, b in zip(serial, parallel):
        _assert_same_arrays(_arrays(a), _arrays(b))
    assert read_generated_meta(serial.train)["workers"] == 1
    meta = read_generated_meta(parallel.train)
    assert meta["workers"] == 2 and meta["generator_version"] == GENERATOR_VERSION == 3
    assert meta["transitions_per_second"] > 0


def test_a_larger_dataset_starts_with_the_smaller_ones_episodes(tmp_path):
    """Each episode depends only on (seed, split, index): 4 episodes extend 2 with the same seed,
    and the validation split does not shift when the training split grows."""
    small = generate_dataset(CUBE, tmp_path / "small", episodes=2, episode_length=30, seed=7, progress=False)
    large = generate_dataset(CUBE, tmp_path / "large", episodes=4, episode_length=30, seed=7, progress=False)
    small_train, large_train = _arrays(small.train), _arrays(large.train)
    _assert_same_arrays(small_train, {k: v[: 2 * 30] for k, v in large_train.items()})
    _assert_same_arrays(_arrays(small.val), _arrays(large.val))  # one validation episode each
    # ...and the added episodes are new ones, not repeats.
    assert not np.array_equal(large_train["observations"][60:90], large_train["observations"][:30])


def test_episode_seeds_are_distinct_32_bit_words():
    seeds = {episode_seeds(0, split, i, attempt)
             for split in ("train", "val") for i in range(50) for attempt in range(3)}
    assert len(seeds) == 300
    words = [w for pair in seeds for w in pair]
    assert all(0 <= w < 2**32 for w in words) and len(set(words)) == len(words)
    assert episode_seeds(1, "train", 0) != episode_seeds(0, "train", 0)


def test_bad_workers_and_seed_are_refused():
    with pytest.raises(TQLError, match="workers 0 must be >= 1"):
        generate_dataset(CUBE, "/nonexistent", episodes=1, episode_length=10, workers=0, progress=False)
    with pytest.raises(TQLError, match="seed -1"):
        generate_dataset(CUBE, "/nonexistent", episodes=1, episode_length=10, seed=-1, progress=False)


def test_default_sizes_are_ogbenchs():
    """1000 episodes per domain, 3000 for cube-triple; the paper profile expects those."""
    from tql.trainer import TrainConfig

    assert default_episodes("cube-triple") == 3000
    assert {default_episodes(d) for d in ("cube-double", "scene", "puzzle-3x3", "puzzle-4x4")} == {1000}
    for task, episodes in (("cube-triple-play-singletask-task1-v0", 3000), (CUBE, 1000)):
        config = TrainConfig.from_profile(task, "paper")
        assert expected_size(config.spec, config.data_episodes, config.data_episode_length) == DataSize(episodes, 1001)
    cpu = TrainConfig.from_profile(CUBE, "cpu")
    assert expected_size(cpu.spec, cpu.data_episodes, cpu.data_episode_length) == DataSize(40, 1001)


def test_task_data_counts_episodes_and_transitions(tiny_data_dir):
    data = load_task_data(get_task(CUBE), tiny_data_dir)
    with np.load(data.paths.train) as raw, np.load(data.paths.val) as val:
        episodes, rows = int(raw["terminals"].sum()), len(raw["terminals"])
        val_episodes, val_rows = int(val["terminals"].sum()), len(val["terminals"])
    # ogbench's load_dataset drops each episode's last step (it has no next observation).
    assert (data.episodes, data.transitions) == (episodes, rows - episodes)
    assert (data.val_episodes, data.val_transitions) == (val_episodes, val_rows - val_episodes)
    assert data.size_record() == {"data_episodes_found": episodes, "data_transitions": rows - episodes,
                                  "data_val_episodes": val_episodes, "data_val_transitions": val_rows - val_episodes}
    assert data.describe() == (f"generated cube-double-play-v0, {episodes} episodes, {rows - episodes} transitions "
                               f"(+{val_episodes} val episodes)")


def test_too_small_data_warns_or_is_made_beside(tmp_path):
    """A run expecting 4 episodes on a 2-episode file warns in one line; with make_data it makes
    4 episodes in a sized folder, leaves the small file as it was, and finds the large one next time."""
    task = get_task(CUBE)
    small = generate_dataset(task, tmp_path, episodes=2, episode_length=30, seed=0, progress=False)
    small_bytes = small.train.read_bytes()
    expect = DataSize(4, 30)
    said, warned = [], []

    data = provide_task_data(task, tmp_path, "auto", expect, False, said.append, warned.append, profile="cpu")
    assert data.episodes == 2 and len(warned) == 1 and "\n" not in warned[0]
    assert all(s in warned[0] for s in ("holds 2 episodes (58 transitions)", "profile cpu expects 4 episodes",
                                        "not be comparable", "--make-data"))
    assert said[-1] == f"data: {data.describe()}"

    said, warned = [], []
    data = provide_task_data(task, tmp_path, "auto", expect, True, said.append, warned.append, progress=False)
    assert not warned and (data.episodes, data.transitions) == (4, 4 * 29)
    assert data.paths.train == sized_folder(tmp_path, 4, 30) / "cube-double-play-v0.npz"
    assert said[-1] == "data: generated cube-double-play-v0 (4ep-30steps), 4 episodes, 116 transitions (+1 val episodes)"
    assert small.train.read_bytes() == small_bytes
    assert load_task_data(task, tmp_path, expect=expect).paths == data.paths
    assert load_task_data(task, tmp_path, expect=DataSize(2, 30)).paths == small  # each run finds its own
    assert load_task_data(task, tmp_path).paths == small


def test_missing_data_is_generated_at_the_expected_size(tmp_path):
    task = get_task(CUBE)
    with pytest.raises(MissingDatasetError):
        provide_task_data(task, tmp_path, "auto", DataSize(2, 20), False, print)
    data = provide_task_data(task, tmp_path, "auto", DataSize(2, 20), True, lambda text: None, progress=False)
    assert (data.episodes, data.transitions, data.kind) == (2, 2 * 19, "generated")
    assert data.paths.train.parent == tmp_path / "generated"


def test_training_records_the_dataset_size(tiny_data_dir, tmp_path):
    """config.json and summary.json carry the size; the smoke profile expects more than the
    tiny dataset holds, so the run warns (a Python warning: no console)."""
    from tql.trainer import TrainConfig, train

    config = TrainConfig.from_profile(CUBE, "smoke", {"batch_size": 16}, steps=2, eval_every=2, log_every=1,
                                      checkpoint_every=2, eval_episodes=1, eval_max_steps=5,
                                      data_dir=str(tiny_data_dir), device="cpu")
    with pytest.warns(RuntimeWarning, match="profile smoke expects 32 episodes"):
        result = train(config, tmp_path / "run", progress=False)
    data = load_task_data(get_task(CUBE), tiny_data_dir)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for record in (saved, summary["extra"], result.extra):
        assert record["data_episodes_found"] == data.episodes and record["data_transitions"] == data.transitions
