"""`tql-tune compare`, `export`, `apply`, `lodo` on tiny real runs: schedules, compute, reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autotune.schedules import Schedule
from tests.conftest import SCENE_TASK, TINY_TASK
from tests.test_cli import ModuleCapture, run_cli
from tests.test_studies import TINY, show_json

TASKS = f"{TINY_TASK},{SCENE_TASK}"
SHORT = ["--profile", "smoke", "--steps", "20", "--eval-every", "20", "--eval-episodes", "1", "--threads", "1"]
IN_PROCESS = ["--workers", "1"]  # compare's runs in the test's process (auto: one worker process per core)


@pytest.fixture(scope="module")
def finished_study(two_domain_data_dir, tmp_path_factory) -> tuple[str, dict]:
    """A two-task study, made once for the module: its tests only read it."""
    tmp = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp / 's.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        capture = ModuleCapture()
        with capture:
            code, _, err = run_cli(monkeypatch, capture, "run", "--tasks", TASKS, "--trials", "2", "--storage",
                                   storage, "--data-dir", str(two_domain_data_dir), "--runs-dir",
                                   str(tmp / "study-runs"), "--no-make-data", "--quiet", *TINY)
            assert code == 0, err
            shown = show_json(monkeypatch, capture, storage, "tql")
    return storage, {t["task"]: t for t in shown["tasks"]}


def test_compare_runs_every_approach_counts_compute_and_writes_reports(monkeypatch, capsys, two_domain_data_dir,
                                                                       tmp_path, finished_study):
    storage, study = finished_study
    out = tmp_path / "cmp"
    args = ["compare", "--tasks", TASKS, "--approaches", "default,tuned,feedback,population,transfer", "--seeds", "2",
            "--study", "tql", "--storage", storage, "--out", str(out), "--data-dir", str(two_domain_data_dir),
            "--reps", "200", *SHORT, *IN_PROCESS]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    data = json.loads((out / "data.json").read_text())
    assert data["approaches"] == ["default", "tuned", "feedback", "population", "transfer"]
    study_steps = {t: s["steps_total"] for t, s in study.items()}
    runs = 2 * 2 * 20  # tasks x seeds x steps
    assert data["steps"] == {"default": runs, "tuned": runs + sum(study_steps.values()), "feedback": runs,
                             "population": 4 * runs, "transfer": runs + sum(study_steps.values())}
    for task in (TINY_TASK, SCENE_TASK):
        finals = [json.loads((out / "runs" / "tuned" / task / f"seed-{s}" / "summary.json").read_text())["final_success"]
                  for s in (100, 101)]
        assert data["scores"]["tuned"][task] == pytest.approx(finals)
        assert data["meta"]["schedules"]["tuned"][task] == f"constant rho={study[task]['best']['rho']:.3f}"
    # Leave-one-domain-out: each task gets the other domain's best rho (one source: the median is it).
    assert data["meta"]["schedules"]["transfer"][TINY_TASK] == f"constant rho={study[SCENE_TASK]['best']['rho']:.3f}"
    assert data["meta"]["schedules"]["transfer"][SCENE_TASK] == f"constant rho={study[TINY_TASK]['best']['rho']:.3f}"
    rows = [json.loads(x) for x in (out / "runs" / "tuned" / SCENE_TASK / "seed-100" / "metrics.jsonl").read_text().splitlines()]
    n_scene = json.loads((out / "runs" / "tuned" / SCENE_TASK / "seed-100" / "config.json").read_text())["n_tokens"]
    targets = [r["target_entropy"] for r in rows if r["type"] == "train"]
    assert targets and targets == pytest.approx([study[SCENE_TASK]["best"]["rho"] * math.log(n_scene)] * len(targets),
                                                rel=1e-5)
    assert Schedule.load(out / "runs" / "feedback" / TINY_TASK / "seed-100" / "schedule.json").kind == "piecewise"
    population = out / "runs" / "population" / TINY_TASK / "seed-100"
    best = json.loads((population / "summary.json").read_text())["extra"]["best_member"]
    assert Schedule.load(population / "schedule.json").meta["source"] == f"population controller (member {best})"
    # Progress beside success: each run's last evaluation, read back from its metrics.jsonl.
    for approach in data["approaches"]:
        for task in (TINY_TASK, SCENE_TASK):
            lasts = [[json.loads(x) for x in (out / "runs" / approach / task / f"seed-{s}" / "metrics.jsonl")
                      .read_text().splitlines() if '"eval"' in x][-1] for s in (100, 101)]
            assert data["meta"]["progress"][approach][task] == pytest.approx([r["progress"] for r in lasts])
            assert data["meta"]["gained"][approach][task] == pytest.approx([r["gained"] for r in lasts])
    assert "Aggregate progress (%)" in stdout and "Aggregate gained progress (%)" in stdout
    report = (out / "report.md").read_text()
    assert all(a in report for a in data["approaches"]) and "generated" in report.lower()
    assert "## Aggregate progress over all tasks and seeds" in report
    assert "## Aggregate gained progress over all tasks and seeds" in report
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One evaluation per 20-step run: each approach's sample-efficiency curve is that one step.
    assert data["curves"]["tuned"][TINY_TASK][0] == [[20, data["scores"]["tuned"][TINY_TASK][0]]]
    assert all(c["steps"] == [20] for c in data["derived"]["sample_efficiency"].values())
    assert "Sample efficiency: IQM success %" in stdout and "Sample efficiency and performance profiles" in report
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    assert run_cli(monkeypatch, capsys, *args)[0] == 0  # re-run: every run is already finished
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")} == mtimes


def test_export_and_apply_carry_a_schedule_to_a_task_with_another_n(monkeypatch, capsys, two_domain_data_dir,
                                                                    tmp_path, finished_study):
    storage, study = finished_study
    one = tmp_path / "cube.json"
    assert run_cli(monkeypatch, capsys, "export", "--study", "tql", "--storage", storage, "--task", TINY_TASK,
                   "--out", str(one))[0] == 0
    schedule = Schedule.load(one)
    assert schedule.rho == pytest.approx(study[TINY_TASK]["best"]["rho"]) and schedule.meta["n_tokens"] == 43
    both = tmp_path / "pooled.json"
    assert run_cli(monkeypatch, capsys, "export", "--study", "tql", "--storage", storage, "--out", str(both))[0] == 0
    rhos = sorted(study[t]["best"]["rho"] for t in study)
    assert Schedule.load(both).rho == pytest.approx(sum(rhos) / 2)  # median of two = their mean
    out = tmp_path / "applied"
    code, stdout, err = run_cli(monkeypatch, capsys, "apply", "--schedule", str(one), "--task", SCENE_TASK, *SHORT,
                                "--data-dir", str(two_domain_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    n_scene = json.loads((out / "config.json").read_text())["n_tokens"]
    assert n_scene != 43 and "(n = 43) applied to" in stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert rows[0]["target_entropy"] == pytest.approx(schedule.rho * math.log(n_scene), rel=1e-5)


def test_lodo_learns_without_the_holdout_domain(monkeypatch, capsys, two_domain_data_dir, tmp_path, finished_study):
    storage, study = finished_study
    out = tmp_path / "lodo"
    code, stdout, err = run_cli(monkeypatch, capsys, "lodo", "--holdout", "scene-play", "--study", "tql",
                                "--storage", storage, "--seeds", "1", "--out", str(out), *SHORT, *IN_PROCESS,
                                "--data-dir", str(two_domain_data_dir))
    assert code == 0, err
    learned = Schedule.load(out / "schedule-without-scene-play.json")
    assert learned.rho == pytest.approx(study[TINY_TASK]["best"]["rho"]) and learned.meta["pooled_from"] == [TINY_TASK]
    data = json.loads((out / "data.json").read_text())
    assert data["tasks"] == [f"scene-play-singletask-task{k}-v0" for k in range(1, 6)]


def test_lodo_batched_gives_the_one_by_one_numbers(monkeypatch, capsys, two_domain_data_dir, tmp_path,
                                                   finished_study):
    storage, _ = finished_study
    data = {}
    for batch in ("off", "on"):
        out = tmp_path / batch
        code, _, err = run_cli(monkeypatch, capsys, "lodo", "--holdout", "scene-play", "--study", "tql", "--storage",
                               storage, "--seeds", "1", "--out", str(out), *SHORT, *IN_PROCESS, "--data-dir",
                               str(two_domain_data_dir), "--batch", batch)
        assert code == 0, err
        data[batch] = json.loads((out / "data.json").read_text())
    for approach, scores in data["off"]["scores"].items():
        for task, values in scores.items():
            assert data["on"]["scores"][approach][task] == pytest.approx(values)
    # Each held-out task's runs (both approaches) trained as one population.
    batches = sorted(p.parent.parent.name for p in (tmp_path / "on" / "runs" / "_batches").rglob("checkpoint.pt"))
    assert batches == data["on"]["tasks"]
    assert not (tmp_path / "off" / "runs" / "_batches").exists()


@pytest.mark.parametrize("args, expected", [
    (["--approaches", "default,magic"], "approach 'magic' is not one of: default, published, tuned, knots"),
    (["--approaches", "tuned"], "need --study"),
    (["--approaches", "default,default"], "approaches repeat"),
    (["--approaches", "default", "--precision", "half"], "precision 'half' is not one of: fp32, bf16"),
])
def test_bad_compare_inputs(monkeypatch, capsys, tmp_path, args, expected):
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--out", str(tmp_path / "c"), *args)
    assert code == 2 and expected in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "c").exists()


def _summary(rhos: dict[str, float]) -> dict:
    tasks = [{"task": t, "study_name": f"s:{t}", "n_tokens": 43,
              "best": {"number": 0, "rho": r, "schedule": None, "success_mean": 0.0}} for t, r in rhos.items()]
    return {"study": "s", "tasks": tasks}


def test_export_refuses_a_misspelt_domain_or_task_instead_of_pooling_everything():
    from autotune.transfer import study_schedules
    from tql.errors import ConfigError

    summary = _summary({TINY_TASK: 0.3, SCENE_TASK: 0.7})
    with pytest.raises(ConfigError, match=r"unknown domain 'scene'; valid: .*scene-play"):
        study_schedules(summary, exclude_domain="scene")
    with pytest.raises(ConfigError, match=rf"study 's' has no task 'nope'; its tasks: {TINY_TASK}, {SCENE_TASK}"):
        study_schedules(summary, only_task="nope")
    kept = study_schedules(summary, exclude_domain="scene-play")
    assert [s.rho for s in kept] == [0.3]


def test_pooling_profiles_pools_first_and_last_layers_apart():
    from autotune.transfer import pooled

    schedules = [Schedule.profile(0.8, 0.6, task="a"), Schedule.profile(0.6, 0.4, task="b"),
                 Schedule.constant(0.7, task="c")]  # one curve: the same for both layers
    result = pooled(schedules)
    assert result.is_profile and result.meta["pooled_from"] == ["a", "b", "c"]
    assert result.layer_rhos(0.5, 2) == pytest.approx([0.7, 0.6])  # medians of 0.8, 0.6, 0.7 and 0.6, 0.4, 0.7
    assert not pooled(schedules[2:]).is_profile


def test_published_approach_trains_with_the_published_table(monkeypatch, capsys, tiny_data_dir, tmp_path):
    from tql.io import read_jsonl

    out = tmp_path / "c"
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--approaches", "default,published",
                           "--seeds", "1", "--out", str(out), "--data-dir", str(tiny_data_dir), *SHORT, *IN_PROCESS)
    assert code == 0, err
    data = json.loads((out / "data.json").read_text())
    assert data["approaches"] == ["default", "published"] and data["steps"]["published"] == 20
    assert data["meta"]["tuning_steps"]["published"] == 0
    run = out / "runs" / "published" / TINY_TASK / "seed-100"
    assert json.loads((run / "config.json").read_text())["train"]["targets"] == "published"
    row = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "train"][-1]
    assert (row["target_entropy/l0_value"], row["target_entropy/l1_other"]) == (3.0, 2.5)  # cube-double's
    # Progress curves: one run per approach, so each step's IQM is that run's own logged progress.
    for approach in ("default", "published"):
        logged = [r for r in read_jsonl(out / "runs" / approach / TINY_TASK / "seed-100" / "metrics.jsonl")
                  if r["type"] == "eval"]
        curve = data["derived"]["progress"]["sample_efficiency"][approach]
        assert curve["steps"] == [r["step"] for r in logged]
        assert curve["iqm"] == pytest.approx([r["progress"] for r in logged])
    assert (out / "report_progress_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Sample efficiency and performance profiles of progress" in (out / "report.md").read_text()
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--tasks", "cube-single-play-singletask-task1-v0",
                           "--approaches", "published", "--out", str(tmp_path / "d"), "--data-dir", str(tmp_path))
    assert code == 2 and "no published targets for domain 'cube-single'" in err


def test_compare_agent_options_reach_every_run_and_a_run_with_other_options_is_refused(
        monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "c"
    args = ["compare", "--tasks", TINY_TASK, "--approaches", "default", "--seeds", "1", "--out", str(out),
            "--data-dir", str(tiny_data_dir), *SHORT, *IN_PROCESS]
    code, text, err = run_cli(monkeypatch, capsys, *args, "--agent", "alpha_init=0.01")
    assert code == 0, err
    assert "H̄ cannot change the runs of 1 of 1 task(s)" in " ".join(text.split())  # 20 updates
    run = out / "runs" / "default" / TINY_TASK / "seed-100"
    assert json.loads((run / "config.json").read_text())["train"]["agent"]["alpha_init"] == 0.01
    assert json.loads((out / "data.json").read_text())["meta"]["agent"] == {"alpha_init": 0.01}
    first = (run / "summary.json").read_text()
    code, _, err = run_cli(monkeypatch, capsys, *args, "--agent", "alpha_init=0.01")  # the same: reused as it is
    assert code == 0, err
    assert (run / "summary.json").read_text() == first
    code, _, err = run_cli(monkeypatch, capsys, *args)  # another agent: refused, the finished run kept
    assert code == 2 and "holds a run with other agent settings (alpha_init 0.01 -> 1.0); use another --out" in err
    assert (run / "summary.json").read_text() == first


def test_compare_workers_train_the_same_runs_and_report_each_once(monkeypatch, capsys, tiny_data_dir, tmp_path):
    """``--workers 2`` trains the runs in two processes: the same numbers as in this process, and
    every run's line printed once, as it finishes."""
    data, rows = {}, {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        code, text, err = run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--approaches",
                                  "default,feedback", "--seeds", "2", "--out", str(out), "--data-dir",
                                  str(tiny_data_dir), "--reps", "100", *SHORT, "--workers", workers)
        assert code == 0, err
        heard = [line.split() for line in text.splitlines() if ": success " in line]
        assert sorted((w[0], w[3].rstrip(":")) for w in heard) == [(a, s) for a in ("default", "feedback")
                                                                   for s in ("100", "101")]
        data[workers] = json.loads((out / "data.json").read_text())
        rows[workers] = {run.relative_to(out): [r for r in map(json.loads, run.read_text().splitlines())
                                                if r["type"] == "train"][-1]
                         for run in sorted(out.glob("runs/*/*/seed-*/metrics.jsonl"))}
    assert data["2"]["scores"] == data["1"]["scores"] and data["2"]["steps"] == data["1"]["steps"]
    assert len(rows["2"]) == 4 and rows["2"].keys() == rows["1"].keys()
    for run, last in rows["1"].items():
        assert rows["2"][run]["step"] == last["step"], run
        for key in ("critic/td_loss", "actor/q_loss", "entropy/l0_value"):
            assert rows["2"][run][key] == pytest.approx(last[key], rel=1e-6), (run, key)


