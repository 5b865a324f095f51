"""Finding, loading and relabelling OGBench datasets (official or generated).

Layout of a data directory (``--dir``)::

    <data_dir>/cube-double-play-v0.npz            official files (ogbench.download_datasets)
    <data_dir>/cube-double-play-v0-val.npz
    <data_dir>/generated/cube-double-play-v0.npz  our generator's files (tql.data.generate)
    <data_dir>/generated/cube-double-play-v0-val.npz
    <data_dir>/generated/40ep-1001steps/cube-double-play-v0.npz   a generated dataset of
    <data_dir>/generated/40ep-1001steps/cube-double-play-v0-val.npz   another size, made beside

A run that expects more data than ``generated/`` holds (``load_task_data(..., expect=...)``)
takes the smallest sized folder that holds enough, so a small smoke dataset and a profile's
larger one live side by side and each run finds its own.

Generated files carry a ``tql_generated`` key (JSON metadata); such a file is reported as
``kind='generated'`` wherever it lies, so generated data never passes for official data.

Rewards follow OGBench's single-task relabelling (``ogbench/relabel_utils.py``), restated
here in vectorised numpy: for each transition (s, a, s'), reward = (#satisfied subgoals) -
(#subgoals) and mask = 0 only when every subgoal is satisfied, both computed on the *current*
state s (its qpos / button states). This matches the single-task environments, which use
``success_timing='pre'``: the reward and ``info['success']`` returned by ``env.step(a)``
describe the state the action was taken in.
"""

from __future__ import annotations

import functools
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tql.envs import make_env
from tql.errors import MissingDatasetError, TQLError
from tql.tasks import TaskSpec

GENERATED_SUBDIR = "generated"
META_KEY = "tql_generated"
KINDS = ("auto", "official", "generated")
REQUIRED_KEYS = ("observations", "actions", "terminals", "qpos")

# qpos layout of the manipulation environments (arm and gripper joints come first).
QPOS_OBJ_START = 14
QPOS_CUBE_LEN = 7
CUBE_TOL = 0.04  # same tolerance as the environments' success checks
SLIDE_TOL = 0.04

# What a run records about its dataset's size (TaskData.size_record; trial attrs copy the first two).
SIZE_FIELDS = ("data_episodes_found", "data_transitions", "data_val_episodes", "data_val_transitions")


class DatasetPaths(NamedTuple):
    """The train and validation files of one dataset."""

    train: Path
    val: Path


# What generate_dataset returns; same shape as any other pair of dataset files.
GeneratedPaths = DatasetPaths


class DataSize(NamedTuple):
    """How much data a run expects: training episodes of ``episode_length`` steps (each episode
    gives ``episode_length - 1`` transitions, as ``ogbench.utils.load_dataset`` makes them)."""

    episodes: int
    episode_length: int

    @property
    def transitions(self) -> int:
        return self.episodes * (self.episode_length - 1)

    def held_by(self, episodes: int, transitions: int) -> bool:
        """Whether a dataset of this many episodes and transitions holds at least this size."""
        return episodes >= self.episodes and transitions >= self.transitions


@dataclass
class TaskData:
    """Transitions of one task, rewards relabelled for it, plus where they came from."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    kind: str  # 'official' or 'generated'
    paths: DatasetPaths
    meta: dict = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        """Training episodes (trajectories): ``terminals`` marks each one's last transition."""
        return _count_episodes(self.train)

    @property
    def transitions(self) -> int:
        return len(self.train["observations"])

    @property
    def val_episodes(self) -> int:
        return _count_episodes(self.val)

    @property
    def val_transitions(self) -> int:
        return len(self.val["observations"])

    @property
    def name(self) -> str:
        """The dataset's file name without .npz (e.g. 'cube-double-play-v0'), with its sized
        folder when it lies in one (e.g. 'cube-double-play-v0 (40ep-1001steps)')."""
        folder = self.paths.train.parent.name
        return f"{self.paths.train.stem} ({folder})" if _SIZED_FOLDER.match(folder) else self.paths.train.stem

    def size_record(self) -> dict[str, int]:
        """The dataset's size as run records (config.json, summary.json) store it (``SIZE_FIELDS``)."""
        values = (self.episodes, self.transitions, self.val_episodes, self.val_transitions)
        return dict(zip(SIZE_FIELDS, values))

    def describe(self) -> str:
        """One line: kind, name, episodes and transitions (what a run prints about its data)."""
        return (f"{self.kind} {self.name}, {self.episodes:,} episodes, {self.transitions:,} transitions "
                f"(+{self.val_episodes:,} val episodes)")


