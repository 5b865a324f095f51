"""Runs mirrored into TensorBoard and W&B: the names a record gets, and, end to end, event
files read back through TensorBoard's own reader and the offline W&B run's file read back
record by record, both equal to ``metrics.jsonl``; a failing logger warns once and the run
goes on; a missing extra is one line."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pytest

from autotune import api
from autotune.tracking import check_loggers
from autotune.tracking.records import flat_config, record_scalars
from tests.conftest import TINY_TASK
from tests.wandb_files import read_run, run_files
from tql.errors import ConfigError
from tql.io import read_jsonl

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_log_values_are_checked_in_one_line():
    assert check_loggers(None) == ()
    assert check_loggers(["none"]) == ()
    assert check_loggers(["tensorboard", "wandb,tensorboard"]) == ("tensorboard", "wandb")
    with pytest.raises(ConfigError, match=r"^--log 'mlflow': choose from none, wandb, tensorboard$"):
        check_loggers(["wandb", "mlflow"])


def test_a_record_keeps_its_names_and_an_evaluation_gets_eval_names():
    train = {"step": 40, "type": "train", "critic/td_loss": 0.5, "entropy/l0_value": 1.25, "bad": math.nan}
    assert record_scalars(train) == [(None, 40, {"critic/td_loss": 0.5, "entropy/l0_value": 1.25})]
    member = {"step": 40, "type": "train", "member": 2, "alpha/l1_other": 0.75}
    assert record_scalars(member) == [(2, 40, {"alpha/l1_other": 0.75})]
    evaluation = {"type": "eval", "step": 100, "success_rate": 0.5, "progress": 0.25, "gained": 0.125,
                  "gained_episodes": [0.0, 0.25], "subtask_rates": [1.0, 0.0], "mean_return": -3.0, "episodes": 2}
    assert record_scalars(evaluation) == [(None, 100, {
        "eval/success_rate": 0.5, "eval/progress": 0.25, "eval/gained": 0.125, "eval/mean_return": -3.0,
        "eval/subtask_0": 1.0, "eval/subtask_1": 0.0})]
    fitness = {"type": "fitness", "step": 60, "fitness": [-0.5, -math.inf], "val_td": [0.5, 2.0], "copies": [[0, 1]]}
    assert record_scalars(fitness) == [(0, 60, {"pbt/fitness": -0.5, "pbt/val_td": 0.5}),
                                       (1, 60, {"pbt/val_td": 2.0, "pbt/copied_from": 0.0})]
    assert flat_config({"train": {"seed": 3, "agent": {"size": "0.03M"}, "hidden": (64, 64)}, "task": "t"}) == {
        "train/seed": 3, "train/agent/size": "0.03M", "train/hidden": "(64, 64)", "task": "t"}


def _tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def _expected(rows: list[dict]) -> dict[str, dict[int, float]]:
    expected: dict[str, dict[int, float]] = {}
    for row in rows:
        for _, step, values in record_scalars(row):
            for name, value in values.items():
                expected.setdefault(name, {})[step] = value
    return expected


def test_a_run_in_tensorboard_and_wandb_holds_the_values_of_its_metrics_file(tiny_data_dir, tmp_path):
    from rich.console import Console

    out, console = tmp_path / "run", Console(record=True, width=400)
    api.train(TINY_TASK, profile="smoke", steps=60, rho=0.5, data_dir=tiny_data_dir, out=out, eval_every=60,
              log=["tensorboard", "wandb"], wandb_project="tql-tests", console=console, progress=False)
    rows = read_jsonl(out / "metrics.jsonl")
    expected = _expected(rows)
    layers = [name for name in expected if name.startswith("entropy/l")]
    assert len(layers) >= 4 and "eval/success_rate" in expected and "target_entropy/l0_value" in expected

    seen = _tensorboard_scalars(out)
    assert set(seen) == set(expected)
    for name, values in expected.items():  # TensorBoard keeps float32
        assert seen[name] == pytest.approx(values, rel=1e-6, abs=1e-7), name

    [file] = run_files(out)
    assert f"upload with `wandb sync {file.parent}`" in console.export_text()
    run = read_run(file)
    assert run["run"]["project"] == "tql-tests" and run["run"]["group"] == TINY_TASK
    assert run["run"]["name"] == "run" and run["run"]["job_type"] == "train"
    assert run["config"]["train/seed"] == 0 and run["config"]["task"] == TINY_TASK
    logged: dict[str, dict[int, float]] = {}
    for item in run["history"]:
        for name, value in item.items():
            if not name.startswith("_"):
                logged.setdefault(name, {})[item["_step"]] = value
    assert logged == expected  # exact: W&B keeps the JSON numbers
    summary = json.loads((out / "summary.json").read_text())
    assert run["summary"]["final_success"] == summary["final_success"]
    assert run["summary"]["collapse_alarm"] is (summary["extra"]["collapse"] is not None)


def test_a_logger_that_fails_warns_once_and_the_run_goes_on(tiny_data_dir, tmp_path, monkeypatch):
    from autotune.tracking import writers

    def full(self, step, values):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers.TensorBoardWriter, "scalars", full)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = api.train(TINY_TASK, profile="smoke", steps=40, data_dir=tiny_data_dir, out=out, eval_every=40,
                           log=["tensorboard"], progress=False)
    said = [str(w.message) for w in caught if "logging stopped" in str(w.message)]
    assert said == [f"tensorboard logging stopped ({out}): [Errno 28] No space left on device; training goes on, "
                    "metrics.jsonl keeps every record"]
    assert result.steps == 40 and (out / "summary.json").exists()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"] == [20, 40]


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"--log wandb needs the wandb package .*pip install 'tql-tune\[wandb\]'"):
        api.train(TINY_TASK, profile="smoke", steps=20, out=tmp_path / "run", log=["wandb"], progress=False)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_population_logs_one_run_per_member(tiny_data_dir, tmp_path):
    out = tmp_path / "pbt"
    api.train(TINY_TASK, profile="smoke", steps=40, controller="population", members=2, data_dir=tiny_data_dir,
              out=out, eval_every=20, log=["tensorboard", "wandb"], progress=False)
    rows = read_jsonl(out / "metrics.jsonl")
    for member in (0, 1):
        expected = _expected([r for r in rows if r.get("member") == member and r["type"] == "train"])
        fitness = _expected([r for r in rows if r["type"] == "fitness"])  # every member's: pick this one's
        seen = _tensorboard_scalars(out / f"member-{member}")
        for name, values in expected.items():
            assert seen[name] == pytest.approx(values, rel=1e-6, abs=1e-7), (member, name)
        assert "pbt/val_td" in seen and set(seen["pbt/val_td"]) == set(fitness["pbt/val_td"])
    names = sorted(read_run(f)["run"]["name"] for f in run_files(out))
    assert names == ["pbt", "pbt/member-0", "pbt/member-1"]  # the run's evaluation, and each member


def test_a_study_logs_every_seed_and_each_trial_as_it_ends(tiny_data_dir, tmp_path):
    """`run --log`: each trial's seed is a run grouped study/task, named trial/seed; the study's
    own points (value, rho, verdicts) are the storage's numbers, one per trial."""
    import optuna

    from autotune.tuning import studies
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task

    storage = f"sqlite:///{tmp_path / 's.db'}"
    plan = RunPlan(tasks=[get_task(TINY_TASK)], spec=load_spec(None), storage=storage, trials=2, seeds=1,
                   runs_dir=tmp_path / "runs", data_dir=tiny_data_dir, workers=1, log=("tensorboard", "wandb"),
                   wandb_project="tql-tests", train_overrides=dict(steps=20, eval_every=20, eval_episodes=1))
    studies.create_studies(plan, studies.open_storage(storage))
    assert studies.work(plan).complete == 2
    trials = optuna.load_study(study_name=f"tql:{TINY_TASK}", storage=storage).trials
    task_dir = tmp_path / "runs" / "tql" / TINY_TASK
    for trial in trials:
        seed_dir = task_dir / f"trial-{trial.number:04d}" / "seed-0"
        expected = _expected(read_jsonl(seed_dir / "metrics.jsonl"))
        seen = _tensorboard_scalars(seed_dir)
        assert seen["critic/td_loss"] == pytest.approx(expected["critic/td_loss"], rel=1e-6)
        [file] = run_files(seed_dir)
        run = read_run(file)["run"]
        assert (run["group"], run["name"], run["job_type"]) == (f"tql/{TINY_TASK}",
                                                                f"trial-{trial.number:04d}/seed-0", "trial")
    points = _tensorboard_scalars(task_dir / "study")
    assert points["trial/value"] == pytest.approx({t.number: t.value for t in trials}, rel=1e-6)
    assert points["trial/rho"] == pytest.approx({t.number: t.params["rho"] for t in trials}, rel=1e-6)
    assert points["trial/engaged"] == {t.number: float(t.user_attrs["engaged_at"] is not None) for t in trials}
    first, second = trials  # the second trial ended knowing the first's value
    assert points["trial/tied_with"] == {0: 0.0, 1: float(second.value == first.value)}
    assert points["trial/best_so_far"][1] == pytest.approx(max(first.value, second.value))
    [study_file] = run_files(task_dir / "study")
    study_run = read_run(study_file)
    assert study_run["run"]["job_type"] == "study" and study_run["run"]["group"] == f"tql/{TINY_TASK}"
    assert sorted(p["trial/number"] for p in study_run["history"]) == [0, 1]


