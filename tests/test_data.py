"""tql.data: generation round trip, reward relabelling vs the environments, loading, sampling.

Datasets are tiny (a few episodes of ~80 steps) and generated once per domain per module.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest
import torch

import ogbench  # noqa: F401  (registers the environments)
from ogbench.relabel_utils import relabel_dataset
from ogbench.utils import load_dataset
from tql.data import (
    META_KEY,
    ReplaySampler,
    find_dataset,
    generate_dataset,
    load_task_data,
    read_generated_meta,
    relabel,
    task_goal,
    write_npz_atomic,
)
from tql.data import oracles as oracles_module
from tql.data.oracles import (
    P_RANDOM_ACTION_CUBE_SCENE,
    P_RANDOM_ACTION_PUZZLE,
    maybe_random_action,
    random_action_probability,
)
from tql.errors import MissingDatasetError, TQLError
from tql.tasks import TaskSpec, get_task

EPISODES = 3  # -> 1 validation episode
LENGTH = 80
DOMAINS = ("cube-double-play", "scene-play", "puzzle-3x3-play")
# Tasks whose start differs from the goal, so the recorded states include failures.
RELABEL_TASKS = (
    "cube-double-play-singletask-task2-v0",
    "scene-play-singletask-task2-v0",
    "puzzle-3x3-play-singletask-task1-v0",
)


def _task(domain: str, k: int = 2) -> TaskSpec:
    return get_task(f"{domain}-singletask-task{k}-v0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ogdata")


@pytest.fixture(scope="module")
def generated(data_dir):
    """domain -> GeneratedPaths, generating each domain lazily once."""
    cache: dict = {}

    def get(domain: str):
        if domain not in cache:
            cache[domain] = generate_dataset(
                _task(domain), data_dir, episodes=EPISODES, episode_length=LENGTH, seed=0, progress=False
            )
        return cache[domain]

    return get


# --------------------------------------------------------------------------------------------
# Generation round trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS)
def test_generated_files_round_trip(domain, generated, data_dir):
    task = _task(domain)
    paths = generated(domain)
    assert paths.train == data_dir / "generated" / f"{domain}-v0.npz"
    assert paths.val == data_dir / "generated" / f"{domain}-v0-val.npz"
    assert not (data_dir / f"{domain}-v0.npz").exists()  # never at the official path

    for path, n_eps in ((paths.train, EPISODES), (paths.val, 1)):
        n = n_eps * LENGTH
        with np.load(path) as raw:
            assert raw["observations"].shape == (n, task.obs_dim)
            assert raw["actions"].shape == (n, task.act_dim)
            assert raw["observations"].dtype == raw["actions"].dtype == raw["qpos"].dtype == np.float32
            assert raw["terminals"].dtype == np.bool_
            assert np.abs(raw["actions"]).max() <= 1.0
            # terminals: exactly the last step of every episode.
            assert np.flatnonzero(raw["terminals"]).tolist() == [LENGTH * (e + 1) - 1 for e in range(n_eps)]
            if domain.startswith(("scene", "puzzle")):
                assert raw["button_states"].dtype == np.int64 and len(raw["button_states"]) == n
            else:
                assert "button_states" not in raw.files

        regular = load_dataset(str(path), add_info=True)
        assert regular["observations"].shape == (n - n_eps, task.obs_dim)
        assert regular["next_observations"].shape == (n - n_eps, task.obs_dim)
        assert regular["terminals"].sum() == n_eps
        # Within an episode the next observation is the following recorded one.
        np.testing.assert_array_equal(
            regular["next_observations"][: LENGTH - 2], regular["observations"][1 : LENGTH - 1]
        )
        compact = load_dataset(str(path), compact_dataset=True)
        assert compact["observations"].shape == (n, task.obs_dim)
        assert compact["valids"].sum() == n - n_eps

        meta = read_generated_meta(path)
        assert meta["generator"] == "tql.data.generate"
        assert meta["dataset_type"] == "play" and meta["seed"] == 0 and meta["p_random_action"] == 0.0
        assert meta["episodes"] == n_eps and meta["episode_length"] == LENGTH
        assert meta["ogbench_version"] and meta["created"]


def test_objects_actually_move(generated):
    """The oracles do manipulate: cubes move in cube-double, button states change in puzzles."""
    with np.load(generated("cube-double-play").train) as raw:
        assert np.ptp(raw["qpos"][:, 14:17], axis=0).max() > 0.02
    with np.load(generated("puzzle-3x3-play").train) as raw:
        assert len(np.unique(raw["button_states"], axis=0)) > 1


def test_generation_is_reproducible(generated, tmp_path):
    again = generate_dataset(
        _task("cube-double-play"), tmp_path, episodes=EPISODES, episode_length=LENGTH, seed=0, progress=True
    )
    with np.load(generated("cube-double-play").train) as a, np.load(again.train) as b:
        for key in ("observations", "actions", "qpos", "terminals"):
            np.testing.assert_array_equal(a[key], b[key])
    state = np.random.get_state()
    other = generate_dataset(
        "cube-double-play", tmp_path / "s1", episodes=1, episode_length=20, seed=1, progress=False
    )
    # The caller's global numpy RNG state is restored afterwards.
    assert np.array_equal(np.random.get_state()[1], state[1])
    with np.load(again.train) as a, np.load(other.train) as b:
        assert not np.array_equal(a["observations"][:20], b["observations"])


def test_noisy_dataset_type(tmp_path, monkeypatch):
    """'noisy' uses the Markov oracles (all four of them in scene) and OGBench's random actions:
    each step's draw is recorded, and the random ones are exactly the stored actions."""
    draws: list = []

    def recording(rng, p, act_dim):
        draws.append(maybe_random_action(rng, p, act_dim))
        return draws[-1]

    monkeypatch.setattr(oracles_module, "maybe_random_action", recording)
    paths = generate_dataset(
        _task("scene-play"), tmp_path, episodes=1, episode_length=60, seed=0, dataset_type="noisy", progress=False
    )
    assert paths.train.name == "scene-noisy-v0.npz"
    meta = read_generated_meta(paths.train)
    assert meta["dataset_type"] == "noisy" and meta["p_random_action"] == P_RANDOM_ACTION_CUBE_SCENE == 0.1
    assert meta["redone_episodes"] == 0  # so the draws line up with the stored rows
    with np.load(paths.train) as raw, np.load(paths.val) as val:
        assert raw["actions"].shape == (60, 5) and np.abs(raw["actions"]).max() <= 1.0
        actions = np.concatenate([raw["actions"], val["actions"]])
    assert len(draws) == len(actions) == 120
    rows = [i for i, d in enumerate(draws) if d is not None]
    p = meta["p_random_action"]
    assert abs(len(rows) - p * len(draws)) <= 3 * np.sqrt(len(draws) * p * (1 - p))
    np.testing.assert_array_equal(actions[rows], np.asarray([draws[i] for i in rows], dtype=np.float32))


