"""Study specs: the shipped default file, validation messages, the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.tuning.study_spec import Budget, StudySpec, load_spec, spec_from_dict
from tql.errors import ConfigError

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def test_shipped_default_file_equals_the_built_in_default():
    from_file = load_spec(STUDIES / "default.toml")
    assert from_file.replace(source="x") == load_spec(None).replace(source="x")


EXPERIMENTS = set(STUDIES.glob("experiment*.toml"))  # experiment specs (tests/test_experiment.py), not study specs


@pytest.mark.parametrize("path", sorted(set(STUDIES.glob("*.toml")) - EXPERIMENTS), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    load_spec(path).validate()


@pytest.mark.parametrize("path", sorted(EXPERIMENTS), ids=lambda p: p.name)
def test_every_shipped_experiment_spec_loads_with_its_study_specs(path):
    from autotune.experiment.spec import load_experiment

    spec = load_experiment(path)
    assert spec.tasks and spec.approaches
    load_spec(path.parent / spec.tuned_spec).validate()


def test_a_spec_of_another_version_or_not_toml_fails_in_one_line(tmp_path):
    from tql.errors import ConfigError

    newer, broken = tmp_path / "newer.toml", tmp_path / "broken.toml"
    newer.write_text("version = 2\n")
    broken.write_text("[search\n")
    with pytest.raises(ConfigError, match=r"version=2; this tql-tune reads version 1$"):
        load_spec(newer)
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_spec(broken)
    with pytest.raises(ConfigError, match=r"'.*missing.toml' is neither a file nor a built-in spec; built-in: default, "):
        load_spec(tmp_path / "missing.toml")


def test_budget_overrides_keep_other_profiles_defaults():
    spec = spec_from_dict({"budget": {"cpu": {"trials": 20}}})
    assert spec.budget("cpu") == Budget(20, 2) and spec.budget("smoke") == Budget(2, 1)


@pytest.mark.parametrize("raw, message", [
    ({"search": {"rho_low": 0.0}}, "search.rho_low=0.0"),
    ({"search": {"rho_high": 1.5}}, "need 0 < rho_low < rho_high <= 1"),
    ({"search": {"rho_lo": 0.2}}, "unknown key search.rho_lo; valid: rho_low, rho_high, log"),
    ({"sampler": {"name": "anneal"}}, "sampler.name='anneal' is not one of: tpe, gp, cmaes, grid, random"),
    ({"pruner": {"name": "hyper"}}, "pruner.name='hyper' is not one of: median, none"),
    ({"search": {"sharing": ["global", "heads"]}}, "search.sharing='heads' is not one of: layer_group, layer, global"),
    ({"search": {"sharing": ["global"]}}, "search.sharing=['global'] must list >= 2 different sharings"),
    ({"search": {"sharing": "global"}}, "search.sharing='global' must be a list of: layer_group, layer, global"),
    ({"objective": {"last_k": 0}}, "objective.last_k=0 must be an integer >= 1"),
    ({"budget": {"gpu": {"trials": 3}}}, "budget='gpu' is not one of: smoke, cpu, paper"),
    ({"budget": {"cpu": {"trials": 2.5}}}, "budget.cpu.trials=2.5 must be an integer >= 1"),
    ({"budget": {"cpu": {"runs": 2}}}, "unknown key budget.cpu.runs; valid: trials, seeds"),
    ({"version": 2}, "version=2; this tql-tune reads version 1"),
    ({"searchspace": {}}, "unknown table or key 'searchspace'"),
    ({"search": {"kind": "depth"}}, "search.kind='depth' is not one of: constant, knots, layers"),
    ({"search": {"kind": "layers"}, "sampler": {"name": "grid"}}, "sampler.name='grid' searches one constant rho"),
])
def test_bad_specs_name_the_field_and_the_valid_choices(raw, message):
    with pytest.raises(ConfigError, match=None) as info:
        spec_from_dict(raw, source="t.toml")
    assert message in str(info.value) and "study spec (t.toml)" in str(info.value)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="neither a file nor a built-in spec"):
        load_spec(tmp_path / "missing.toml")


def test_grid_points_span_the_range():
    assert StudySpec(rho_low=0.2, rho_high=1.0, grid_points=5).grid() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_a_layers_search_has_two_parameters_and_its_own_search_space():
    layers = spec_from_dict({"search": {"kind": "layers", "rho_low": 0.2}})
    assert layers.param_names() == ["rho_first", "rho_last"]
    assert layers.search_space() == {"rho_low": 0.2, "rho_high": 1.0, "log": False, "kind": "layers"}
    assert layers.search_space() != spec_from_dict({"search": {"rho_low": 0.2}}).search_space()


def test_the_objective_is_a_spec_field_success_by_default():
    assert load_spec(None).objective == "success"
    assert spec_from_dict({"objective": {"name": "progress", "last_k": 2}}).objective == "progress"
    with pytest.raises(ConfigError, match="objective.name='graded' is not one of: success, progress, gained"):
        spec_from_dict({"objective": {"name": "graded"}}, source="t.toml")


def test_a_sharing_search_is_part_of_the_search_space_and_of_the_grid():
    from autotune.tuning.studies import make_sampler
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task

    spec = spec_from_dict({"search": {"sharing": ["global", "layer_group"]}, "sampler": {"name": "grid",
                                                                                       "grid_points": 2}})
    assert spec.sharing == ("global", "layer_group")
    assert spec.search_space()["sharing"] == ["global", "layer_group"]
    assert "sharing" not in load_spec(None).search_space()  # studies that do not search it resume as before
    assert make_sampler(spec)._search_space == {"rho": [0.1, 1.0], "temperature_sharing": ["global", "layer_group"]}
    task = [get_task("cube-single-play-singletask-task1-v0")]
    assert RunPlan(tasks=task, spec=spec, trials=4, batch="auto", device="cuda").batch == 1
    with pytest.raises(ConfigError, match="exceeds the grid's 4 points"):
        RunPlan(tasks=task, spec=spec, trials=5)
    with pytest.raises(ConfigError, match="--batch 2: the members of a batch share one temperature layout"):
        RunPlan(tasks=task, spec=spec, trials=2, batch=2)


def test_workers_auto_is_one_process_per_core_on_a_cpu_and_one_on_cuda(monkeypatch):
    from autotune.tuning.trials import RunPlan, resolve_workers
    from tql.tasks import get_task

    monkeypatch.setattr("tql.data.available_cpus", lambda: 8)
    assert resolve_workers("auto", "cpu", jobs=50) == 8  # one thread each
    assert resolve_workers("auto", "cpu", jobs=50, threads=2) == 4  # cores / threads per worker
    assert resolve_workers("auto", "cpu", jobs=3) == 3  # no idle worker: at most one per job
    assert resolve_workers("auto", "cuda:0", jobs=50) == 1
    assert resolve_workers("3", "cuda", jobs=1) == 3  # a number is taken as given
    monkeypatch.setattr("tql.data.available_cpus", lambda: 1)
    assert resolve_workers("auto", "cpu", jobs=50) == 1
    monkeypatch.setattr("tql.data.available_cpus", lambda: 4)
    tasks = [get_task("cube-single-play-singletask-task1-v0"), get_task("scene-play-singletask-task1-v0")]
    spec = load_spec(None)
    # 2 tasks x ceil(3 trials / batches of 2) = 4 batches of trials; 4 cores.
    assert RunPlan(tasks=tasks, spec=spec, trials=3, batch=2, device="cpu").workers == 4
    assert RunPlan(tasks=tasks[:1], spec=spec, trials=3, batch=2, device="cpu").workers == 2
    assert RunPlan(tasks=tasks, spec=spec, trials=3, device="cpu", workers=1).workers == 1


@pytest.mark.parametrize("value", ["0", "x", "2.5", True])
def test_a_bad_workers_value_names_the_valid_choices(value):
    from autotune.tuning.trials import resolve_workers

    with pytest.raises(ConfigError, match=f"--workers {value!r} is not one of: auto, an integer >= 1"):
        resolve_workers(value, "cpu", jobs=4)