def test_a_comparison_logs_each_run_by_approach_task_and_seed(tiny_data_dir, tmp_path):
    out = tmp_path / "cmp"
    api.compare(TINY_TASK, approaches="default,off", seeds=1, out=out, data_dir=tiny_data_dir, steps=20,
                eval_every=20, eval_episodes=1, reps=50, workers=1, log=["wandb"], wandb_project="tql-tests")
    names = {}
    for file in sorted(out.glob("runs/*/*/seed-*/wandb/offline-run-*/run-*.wandb")):
        run = read_run(file)
        names[run["run"]["name"]] = (run["run"]["group"], run["config"]["labels/approach"])
        metrics = read_jsonl(file.parents[2] / "metrics.jsonl")
        assert [h["_step"] for h in run["history"] if "critic/td_loss" in h] == \
            [r["step"] for r in metrics if r["type"] == "train"]
    assert names == {f"default/{TINY_TASK}/seed-100": (f"default/{TINY_TASK}", "default"),
                     f"off/{TINY_TASK}/seed-100": (f"off/{TINY_TASK}", "off")}


def test_spec_files_name_loggers_and_the_command_wins(tmp_path):
    from autotune.experiment.spec import experiment_from_dict, load_experiment
    from autotune.tuning.study_spec import spec_from_dict

    spec = tmp_path / "logged.toml"
    spec.write_text('version = 1\n[tracking]\nlog = ["tensorboard"]\nwandb_project = "from-spec"\n')
    plan = api.study_plan(TINY_TASK, spec=str(spec))
    assert (plan.log, plan.wandb_project) == (("tensorboard",), "from-spec")
    plan = api.study_plan(TINY_TASK, spec=str(spec), log=["wandb"], wandb_project="mine")
    assert (plan.log, plan.wandb_project) == (("wandb",), "mine")
    with pytest.raises(ConfigError, match=r"tracking.log='wandb' must be a list of: wandb, tensorboard"):
        spec_from_dict({"tracking": {"log": "wandb"}})
    with pytest.raises(ConfigError, match=r"unknown key tracking.project; valid: log, wandb_project, wandb_entity"):
        spec_from_dict({"tracking": {"project": "x"}})

    import tomllib

    from autotune.tuning.shipped import find_spec_file

    raw = tomllib.loads(find_spec_file("experiment", "experiment spec").read_text())
    raw["tracking"] = {"log": ["wandb", "tensorboard"], "wandb_entity": "lab"}
    found = experiment_from_dict(raw)
    assert (found.loggers, found.wandb_entity) == (("wandb", "tensorboard"), "lab")
    assert load_experiment(None).loggers == ()  # the built-in logs nowhere
    raw["tracking"] = {"log": ["mlflow"]}
    with pytest.raises(ConfigError, match=r"experiment spec \(dict\): tracking.log 'mlflow': choose from"):
        experiment_from_dict(raw)
    with pytest.raises(ConfigError, match=r"^--log 'mlflow': choose from none, wandb, tensorboard$"):
        api.experiment(plan_only=True, out=tmp_path / "exp", log=["mlflow"])
    with pytest.raises(ConfigError, match=r"^--log 'mlflow': choose from"):
        api.compare(TINY_TASK, approaches="default", out=tmp_path / "cmp", log=["mlflow"])
    assert not (tmp_path / "exp").exists() and not (tmp_path / "cmp").exists()


