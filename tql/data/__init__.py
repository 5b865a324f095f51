"""OGBench data: offline generation with OGBench's oracles, loading/relabelling, sampling."""

from tql.data.datasets import (
    GENERATED_SUBDIR,
    META_KEY,
    DatasetPaths,
    GeneratedPaths,
    TaskData,
    TaskGoal,
    dataset_paths,
    find_dataset,
    load_task_data,
    read_generated_meta,
    relabel,
    subgoal_successes,
    task_goal,
)
from tql.data.generate import SUPPORTED_ENVS, SUPPORTED_TYPES, generate_dataset, write_npz_atomic
from tql.data.sampler import ReplaySampler

__all__ = [
    "GENERATED_SUBDIR",
    "META_KEY",
    "SUPPORTED_ENVS",
    "SUPPORTED_TYPES",
    "DatasetPaths",
    "GeneratedPaths",
    "ReplaySampler",
    "TaskData",
    "TaskGoal",
    "dataset_paths",
    "find_dataset",
    "generate_dataset",
    "load_task_data",
    "read_generated_meta",
    "relabel",
    "subgoal_successes",
    "task_goal",
    "write_npz_atomic",
]