def test_random_action_probability_is_ogbenchs():
    """OGBench's noisy datasets: 0.1 for cube and scene, 0.2 for puzzles; play has none."""
    assert P_RANDOM_ACTION_PUZZLE == 0.2
    for env_base, p in (("cube-double", 0.1), ("cube-triple", 0.1), ("scene", 0.1),
                        ("puzzle-3x3", 0.2), ("puzzle-4x4", 0.2)):
        assert random_action_probability(env_base, "noisy") == p
        assert random_action_probability(env_base, "play") == 0.0


def test_maybe_random_action_decides_with_probability_p():
    rng = np.random.default_rng(0)
    always = [maybe_random_action(rng, 1.0, 5) for _ in range(2000)]
    stacked = np.stack(always)
    assert stacked.shape == (2000, 5) and np.abs(stacked).max() <= 1.0
    assert stacked.min() < -0.99 and stacked.max() > 0.99 and abs(stacked.mean()) < 0.05  # uniform
    state = np.random.get_state()
    assert all(maybe_random_action(np.random, 0.0, 5) is None for _ in range(1000))
    assert np.array_equal(np.random.get_state()[1], state[1])  # p = 0 draws nothing: 'play' unchanged
    n, p, legacy = 10_000, 0.2, np.random.RandomState(1)  # the generator passes numpy's global RNG
    hits = sum(maybe_random_action(legacy, p, 5) is not None for _ in range(n))
    assert abs(hits - n * p) <= 3 * np.sqrt(n * p * (1 - p))