def _count_episodes(split: dict[str, np.ndarray]) -> int:
    return int(np.count_nonzero(split["terminals"]))


def dataset_paths(data_dir: str | Path, dataset_name: str, generated: bool) -> DatasetPaths:
    """File pair of ``dataset_name`` in ``data_dir`` (official layout) or its generated/ folder."""
    folder = Path(data_dir).expanduser()
    if generated:
        folder = folder / GENERATED_SUBDIR
    return DatasetPaths(folder / f"{dataset_name}.npz", folder / f"{dataset_name}-val.npz")


def sized_folder(data_dir: str | Path, episodes: int, episode_length: int) -> Path:
    """``<data_dir>/generated/<N>ep-<L>steps``: where a dataset of a given size is made beside
    the one in ``generated/``."""
    return Path(data_dir).expanduser() / GENERATED_SUBDIR / f"{episodes}ep-{episode_length}steps"


def sized_dataset_paths(data_dir: str | Path, dataset_name: str, episodes: int, episode_length: int) -> DatasetPaths:
    """File pair of ``dataset_name`` in its sized folder (same file names as OGBench's)."""
    folder = sized_folder(data_dir, episodes, episode_length)
    return DatasetPaths(folder / f"{dataset_name}.npz", folder / f"{dataset_name}-val.npz")


# --------------------------------------------------------------------------------------------
# Locating files and detecting their kind
# --------------------------------------------------------------------------------------------


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TQLError(
            f"corrupt dataset file {path}: cannot be read ({exc}); delete it and fetch or generate it again"
        ) from exc


def read_generated_meta(path: str | Path) -> dict | None:
    """The ``tql_generated`` metadata of a dataset file, or None for an official file."""
    path = Path(path)
    with _open_npz(path) as file:
        if META_KEY not in file.files:
            return None
        try:
            return json.loads(str(file[META_KEY][()]))
        except (ValueError, TypeError):
            # A marker we cannot parse still marks the file as generated.
            return {"unparsed": True}


def _pair_kind(paths: DatasetPaths) -> tuple[str, dict]:
    """'generated' if either file carries the marker (a mixed pair must not pass as official)."""
    metas = [read_generated_meta(p) for p in paths]
    generated = [m for m in metas if m is not None]
    if generated:
        return "generated", generated[0]
    return "official", {}


def _missing_message(task: TaskSpec, data_dir: Path, kind: str, notes: list[str]) -> str:
    name = task.dataset_name
    where = {
        "auto": f"{data_dir / (name + '.npz')} or {data_dir / GENERATED_SUBDIR / (name + '.npz')}",
        "official": f"{data_dir / (name + '.npz')}",
        "generated": f"{data_dir / GENERATED_SUBDIR / (name + '.npz')}",
    }[kind]
    extra = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"no {'' if kind == 'auto' else kind + ' '}dataset {name} (+ -val) for {task.name}: "
        f"looked for {where}{extra}; "
        f"fix: run `tql-tune data make {task.name} --dir {data_dir}` to generate it, or download the official "
        f"files with ogbench.download_datasets(['{name}'], '{data_dir}') "
        f"(or put {name}.npz and {name}-val.npz in {data_dir})"
    )


def find_dataset(
    task: TaskSpec, data_dir: str | Path, kind: str = "auto", expect: DataSize | None = None
) -> tuple[DatasetPaths, str, dict]:
    """Locate the dataset of ``task``: (paths, detected kind, generator metadata).

    'auto' tries the official location first, then ``generated/``. 'official' and
    'generated' accept only a pair whose detected kind matches (detection by the marker key,
    not by folder), so a generated file copied to the official path is never 'official'.
    expect: the size a run needs; when the generated pair in ``generated/`` is smaller, the
    smallest sized folder (``sized_folder``) that holds it is taken instead, if there is one.
    Sized folders are also the fallback when ``generated/`` itself has no pair.
    """
    if kind not in KINDS:
        raise TQLError(f"unknown data kind {kind!r}; valid: {', '.join(KINDS)}")
    data_dir = Path(data_dir).expanduser()
    notes: list[str] = []
    for generated_dir in (False, True):
        paths = dataset_paths(data_dir, task.dataset_name, generated_dir)
        present = [p.exists() for p in paths]
        if not any(present):
            continue
        if not all(present):
            missing = paths.val if present[0] else paths.train
            notes.append(f"{missing.name} missing next to {paths[present.index(True)]}")
            continue
        found_kind, meta = _pair_kind(paths)
        if kind in ("auto", found_kind):
            if found_kind == "generated" and expect is not None and not _meta_holds(meta, expect):
                return _sized_pair(task, data_dir, expect) or (paths, found_kind, meta)
            return paths, found_kind, meta
        notes.append(f"{paths.train} is {found_kind} data")
    sized = _sized_pair(task, data_dir, expect, fallback=True) if kind != "official" else None
    if sized is not None:
        return sized
    raise MissingDatasetError(_missing_message(task, data_dir, kind, notes))


