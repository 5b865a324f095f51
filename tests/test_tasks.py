"""Task registry: names, dimensions (checked against the real environments), H̄ bounds."""

import math

import gymnasium
import ogbench  # noqa: F401  (registers the environments)
import pytest

import tql.tasks as tasks_module
from tql.errors import ConfigError, UnknownTaskError
from tql.targets import in_range, rho_table, target_table
from tql.tasks import PAPER_DOMAINS, get_task, paper_task_names, resolve_tasks


def test_all_resolves_to_the_papers_25_tasks():
    tasks = resolve_tasks("all")
    assert len(tasks) == 25 and len({t.name for t in tasks}) == 25
    assert [t.name for t in tasks] == paper_task_names()
    assert {t.domain for t in tasks} == set(PAPER_DOMAINS)


@pytest.mark.parametrize("domain", PAPER_DOMAINS)
def test_static_dimensions_match_the_environment(domain):
    task = get_task(f"{domain}-singletask-task1-v0")
    env = gymnasium.make(task.env_name)
    try:
        assert env.observation_space.shape == (task.obs_dim,)
        assert env.action_space.shape == (task.act_dim,)
        assert env.spec.max_episode_steps == task.episode_length
    finally:
        env.close()
    assert task.n_tokens == 1 + task.obs_dim + task.act_dim
    assert task.max_entropy == pytest.approx(math.log(task.n_tokens))


def test_domain_and_comma_lists_and_names():
    assert [t.task_id for t in resolve_tasks("scene-play")] == [1, 2, 3, 4, 5]
    mixed = resolve_tasks("puzzle-3x3-play-singletask-task4-v0, cube-triple-play")
    assert mixed[0].task_id == 4 and len(mixed) == 6
    task = get_task("cube-double-play-singletask-task2-v0")
    assert (task.env_name, task.dataset_name, task.data_env_name) == (
        "cube-double-singletask-task2-v0", "cube-double-play-v0", "cube-double-v0")
    assert task.alpha_fql == 300 and get_task("puzzle-4x4-play-singletask-task1-v0").alpha_fql == 1000


def test_other_manipulation_singletask_names_are_accepted():
    task = get_task("cube-single-play-singletask-task3-v0")
    assert task.obs_dim == 28 and task.episode_length == 200 and task.is_manipulation
    noisy = get_task("cube-double-noisy-singletask-task1-v0")
    assert noisy.dataset_name == "cube-double-noisy-v0" and noisy.env_name == "cube-double-singletask-task1-v0"
    bigger = get_task("puzzle-4x5-play-singletask-task1-v0")  # dimensions read from the env
    assert bigger.act_dim == 5 and bigger.alpha_fql == 1000


LOCOMOTION = ["antmaze-large-navigate-singletask-task1-v0", "humanoidmaze-medium-stitch-singletask-task2-v0",
              "antsoccer-arena-navigate-singletask-task1-v0", "pointmaze-medium-navigate-singletask-v0"]


@pytest.mark.parametrize("name", LOCOMOTION)
def test_locomotion_tasks_are_refused_by_name(name, monkeypatch):
    """Relabelling only knows manipulation subgoals, so these fail up front, from the name alone."""
    def no_lookup(*args):
        raise AssertionError("a locomotion name must be refused before any env or registry lookup")

    monkeypatch.setattr(tasks_module, "_registered_env_ids", no_lookup)
    monkeypatch.setattr(tasks_module, "_env_dims", no_lookup)
    for call in (get_task, resolve_tasks, lambda n: resolve_tasks(f"scene-play,{n}")):
        with pytest.raises(UnknownTaskError) as info:
            call(name)
        message = str(info.value)
        assert "\n" not in message and repr(name) in message and "locomotion" in message
        assert all(s in message for s in ("cube-*", "scene", "puzzle-*", "cube-double-play"))


@pytest.mark.parametrize("bad", ["visual-cube-double-play-singletask-task1-v0",
                                 "cube-double-navigate-singletask-task1-v0"])
def test_non_state_manipulation_names_are_refused(bad):
    """Pixel-based domains and locomotion dataset types have no data or relabelling here."""
    with pytest.raises(UnknownTaskError, match="manipulation") as info:
        get_task(bad)
    assert repr(bad) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["cube-double", "cube-double-play-singletask-task7-v0",
                                 "nosuchenv-play-singletask-task1-v0", ""])
def test_unknown_tasks_name_the_value_and_the_choices(bad):
    with pytest.raises(UnknownTaskError) as info:
        resolve_tasks(bad)
    message = str(info.value)
    assert "\n" not in message and "cube-double-play" in message and "all" in message
    if bad:
        assert repr(bad.strip()) in message


def test_target_entropy_bounds():
    task = get_task("cube-double-play-singletask-task1-v0")
    assert target_table(task.max_entropy, 2, task.max_entropy) == [[pytest.approx(task.max_entropy)] * 2] * 2
    for bad in (0.0, -1.0, task.max_entropy + 0.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"^target entropy .* is outside \(0, log n\]"):
            target_table(bad, 2, task.max_entropy)
        assert not in_range(bad, task.max_entropy)
    assert task.target_entropy(0.5) == pytest.approx(0.5 * math.log(43))
    with pytest.raises(ConfigError, match=r"^rho 1.5 is outside \(0, 1\]"):
        rho_table(1.5, 2, task.max_entropy)
    assert in_range(1.0) and not in_range(1.5) and not in_range(0.0)