def test_unsupported_domain_raises():
    antmaze = TaskSpec("antmaze-large-navigate-singletask-task1-v0", "antmaze-large", "navigate", 1, 29, 8, 1000)
    with pytest.raises(TQLError, match="antmaze-large-navigate.*cube-double") as err:
        generate_dataset(antmaze, "/nonexistent", episodes=1, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(TQLError, match="explore"):
        generate_dataset(_task("cube-double-play"), "/nonexistent", episodes=1, dataset_type="explore", progress=False)


# --------------------------------------------------------------------------------------------
# Reward relabelling against the environments' own success signal
# --------------------------------------------------------------------------------------------


def _force_goal_state(u) -> None:
    """Put the single-task env's objects in their goal configuration (arm untouched)."""
    data = u._data
    for i in range(getattr(u, "_num_cubes", 0)):
        data.joint(f"object_joint_{i}").qpos[:3] = data.mocap_pos[u._cube_target_mocap_ids[i]]
        data.joint(f"object_joint_{i}").qpos[3:] = [1.0, 0.0, 0.0, 0.0]
    if hasattr(u, "_target_drawer_pos"):
        data.joint("drawer_slide").qpos[0] = u._target_drawer_pos
        data.joint("window_slide").qpos[0] = u._target_window_pos
    data.qvel[:] = 0.0
    if hasattr(u, "_target_button_states"):
        u._cur_button_states = np.asarray(u._target_button_states).copy()
        u._apply_button_states()
    mujoco.mj_forward(u._model, data)


def _record_env(env, seed: int = 0) -> dict[str, np.ndarray]:
    """Step the single-task env: random actions, then zero actions from the goal state.

    Single-task envs use success_timing='pre': step(a) returns the reward and success of the
    state a was taken in, whose qpos is info['prev_qpos']. ``info['success']`` is computed
    at the end of the previous step, so it is stale right after a reset or a manual state
    change; those rows are marked invalid for the success check (the reward is always fresh).
    """
    env.action_space.seed(seed)
    u = env.unwrapped
    rows: dict[str, list] = {k: [] for k in ("qpos", "qvel", "button_states", "success", "reward", "valid")}

    def step(action, valid: bool) -> None:
        _, reward, _, _, info = env.step(action)
        rows["qpos"].append(info["prev_qpos"])
        rows["qvel"].append(info["prev_qvel"])
        rows["button_states"].append(info.get("prev_button_states", np.zeros(0, np.int64)))
        rows["success"].append(bool(info["success"]))
        rows["reward"].append(reward)
        rows["valid"].append(valid)

    env.reset(seed=seed)
    for i in range(8):
        step(env.action_space.sample(), valid=i > 0)
    env.reset(seed=seed + 1)
    _force_goal_state(u)
    step(np.zeros(5), valid=False)
    for _ in range(3):
        step(np.zeros(5), valid=True)
    return {k: np.asarray(v) for k, v in rows.items()}


def _independent_successes(env, rec: dict[str, np.ndarray]) -> np.ndarray:
    """Per-row subgoal successes read off the env, via mujoco joint addresses (not our indices).

    The single-task targets are fixed by the task, so any reset state of the env serves."""
    u = env.unwrapped
    cols = []
    for i in range(getattr(u, "_num_cubes", 0)):
        adr = u._model.joint(f"object_joint_{i}").qposadr[0]
        target = u._data.mocap_pos[u._cube_target_mocap_ids[i]]
        cols.append(np.linalg.norm(rec["qpos"][:, adr : adr + 3] - target, axis=-1) <= 0.04)
    if hasattr(u, "_target_button_states"):
        cols.extend((rec["button_states"] == u._target_button_states).T)
    if hasattr(u, "_target_drawer_pos"):
        for joint, target in (("drawer_slide", u._target_drawer_pos), ("window_slide", u._target_window_pos)):
            adr = u._model.joint(joint).qposadr[0]
            cols.append(np.abs(rec["qpos"][:, adr] - target) <= 0.04)
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("env_task", RELABEL_TASKS)
def test_relabel_matches_environment(env_task):
    task = get_task(env_task)
    env = gymnasium.make(task.env_name, terminate_at_goal=False)
    rec = _record_env(env)
    data = {"qpos": rec["qpos"], "qvel": rec["qvel"]}
    if not task.env_base.startswith("cube"):
        data["button_states"] = rec["button_states"]
    rewards, masks = relabel(task_goal(task.env_name), data)

    valid = rec["valid"]
    assert rec["success"][valid].any() and not rec["success"][valid].all()  # both cases covered
    np.testing.assert_array_equal(masks[valid], 1.0 - rec["success"][valid])
    np.testing.assert_array_equal(rewards, rec["reward"])  # the env's own per-subgoal reward

    successes = _independent_successes(env, rec)
    np.testing.assert_array_equal(rewards, successes.sum(-1) - successes.shape[-1])
    np.testing.assert_array_equal(masks, 1.0 - successes.all(-1))

    reference = copy.deepcopy(data)
    relabel_dataset(task.env_name, env, reference)
    env.close()
    np.testing.assert_array_equal(rewards, reference["rewards"])
    np.testing.assert_array_equal(masks, reference["masks"])


@pytest.mark.parametrize("domain", DOMAINS)
def test_load_task_data_relabels_generated(domain, generated, data_dir):
    task = _task(domain)
    paths = generated(domain)
    td = load_task_data(task, data_dir, keep_info=True)
    assert td.kind == "generated" and td.paths == paths and td.meta["dataset_type"] == "play"
    n = EPISODES * (LENGTH - 1)
    assert td.train["observations"].shape == (n, task.obs_dim)
    assert td.train["next_observations"].shape == (n, task.obs_dim)
    assert td.train["rewards"].shape == td.train["masks"].shape == (n,)
    assert td.train["terminals"].sum() == EPISODES
    assert td.val["observations"].shape == (LENGTH - 1, task.obs_dim)

    reference = load_dataset(str(paths.train), add_info=True)
    env = gymnasium.make(task.env_name)
    relabel_dataset(task.env_name, env, reference)
    env.close()
    np.testing.assert_array_equal(td.train["rewards"], reference["rewards"])
    np.testing.assert_array_equal(td.train["masks"], reference["masks"])
    assert ((td.train["masks"] == 0) == (td.train["rewards"] == 0)).all()

    lean = load_task_data(task, data_dir)  # info arrays dropped by default
    assert "qpos" not in lean.train and "rewards" in lean.val


# --------------------------------------------------------------------------------------------
# Loader errors and kind detection
# --------------------------------------------------------------------------------------------


def test_missing_dataset_message(tmp_path):
    task = _task("cube-double-play")
    with pytest.raises(MissingDatasetError) as err:
        load_task_data(task, tmp_path)
    msg = str(err.value)
    assert "tql-tune data make cube-double-play-singletask-task2-v0" in msg
    assert "download_datasets" in msg and "cube-double-play-v0.npz" in msg and "\n" not in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(TQLError, match="unknown data kind"):
        load_task_data(task, tmp_path, kind="mystery")


def _copy_to_official(src_paths, dst_dir: Path, keep_marker: bool) -> None:
    for src in src_paths:
        with np.load(src) as raw:
            arrays = {k: raw[k] for k in raw.files if keep_marker or k != META_KEY}
        write_npz_atomic(dst_dir / src.name, arrays)


def test_kind_detection(generated, tmp_path):
    task = _task("puzzle-3x3-play")
    src = generated("puzzle-3x3-play")

    _copy_to_official(src, tmp_path, keep_marker=False)
    td = load_task_data(task, tmp_path)
    assert td.kind == "official" and td.paths.train == tmp_path / "puzzle-3x3-play-v0.npz" and td.meta == {}
    with pytest.raises(MissingDatasetError, match="tql-tune data make"):
        load_task_data(task, tmp_path, kind="generated")

    _copy_to_official(src, tmp_path, keep_marker=True)  # a generated file at the official path
    assert load_task_data(task, tmp_path).kind == "generated"
    with pytest.raises(MissingDatasetError, match="is generated data"):
        find_dataset(task, tmp_path, kind="official")

    # Official files win over generated/ under 'auto'; 'generated' picks the folder.
    _copy_to_official(src, tmp_path, keep_marker=False)
    (tmp_path / "generated").mkdir()
    for p in src:
        shutil.copy(p, tmp_path / "generated" / p.name)
    assert find_dataset(task, tmp_path)[1] == "official"
    paths, kind, meta = find_dataset(task, tmp_path, kind="generated")
    assert kind == "generated" and paths.train.parent.name == "generated" and meta["seed"] == 0


def test_corrupt_files(generated, tmp_path):
    task = _task("puzzle-3x3-play")
    src = generated("puzzle-3x3-play")
    bad = tmp_path / "puzzle-3x3-play-v0.npz"
    shutil.copy(src.val, tmp_path / "puzzle-3x3-play-v0-val.npz")
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(TQLError, match="puzzle-3x3-play-v0.npz"):
        load_task_data(task, tmp_path)
    with np.load(src.train) as raw:
        arrays = {k: raw[k] for k in raw.files if k != "button_states"}
    write_npz_atomic(bad, arrays)
    with pytest.raises(TQLError, match="missing key 'button_states'") as err:
        load_task_data(task, tmp_path)
    assert str(bad) in str(err.value)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _failing_savez(*args, **kwargs):
    file = args[0]
    file.write(b"PK\x03\x04 partial")  # half a zip, then the "crash"
    raise OSError("disk full (simulated)")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"
    write_npz_atomic(target, {"a": np.arange(5)})
    before = target.read_bytes()

    monkeypatch.setattr(np, "savez_compressed", _failing_savez)
    with pytest.raises(OSError, match="simulated"):
        write_npz_atomic(target, {"a": np.arange(7)})
    with pytest.raises(OSError):
        write_npz_atomic(tmp_path / "new.npz", {"a": np.arange(7)})
    monkeypatch.undo()

    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["x.npz"]  # no temp file, no new target
    with np.load(target) as f:
        np.testing.assert_array_equal(f["a"], np.arange(5))


def test_interrupted_generation_is_not_loadable(tmp_path, monkeypatch):
    """A crash while writing the train file leaves no train file, so nothing half-made loads."""
    real = np.savez_compressed
    calls = {"n": 0}

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            _failing_savez(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "savez_compressed", fail_second)
    task = _task("cube-double-play")
    with pytest.raises(OSError):
        generate_dataset(task, tmp_path, episodes=1, episode_length=20, progress=False)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "generated")) == ["cube-double-play-v0-val.npz"]
    with pytest.raises(MissingDatasetError, match="missing next to"):
        load_task_data(task, tmp_path)


