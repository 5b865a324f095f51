"""OGBench data: offline generation with OGBench's oracles, loading/relabelling, sampling.

Modules:

- ``oracles``: one episode as OGBench's scripted oracles collect it;
- ``collect``: episodes with their own seeds, in this process or over worker processes;
- ``generate``: OGBench-format dataset files from them, written atomically;
- ``datasets``: finding, loading and relabelling datasets for a task;
- ``provision``: a run's dataset: found, generated when missing, checked against its size;
- ``signal``: whether a task's data, relabelled for it, holds more than one reward;
- ``sampler``: uniform minibatches on one device.

May import: ``tql.tasks``, ``tql.envs``, ``tql.io``, ``tql.errors``, numpy, torch, ogbench.
Public names: those below; import them from here.
"""

from tql.data.datasets import (
    GENERATED_SUBDIR,
    META_KEY,
    DatasetPaths,
    DataSize,
    GeneratedPaths,
    TaskData,
    TaskGoal,
    dataset_paths,
    find_dataset,
    load_task_data,
    read_generated_meta,
    relabel,
    sized_dataset_paths,
    sized_folder,
    subgoal_successes,
    task_goal,
)
from tql.data.collect import available_cpus
from tql.data.generate import default_episodes, generate_dataset, write_npz_atomic
from tql.data.oracles import SUPPORTED_ENVS, SUPPORTED_TYPES
from tql.data.provision import expected_size, provide_task_data, size_warning
from tql.data.sampler import ReplaySampler

__all__ = [
    "GENERATED_SUBDIR",
    "META_KEY",
    "SUPPORTED_ENVS",
    "SUPPORTED_TYPES",
    "DataSize",
    "DatasetPaths",
    "GeneratedPaths",
    "ReplaySampler",
    "TaskData",
    "TaskGoal",
    "available_cpus",
    "dataset_paths",
    "default_episodes",
    "expected_size",
    "find_dataset",
    "generate_dataset",
    "load_task_data",
    "provide_task_data",
    "read_generated_meta",
    "relabel",
    "size_warning",
    "sized_dataset_paths",
    "sized_folder",
    "subgoal_successes",
    "task_goal",
    "write_npz_atomic",
]
