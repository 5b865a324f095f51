"""Tied best trials are named, not hidden: summaries, schedule meta, export/lodo/compare warnings.

The studies are built directly in SQLite with fixed trial values (no training).
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autotune.report.summary import summarize
from autotune.schedules import Schedule
from autotune.tuning.ties import best_tie, tie_warning, tied_tasks
from autotune.transfer import leave_one_domain_out, schedule_of_task
from tests.test_cli import run_cli

CUBE = "cube-double-play-singletask-task1-v0"        # every trial at 0%: a tie of three rhos
SCENE = "scene-play-singletask-task2-v0"             # a clear best
SCENE_SAME = "scene-play-singletask-task3-v0"        # the best value twice, but for the same rho: no tie
TRIALS = {CUBE: [(0.2, 0.0), (0.5, 0.0), (0.8, 0.0)],
          SCENE: [(0.3, 0.0), (0.6, 0.4), (0.9, 0.2)],
          SCENE_SAME: [(0.4, 0.3), (0.4, 0.3), (0.7, 0.1)]}
RHO = {"rho": FloatDistribution(0.1, 1.0)}


@pytest.fixture
def storage(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    for task, trials in TRIALS.items():
        study = optuna.create_study(storage=url, study_name=f"tql:{task}", direction="maximize")
        study.set_user_attr("tql:task", task)
        study.set_user_attr("tql:n_tokens", 43)
        for rho, value in trials:
            study.add_trial(create_trial(params={"rho": rho}, distributions=RHO, value=value, state=TrialState.COMPLETE,
                                         user_attrs={"successes": [value], "steps": 10,
                                                     # the cube trials: H̄ never acted (no control engaged)
                                                     **({"engaged_at": None} if task == CUBE else {})}))
    return url


def test_a_tie_needs_two_different_parameter_sets_at_the_best_value(storage):
    summary = summarize(storage, "tql")
    by_task = {t["task"]: t for t in summary["tasks"]}
    assert best_tie(by_task[CUBE]) == {"trials": 3, "success": 0.0}
    assert best_tie(by_task[SCENE]) is None and best_tie(by_task[SCENE_SAME]) is None
    assert tied_tasks(summary) == {CUBE: {"trials": 3, "success": 0.0}}
    assert tied_tasks(summary, [SCENE]) == {}


def test_schedule_meta_records_ties_and_keeps_the_earliest_trial(storage):
    by_task = {t["task"]: t for t in summarize(storage, "tql")["tasks"]}
    tied = schedule_of_task(by_task[CUBE])
    assert tied.rho == pytest.approx(0.2) and tied.meta["ties"] == [CUBE] and tied.meta["ties_idle"] == [CUBE]
    assert schedule_of_task(by_task[SCENE]).meta["ties"] == [] == schedule_of_task(by_task[SCENE]).meta["ties_idle"]
    summary = summarize(storage, "tql")
    assert leave_one_domain_out(summary, "scene-play").meta["ties"] == [CUBE]  # pooled from the tied cube task
    assert leave_one_domain_out(summary, "scene-play").meta["ties_idle"] == [CUBE]
    assert leave_one_domain_out(summary, "cube-double-play").meta["ties"] == []


def test_warning_names_the_tasks_in_one_line():
    line = tie_warning({"b": {"trials": 2, "success": 0.25}, "a": {"trials": 5, "success": 0.0}})
    assert line.startswith("warning: the best trial is a tie for a (5 trials at 0% success), "
                           "b (2 trials at 25% success): ")
    assert "\n" not in line and "not a measured optimum" in line
    assert tie_warning(["x"], context="tuned").startswith("warning (tuned): the best trial is a tie for x: ")
    assert tie_warning([]) is None and tie_warning({}) is None


def test_export_warns_and_writes_ties_into_the_schedule(monkeypatch, capsys, storage, tmp_path):
    out = tmp_path / "cube.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", "--study", "tql", "--storage", storage, "--task", CUBE,
                                "--out", str(out))
    assert code == 0, err
    assert f"warning: the best trial is a tie for {CUBE} (3 trials at 0% success)" in stdout
    assert json.loads(out.read_text())["meta"]["ties"] == [CUBE]

    pooled = tmp_path / "pooled.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", "--study", "tql", "--storage", storage,
                                "--out", str(pooled))
    assert code == 0, err
    assert stdout.count("warning") == 1 and f"tie for {CUBE} (3 trials" in stdout and SCENE not in stdout.split("warning")[1]
    assert Schedule.load(pooled).meta["ties"] == [CUBE]

    code, stdout, err = run_cli(monkeypatch, capsys, "export", "--study", "tql", "--storage", storage, "--task", SCENE,
                                "--out", str(tmp_path / "scene.json"))
    assert code == 0 and "warning" not in stdout


def test_compare_approaches_carry_ties_into_the_report(storage, tmp_path):
    from autotune.approaches import ComparePlan, build_approach
    from autotune.report.comparison import markdown_report
    from autotune.report.data import ComparisonData
    from tql.tasks import get_task

    plan = ComparePlan(tasks=[get_task(CUBE), get_task(SCENE)], approaches=["tuned", "transfer"], seeds=[100],
                       out_dir=tmp_path, study="tql", storage=storage)
    assert build_approach(plan, "tuned").ties == [CUBE] == build_approach(plan, "tuned").ties_idle
    assert build_approach(plan, "transfer").ties == [CUBE]  # SCENE's transferred schedule comes from CUBE
    data = ComparisonData(approaches=["tuned"], tasks=[CUBE], scores={"tuned": {CUBE: [0.0]}}, steps={"tuned": 30},
                          meta={"ties": {"tuned": [CUBE]}})
    report = markdown_report(data, reps=20)
    assert f"**Tied best trials (tuned).** In the study, the best trial of {CUBE} is a tie" in report
    assert "Tied because H̄ never acted" not in report  # not recorded: not claimed
    data.meta["ties_idle"] = {"tuned": [CUBE]}
    assert f"Tied because H̄ never acted (the control engaged in no tied trial), not by result: {CUBE}." in \
        markdown_report(data, reps=20)


def test_apply_warns_about_a_schedule_whose_source_was_a_tie(monkeypatch, capsys, tmp_path):
    import tql.trainer
    from tql.trainer import TrainResult

    path = Schedule.constant(0.2, source="study tql trial 0", ties=[CUBE]).save(tmp_path / "tied.json")
    finished = TrainResult(task=SCENE, steps=1, final_success=0.0, evals=[], wall_seconds=0.0, data_kind="generated",
                           out_dir=str(tmp_path))
    monkeypatch.setattr(tql.trainer, "train", lambda *args, **kwargs: finished)  # no training: only the warning
    code, stdout, err = run_cli(monkeypatch, capsys, "apply", "--schedule", str(path), "--task", SCENE,
                                "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    assert f"warning: the best trial is a tie for {CUBE}: their schedule is the earliest" in stdout


def test_apply_says_when_the_schedule_cannot_act_in_this_run_and_takes_agent_options(monkeypatch, capsys, tmp_path):
    """A schedule rising to rho 0.9: with the published agent the cpu profile's 3,000 updates end
    before the control engages (said in one line); --agent reaches the trained config."""
    import tql.trainer
    from autotune.forecast import forecast
    from tql.trainer import TrainResult

    path = Schedule.piecewise([(0.0, 0.5), (1.0, 0.9)]).save(tmp_path / "rising.json")
    trained = []

    def fake_train(config, out, **kwargs):
        trained.append(config)
        return TrainResult(task=SCENE, steps=1, final_success=0.0, evals=[], wall_seconds=0.0,
                           data_kind="generated", out_dir=str(out))

    monkeypatch.setattr(tql.trainer, "train", fake_train)  # no training: the warning and the config
    args = ["apply", "--schedule", str(path), "--task", SCENE, "--out", str(tmp_path / "run"), "--quiet"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "H̄ cannot change this run: the control engages after ~" in stdout and "rho 0.90" in stdout
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--agent", "alpha_init=0.01", "--agent", "critic_lr=1e-3")
    assert code == 0, err
    assert trained[-1].agent.alpha_init == 0.01 and trained[-1].agent.critic_lr == 1e-3
    assert ("H̄ cannot change" in stdout) == (not forecast(trained[-1], 0.9).acts)