_SIZED_FOLDER = re.compile(r"^(\d+)ep-(\d+)steps$")


def _meta_holds(meta: dict, expect: DataSize) -> bool:
    """Whether a generated file's metadata says it holds ``expect`` (unknown size: assume so)."""
    episodes, length = meta.get("train_episodes", meta.get("episodes")), meta.get("episode_length")
    if not isinstance(episodes, int) or not isinstance(length, int):
        return True
    return expect.held_by(episodes, DataSize(episodes, length).transitions)


def _sized_pair(
    task: TaskSpec, data_dir: Path, expect: DataSize | None, fallback: bool = False
) -> tuple[DatasetPaths, str, dict] | None:
    """The smallest complete generated pair in a sized folder that holds ``expect``; the largest
    one when ``expect`` is None, or with ``fallback`` when none holds it. None if none."""
    root = data_dir / GENERATED_SUBDIR
    sizes: list[tuple[DataSize, DatasetPaths]] = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        match = _SIZED_FOLDER.match(folder.name)
        paths = sized_dataset_paths(data_dir, task.dataset_name, *map(int, match.groups())) if match else None
        if paths is not None and paths.train.exists() and paths.val.exists():
            sizes.append((DataSize(*map(int, match.groups())), paths))
    sizes.sort(key=lambda item: (item[0].transitions, item[0].episodes))
    holding = [paths for size, paths in sizes if expect is not None and expect.held_by(size.episodes, size.transitions)]
    chosen = holding[0] if holding else (sizes[-1][1] if sizes and (fallback or expect is None) else None)
    if chosen is None:
        return None
    found_kind, meta = _pair_kind(chosen)
    return (chosen, found_kind, meta) if found_kind == "generated" else None


# --------------------------------------------------------------------------------------------
# Task goals and reward relabelling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskGoal:
    """The subgoals of a single-task environment, read from the environment after reset.

    Which subgoals count follows OGBench's relabel_utils: cube envs -> cube positions;
    scene -> cube positions, button states, drawer and window positions; puzzle -> buttons.
    """

    env_name: str
    num_cubes: int = 0
    num_buttons: int = 0
    cube_xyzs: np.ndarray | None = None  # (num_cubes, 3)
    button_states: np.ndarray | None = None  # (num_buttons,)
    drawer_pos: float | None = None
    window_pos: float | None = None

    @property
    def num_subgoals(self) -> int:
        n = 0 if self.cube_xyzs is None else len(self.cube_xyzs)
        n += 0 if self.button_states is None else len(self.button_states)
        return n + (self.drawer_pos is not None) + (self.window_pos is not None)


def _cube_targets(unwrapped) -> np.ndarray:
    """Target xyz of each cube: the mocap bodies that show the goal (indexed by cube)."""
    return unwrapped._data.mocap_pos[np.asarray(unwrapped._cube_target_mocap_ids)].copy()


def goal_from_env(env_name: str, env) -> TaskGoal:
    """Read the task's targets from a reset single-task environment (as relabel_utils does)."""
    u = env.unwrapped
    if "cube" in env_name:
        return TaskGoal(env_name, num_cubes=u._num_cubes, cube_xyzs=_cube_targets(u))
    if "scene" in env_name:
        return TaskGoal(
            env_name,
            num_cubes=u._num_cubes,
            num_buttons=u._num_buttons,
            cube_xyzs=_cube_targets(u),
            button_states=np.asarray(u._target_button_states).copy(),
            drawer_pos=float(u._target_drawer_pos),
            window_pos=float(u._target_window_pos),
        )
    if "puzzle" in env_name:
        return TaskGoal(
            env_name, num_buttons=u._num_buttons, button_states=np.asarray(u._target_button_states).copy()
        )
    raise TQLError(f"cannot relabel rewards for {env_name}: supported environments are cube-*, scene, puzzle-*")


@functools.lru_cache(maxsize=None)
def task_goal(env_name: str) -> TaskGoal:
    """Build (once per process) the goal of a single-task env by creating and resetting it."""
    env = make_env(env_name)
    try:
        # Single-task envs reset to a fixed task; the seed only moves the initial objects.
        env.reset(seed=0)
        return goal_from_env(env_name, env)
    finally:
        env.close()


