"""Shared fixtures: one tiny generated dataset for the trainer and CLI tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Small models run as fast on one thread, and a shared 2-core machine with two OpenMP
# threads per process can slow them a hundredfold; keep the suite's timing predictable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_TASK = "cube-double-play-singletask-task2-v0"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data dir with a generated cube-double-play dataset (3+1 episodes of 100 steps)."""
    from tql.data import generate_dataset
    from tql.tasks import get_task

    data_dir = tmp_path_factory.mktemp("data")
    generate_dataset(get_task(TINY_TASK), data_dir, episodes=3, episode_length=100, seed=0, progress=False)
    return data_dir