def test_a_resumed_run_replaces_the_steps_it_runs_again_and_keeps_its_wandb_id(tmp_path):
    """As ``metrics.jsonl`` is cut back to the checkpoint, TensorBoard forgets the steps after it
    (purge), and W&B finds the same run again (its id comes from the run's folder)."""
    from autotune.tracking.writers import TensorBoardWriter, run_id

    first = TensorBoardWriter(tmp_path, {"seed": 0}, 0)
    first.scalars(10, {"critic/td_loss": 1.0})
    first.scalars(20, {"critic/td_loss": 2.0})  # after the checkpoint at 10: lost in the crash
    first.writer.flush()
    again = TensorBoardWriter(tmp_path, {"seed": 0}, 10)  # resumed from step 10
    again.scalars(20, {"critic/td_loss": 3.0})
    again.close(failed=False)
    first.close(failed=False)
    assert _tensorboard_scalars(tmp_path)["critic/td_loss"] == {10: 1.0, 20: 3.0}
    assert run_id(tmp_path / "run", None) == run_id(tmp_path / "other" / ".." / "run", None)
    assert len({run_id(tmp_path / "run", None), run_id(tmp_path / "run", 0), run_id(tmp_path / "x", None)}) == 3


def test_observers_add_no_state_so_a_run_resumes_the_same_with_or_without_them(tmp_path):
    """A controller's checkpointed state is the same whether loggers watch the run or not (a run
    started without --log and resumed with it keeps its controller where it was), and the
    observers hear the run while the hooks alone drive it."""
    from autotune.schedules import observed
    from tql.trainer import TrainHooks

    class Driving(TrainHooks):
        def __init__(self, n=0):
            self.n = n

        def target_entropy(self, step, progress):
            return 1.5

        def on_eval(self, step, result):
            return True

        def on_population(self, step, fitness):
            return [(0, 1)]

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    class Listening(TrainHooks):
        def __init__(self):
            self.records = []

        def on_record(self, record):
            self.records.append(record)

        def on_eval(self, step, result):
            return False

    assert observed(hooks := Driving(), None) is hooks
    saved = Driving(7).state_dict()  # a checkpoint written without loggers
    inner, ears = Driving(), Listening()
    watched = observed(inner, ears)
    watched.load_state_dict(saved)
    assert inner.n == 7 and watched.state_dict() == saved == {"n": 7}
    assert watched.target_entropy(3, 0.1) == 1.5 and watched.on_eval(3, None) is True
    assert watched.on_population(3, [0.0, 1.0]) == [(0, 1)]
    watched.on_record({"step": 3, "type": "train"})
    assert ears.records == [{"step": 3, "type": "train"}]