# --------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------


def _toy_transitions(n: int = 50, obs_dim: int = 4, act_dim: int = 2) -> dict[str, np.ndarray]:
    obs = np.tile(np.arange(n, dtype=np.float64)[:, None], (1, obs_dim))  # row i holds i
    return {
        "observations": obs,
        "next_observations": obs + 1,
        "actions": np.zeros((n, act_dim), np.float32),
        "rewards": -np.ones(n),
        "masks": np.ones(n, np.float32),
        "terminals": np.zeros(n, np.float32),
    }


def test_sampler_batches():
    sampler = ReplaySampler(_toy_transitions(), device="cpu")
    assert len(sampler) == 50 and sampler.obs_dim == 4 and sampler.act_dim == 2
    assert sampler.nbytes == 4 * (50 * 4 * 2 + 50 * 2 + 50 * 2)
    batch = sampler.sample(32)
    assert batch["observations"].shape == (32, 4) and batch["next_observations"].shape == (32, 4)
    assert batch["actions"].shape == (32, 2) and batch["rewards"].shape == (32,) and batch["masks"].shape == (32,)
    assert all(t.dtype == torch.float32 for t in batch.values())
    # Rows stay aligned across keys.
    torch.testing.assert_close(batch["next_observations"], batch["observations"] + 1)

    seen = sampler.sample(5000)["observations"][:, 0].long().unique()
    assert seen.tolist() == list(range(50))

    b1 = sampler.sample(64, generator=torch.Generator().manual_seed(3))
    b2 = sampler.sample(64, generator=torch.Generator().manual_seed(3))
    b3 = sampler.sample(64, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    assert not torch.equal(b1["observations"], b3["observations"])


def test_sampler_rejects_incomplete_data():
    data = _toy_transitions()
    del data["masks"]
    with pytest.raises(TQLError, match="masks"):
        ReplaySampler(data)


def test_sampler_on_loaded_data(generated, data_dir):
    task = _task("scene-play")
    generated("scene-play")
    sampler = ReplaySampler(load_task_data(task, data_dir).train)
    batch = sampler.sample(16, generator=torch.Generator().manual_seed(0))
    assert sampler.obs_dim == task.obs_dim and sampler.act_dim == task.act_dim
    assert batch["observations"].shape == (16, task.obs_dim)
    assert json.loads(json.dumps(read_generated_meta(generated("scene-play").train)))["split"] == "train"


# ---------------------------------------------------------------- signal
def _split_with_cubes(goal, rows: list[tuple[bool, bool]], template: np.ndarray) -> dict[str, np.ndarray]:
    """A hand-built split: per transition, whether cube 0 and cube 1 sit on their targets."""
    qpos = np.repeat(template[None], len(rows), axis=0)
    for i, placed in enumerate(rows):
        for cube, on_target in enumerate(placed):
            start = 14 + 7 * cube
            qpos[i, start:start + 3] = goal.cube_xyzs[cube] + (0.0 if on_target else 0.3)
    return {"qpos": qpos}


def test_data_signal_reads_levels_successes_and_coverage_from_hand_built_transitions(tmp_path):
    from tql.data import TaskData
    from tql.data.signal import data_signal

    task = _task("cube-double-play", 2)
    goal = task_goal(task.env_name)
    template = np.zeros(14 + 7 * 2 + 2, dtype=np.float32)
    rows = [(False, False), (True, False), (True, True), (True, False)]
    data = TaskData(train=_split_with_cubes(goal, rows, template), val={}, kind="generated", paths=None)
    signal = data_signal(task, data)
    assert signal.has_signal and signal.reward_levels == [0, 1, 2] and signal.success_transitions == 1
    assert signal.subtask_coverage == pytest.approx([3 / 4, 1 / 4]) and signal.verdict() == "signal"
    constant = TaskData(train=_split_with_cubes(goal, [(True, False)] * 5, template), val={}, kind="generated",
                        paths=None)
    flat = data_signal(task, constant)
    assert not flat.has_signal and flat.reward_levels == [1]
    assert flat.verdict() == "no signal for this task: constant reward (1 of 2 done)"


def test_data_signal_agrees_with_the_relabelled_rewards(data_dir, generated):
    """The signal's levels are the distinct relabelled rewards + N, for generated data."""
    from tql.data.signal import data_signal

    generated("cube-double-play")
    for k in (1, 2, 3):
        task = _task("cube-double-play", k)
        data = load_task_data(task, data_dir, keep_info=True)
        signal = data_signal(task, data)
        assert signal.reward_levels == sorted(int(r) + 2 for r in np.unique(data.train["rewards"]))
        assert signal.success_transitions == int((data.train["masks"] == 0).sum())