def test_the_papers_baselines_run_beside_default_and_the_report_has_their_rows(monkeypatch, capsys, tiny_data_dir,
                                                                               tmp_path):
    """``off``: the same transformer with its control off; ``fql``: FQL's MLP critic with FQL's
    optimiser. Batched (``--batch on``): each baseline trains apart from the TQL runs."""
    from tql.io import read_jsonl

    out = tmp_path / "c"
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--approaches", "default,off,fql",
                           "--seeds", "2", "--out", str(out), "--data-dir", str(tiny_data_dir), "--reps", "100",
                           "--batch", "on", "--collapse-alarm", "0.99999", *SHORT, *IN_PROCESS)
    assert code == 0, err
    data = json.loads((out / "data.json").read_text())
    assert data["approaches"] == ["default", "off", "fql"]
    assert all(data["steps"][a] == 2 * 20 for a in data["approaches"])
    agents = {a: json.loads((out / "runs" / a / TINY_TASK / "seed-100" / "config.json").read_text())["train"]["agent"]
              for a in data["approaches"]}
    assert agents["default"]["entropy_control"] and agents["default"]["critic"] == "tql"
    assert not agents["off"]["entropy_control"] and agents["off"]["critic"] == "tql"
    assert agents["fql"]["critic"] == "mlp" and agents["fql"]["critic_lr"] == 3e-4  # FQL's own rate
    off_rows = [r for r in read_jsonl(out / "runs" / "off" / TINY_TASK / "seed-100" / "metrics.jsonl")
                if r["type"] == "train"]
    assert off_rows and all(r["alpha/l0_value"] == off_rows[0]["alpha/l0_value"] for r in off_rows)  # frozen
    report = (out / "report.md").read_text()
    for name in ("off", "fql"):
        assert f"| {name} " in report
    assert data["meta"]["schedules"]["off"][TINY_TASK] == "entropy control off"
    # The collapse alarm, set just under uniform attention: free attention (off) trips it at the
    # first logged row; FQL's MLP has no attention to trip it.
    collapsed = data["meta"]["collapse"]
    assert collapsed["off"][TINY_TASK] == [20, 20] and "fql" not in collapsed
    assert "**Attention collapsed**" in report and f"off on {TINY_TASK}: 2 of 2 seeds (first at update 20)" in report
    assert data["meta"]["episodes_per_score"] == 1 and "detectable (pp)" in report