def _need(data: dict, key: str, goal: TaskGoal) -> np.ndarray:
    if key not in data:
        raise TQLError(f"dataset has no {key!r} array, which relabelling {goal.env_name} needs")
    return data[key]


def subgoal_successes(goal: TaskGoal, data: dict[str, np.ndarray]) -> np.ndarray:
    """(N, num_subgoals) bool: which subgoals each row's current state satisfies."""
    parts: list[np.ndarray] = []
    if goal.cube_xyzs is not None:
        qpos = _need(data, "qpos", goal)
        n = goal.num_cubes
        # Cube i's position sits at qpos[14 + 7i : 14 + 7i + 3]; gather all cubes at once.
        cube_cols = QPOS_OBJ_START + QPOS_CUBE_LEN * np.arange(n)[:, None] + np.arange(3)[None, :]
        cube_xyzs = qpos[:, cube_cols]  # (N, n, 3)
        parts.append(np.linalg.norm(cube_xyzs - goal.cube_xyzs[None], axis=-1) <= CUBE_TOL)
    if goal.button_states is not None:
        parts.append(_need(data, "button_states", goal) == goal.button_states[None])
    slide_idx = QPOS_OBJ_START + goal.num_cubes * QPOS_CUBE_LEN + goal.num_buttons  # drawer, then window
    for offset, target in ((0, goal.drawer_pos), (1, goal.window_pos)):
        if target is not None:
            qpos = _need(data, "qpos", goal)
            parts.append((np.abs(qpos[:, slide_idx + offset] - target) <= SLIDE_TOL)[:, None])
    return np.concatenate(parts, axis=-1)


def relabel(goal: TaskGoal, data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, masks), float32: reward = #satisfied - #subgoals, mask = 0 iff all satisfied."""
    successes = subgoal_successes(goal, data)
    rewards = successes.sum(axis=-1) - successes.shape[-1]
    masks = 1.0 - successes.all(axis=-1)
    return rewards.astype(np.float32), masks.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

INFO_KEYS = ("qpos", "qvel", "button_states")


def _check_keys(path: Path, task: TaskSpec) -> None:
    needed = list(REQUIRED_KEYS)
    if task.env_base.startswith(("scene", "puzzle")):
        needed.append("button_states")
    with _open_npz(path) as file:
        for key in needed:
            if key not in file.files:
                raise TQLError(
                    f"corrupt dataset file {path}: missing key {key!r} (has {', '.join(sorted(file.files))}); "
                    f"delete it and fetch or generate it again"
                )


def load_split(path: Path, task: TaskSpec, goal: TaskGoal, keep_info: bool = False) -> dict[str, np.ndarray]:
    """Load one file as transitions (with next_observations) and relabel its rewards."""
    from ogbench.utils import load_dataset

    _check_keys(path, task)
    try:
        data = load_dataset(str(path), add_info=True)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise TQLError(f"corrupt dataset file {path}: {exc}") from exc
    data["rewards"], data["masks"] = relabel(goal, data)
    if not keep_info:
        for key in INFO_KEYS:
            data.pop(key, None)
    return data


def _check_dims(data: dict[str, np.ndarray], task: TaskSpec, path: Path) -> None:
    obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
    if (obs_dim, act_dim) != (task.obs_dim, task.act_dim):
        raise TQLError(
            f"dataset {path} has obs_dim={obs_dim}, act_dim={act_dim} but {task.name} expects "
            f"obs_dim={task.obs_dim}, act_dim={task.act_dim}; is it the right dataset?"
        )


def load_task_data(
    task: TaskSpec, data_dir: str | Path, kind: str = "auto", *, keep_info: bool = False,
    expect: DataSize | None = None,
) -> TaskData:
    """Find, load and relabel the dataset of ``task``.

    kind: 'auto' (official files first, then ``generated/``), 'official' or 'generated'.
    Each split has observations, actions, next_observations, terminals (1 at the last
    transition of a trajectory, from ogbench.utils.load_dataset), rewards and masks; with
    ``keep_info`` also qpos, qvel (and button_states) of the current state.
    expect: the size the run needs, to choose among generated datasets (``find_dataset``).
    Raises MissingDatasetError (with both fixes in the message) or TQLError (corrupt file).
    """
    paths, found_kind, meta = find_dataset(task, data_dir, kind, expect)
    goal = task_goal(task.env_name)
    train = load_split(paths.train, task, goal, keep_info)
    val = load_split(paths.val, task, goal, keep_info)
    _check_dims(train, task, paths.train)
    return TaskData(train=train, val=val, kind=found_kind, paths=paths, meta=meta)
