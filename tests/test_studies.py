"""Optuna studies over H̄ with real storages: run, show --json, resume, lost workers, two workers.

Every storage-backed check runs on SQLite and, when Debian's postgresql is available, on a
throwaway PostgreSQL server on loopback (skipped with the reason otherwise); the journal file
storage gets the basic round trip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.conftest import TINY_TASK
from tests.test_cli import run_cli

TASK1 = "cube-double-play-singletask-task1-v0"
TWO_TASKS = f"{TASK1},{TINY_TASK}"
# Tiny budgets: 20 steps, an evaluation every 10 (1 episode of at most 50 steps, smoke profile).
TINY = ["--profile", "smoke", "--steps", "20", "--eval-every", "10", "--eval-episodes", "1", "--threads", "1",
        "--workers", "1"]


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("postgres_url")


# PostgreSQL runs the storage round trip and two workers racing for trials; what else a test
# checks (a killed worker's retry, batches) goes through the same Optuna RDB storage code as
# SQLite, so those tests run on SQLite only, which keeps the suite within its time.
SQLITE_ONLY = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)


@pytest.fixture
def study(tmp_path) -> str:
    """A study name unique to the test: the PostgreSQL database is shared by the session."""
    return "t" + str(abs(hash(str(tmp_path))))[:12]


def run_args(storage: str, study: str, data_dir: Path, runs: Path, *extra: str) -> list[str]:
    return ["run", "--storage", storage, "--study", study, "--data-dir", str(data_dir), "--runs-dir", str(runs),
            "--no-make-data", "--quiet", *TINY, *extra]


def load(storage: str, study: str, task: str) -> optuna.Study:
    return optuna.load_study(study_name=f"{study}:{task}", storage=storage)


def show_json(monkeypatch, capsys, storage: str, study: str) -> dict:
    code, out, err = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", study, "--json")
    assert code == 0, err
    return json.loads(out)


def test_run_writes_trials_that_show_reads_back_and_rerun_resumes(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                                   storage_url, study):
    runs = tmp_path / "runs"
    args = run_args(storage_url, study, tiny_data_dir, runs, "--tasks", TWO_TASKS, "--trials", "2", "--seeds", "2")
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    summary = show_json(monkeypatch, capsys, storage_url, study)
    assert [t["task"] for t in summary["tasks"]] == sorted([TASK1, TINY_TASK])
    for task in summary["tasks"]:
        assert task["counts"]["complete"] == 2 and task["data_kind"] == "generated" and task["n_tokens"] == 43
        for trial in task["trials"]:
            # Read each seed's own summary.json: the trial's successes and value must match them.
            finals = [json.loads((Path(p).parent / "summary.json").read_text())["final_success"] for p in trial["metrics"]]
            assert trial["successes"] == pytest.approx(finals)
            assert trial["value"] == pytest.approx(sum(finals) / 2)
            assert trial["target_entropy"] == pytest.approx(trial["rho"] * __import__("math").log(43))
            assert trial["steps"] == 40 and sorted(map(int, trial["intermediate"])) == [10, 20, 30, 40]
        best = max(task["trials"], key=lambda t: (t["value"], -t["number"]))
        assert task["best"]["number"] == best["number"] and task["best"]["rho"] == best["rho"]
        assert task["steps_total"] == 80
    mtimes = {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")}
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert all(len(load(storage_url, study, t).trials) == 2 for t in (TASK1, TINY_TASK))
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")} == mtimes  # nothing re-ran


def test_journal_storage_round_trip(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage = f"journal:{tmp_path / 'studies.log'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2")
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    summary = show_json(monkeypatch, capsys, storage, study)
    assert summary["tasks"][0]["counts"]["complete"] == 2


def test_show_prints_tables_and_plots(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli(monkeypatch, capsys, *run_args(storage, study, tiny_data_dir, tmp_path / "runs",
                                                  "--tasks", TINY_TASK, "--trials", "1"))[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", study)
    assert code == 0, err
    assert TINY_TASK in out and "success % of complete trials vs rho" in out
    assert "attention entropy per layer/group" in out and "l1_value" in out and "H̄ (target)" in out


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "autotune.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@SQLITE_ONLY
def test_killed_worker_trial_is_retried_from_its_checkpoint(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                            storage_url, study):
    runs = tmp_path / "runs"
    base = run_args(storage_url, study, tiny_data_dir, runs, "--tasks", TINY_TASK)
    assert run_cli(monkeypatch, capsys, *base, "--trials", "1")[0] == 0  # trial 0 finishes
    finished = runs.rglob("trial-0000/seed-0/summary.json").__next__()
    finished_mtime = finished.stat().st_mtime_ns
    # Trial 1 trains for "ever" in a separate process; kill it after its first checkpoint. A run
    # that long compiles its loss by default: --no-compile spares a cold inductor cache's minute.
    worker = _cli(*base, "--trials", "2", "--steps", "100000", "--eval-every", "100000", "--no-compile")
    checkpoint = runs / study / TINY_TASK / "trial-0001" / "seed-0" / "checkpoint.pt"
    try:
        _wait_for(checkpoint.exists, 120, f"{checkpoint}")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    assert load(storage_url, study, TINY_TASK).trials[1].state == TrialState.RUNNING  # left behind
    code, _, err = run_cli(monkeypatch, capsys, *base, "--trials", "2", "--steps", "300", "--eval-every", "300")
    assert code == 0, err
    trials = load(storage_url, study, TINY_TASK).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    lost, retry = trials[1], trials[2]
    assert lost.user_attrs["fail_kind"] == "worker_lost" and "is gone" in lost.user_attrs["fail_reason"]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == lost.params
    assert retry.user_attrs["run_dir"] == lost.user_attrs["run_dir"]
    train_rows = [json.loads(line) for line in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
    assert train_rows[0]["step"] == 20 and train_rows[-1]["step"] == 300  # resumed, not restarted
    assert finished.stat().st_mtime_ns == finished_mtime  # the finished trial was not re-run
    counts = show_json(monkeypatch, capsys, storage_url, study)["tasks"][0]["counts"]
    assert counts["complete"] == 2 and counts["retried"] == 1


def test_two_workers_finish_exactly_n_trials(monkeypatch, capsys, tiny_data_dir, tmp_path, storage_url, study):
    args = run_args(storage_url, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "3",
                    "--workers", "2")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    trials = load(storage_url, study, TINY_TASK).trials
    counted = [t for t in trials if t.user_attrs.get("fail_kind") != "surplus"]
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)
    hosts = {t.system_attrs["tql:worker"] for t in counted}
    assert all(h.rsplit(":", 1)[1] != str(os.getpid()) for h in hosts)  # run by the child processes


def test_three_workers_started_at_once_on_a_new_storage_all_proceed_and_end_with_exactly_n_trials(
        tiny_data_dir, tmp_path, study):
    """As a cluster's job array starts them: each process creates the new SQLite storage's
    schema; those that lose the race open it once it is there (before: 1-2 of 3 died with
    "table ... already exists" or "UNIQUE constraint failed: alembic_version")."""
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "4",
                    "--workers", "1")
    workers = [_cli(*args) for _ in range(3)]
    outcomes = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [err[-500:] for _, err in outcomes]
    trials = load(storage, study, TINY_TASK).trials
    counted = [t for t in trials if t.user_attrs.get("fail_kind") != "surplus"]
    assert len(counted) == 4 and all(t.state == TrialState.COMPLETE for t in counted)


# One worker of the race below: wait for the common start (a file), open the new storage (each creates
# its schema), then claim and finish trials until the study has ``target`` of them.
_RACER = """
import os, sys, time
import optuna
from autotune.tuning.lifecycle import claim_trial
from autotune.tuning.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, go, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
study = optuna.create_study(study_name="race", storage=open_storage(url), load_if_exists=True)
while (trial := claim_trial(study, target)) is not None:
    study.tell(trial, float(trial.number))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_three_processes_opening_a_new_storage_at_once_all_proceed_and_claim_exactly_n_trials(
        kind, tmp_path, request):
    """The storage side of a job array's start, on each kind of storage (the full `run` race is
    above, on SQLite): every process creates the schema or finds it, none dies, and the study
    ends with exactly N counted trials."""
    url = {"sqlite": f"sqlite:///{tmp_path / 'new.db'}", "journal": f"journal:{tmp_path / 'new.log'}"}.get(kind)
    if kind == "postgresql":
        url = request.getfixturevalue("postgres_url")  # a new, empty database
    go = tmp_path / "go"  # created once every interpreter has imported optuna: they start together
    # (without open_storage's retry some die here: 5-6 of 9 on SQLite and on PostgreSQL when they
    # started at one time, 2 of 12 on SQLite with this start)
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, url, str(go), "5"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [r.stdout.readline().strip() for r in racers] == ["ready"] * 3
    go.touch()
    errors = [r.communicate(timeout=300)[1] for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0], [e[-800:] for e in errors]
    trials = optuna.load_study(study_name="race", storage=url if kind != "journal" else
                               optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                                   str(tmp_path / "new.log")))).trials
    counted = [t for t in trials if t.user_attrs.get("fail_kind") != "surplus"]
    assert len(counted) == 5 and all(t.state == TrialState.COMPLETE for t in counted)


def test_a_runs_folder_belongs_to_one_storage_and_another_is_refused_before_any_trial(
        monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    runs, first, second = tmp_path / "runs", tmp_path / "a.db", tmp_path / "b.db"
    args = run_args(f"sqlite:///{first}", study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    assert json.loads((runs / study / "storage.json").read_text()) == {"storage": f"sqlite:///{first.resolve()}"}
    monkeypatch.chdir(tmp_path)  # the same file named by a relative URL from elsewhere is the same storage
    again = run_args("sqlite:///a.db", study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    assert run_cli(monkeypatch, capsys, *again)[0] == 0
    other = run_args(f"sqlite:///{second}", study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    code, out, err = run_cli(monkeypatch, capsys, *other)
    message = " ".join(err.split())
    assert code == 2 and f"runs folder '{runs / study}' holds the runs of a study in storage " in message
    assert "use another --runs-dir or --study name" in message and "\n" not in err.strip()
    assert optuna.get_all_study_names(storage=f"sqlite:///{second}") == []  # refused before any study or trial


def test_diverged_run_is_a_failed_trial_and_the_study_goes_on(tiny_data_dir, tmp_path, monkeypatch):
    from autotune.tuning import studies
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task
    from tql.trainer import TrainingDiverged

    real_train, calls = studies.train, []

    def flaky_train(config, out_dir, hooks=None, **kwargs):
        calls.append(config.rho)
        if len(calls) == 1:
            raise TrainingDiverged(7, "critic/td_loss", float("nan"))
        return real_train(config, out_dir, hooks, **kwargs)

    monkeypatch.setattr(studies, "train", flaky_train)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    plan = RunPlan(tasks=[get_task(TINY_TASK)], spec=load_spec(None), storage=storage, trials=2,
                           runs_dir=tmp_path / "runs", data_dir=tiny_data_dir,
                           train_overrides=dict(steps=10, eval_every=10, eval_episodes=1))
    studies.create_studies(plan, studies.open_storage(storage))
    report = studies.work(plan)
    trials = load(storage, "tql", TINY_TASK).trials
    assert report.failed == 1 and report.complete == 1
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_kind"] == "diverged"
    assert "critic/td_loss = nan" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == TrialState.COMPLETE and len(trials) == 2  # a diverged trial counts, no retry


def test_pruned_trials_stop_early_and_count(tiny_data_dir, tmp_path, monkeypatch):
    """A pruner that always prunes: each trial stops after its first report, state PRUNED (the
    wait for the predicted engagement lifted: 20 updates engage nothing, see the next test)."""
    from autotune.tuning import studies
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task

    monkeypatch.setattr(studies, "make_pruner", lambda spec: optuna.pruners.ThresholdPruner(lower=2.0))
    monkeypatch.setattr(studies, "judge_from", lambda config, schedule: 0)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    plan = RunPlan(tasks=[get_task(TINY_TASK)], spec=load_spec(None), storage=storage, trials=2, seeds=2,
                           runs_dir=tmp_path / "runs", data_dir=tiny_data_dir,
                           train_overrides=dict(steps=20, eval_every=10, eval_episodes=1))
    studies.create_studies(plan, studies.open_storage(storage))
    assert studies.work(plan).pruned == 2
    for trial in load(storage, "tql", TINY_TASK).trials:
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [10]
        assert trial.user_attrs["steps"] == 10 and trial.user_attrs["pruned_at"] == {"seed": 0, "step": 10}


def test_a_trial_whose_control_cannot_engage_is_never_pruned(tiny_data_dir, tmp_path, monkeypatch):
    """The same always-prune pruner, now waiting for each trial's predicted engagement: none
    within 20 updates, so every evaluation is reported and no trial is judged."""
    from autotune.tuning import studies
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task

    monkeypatch.setattr(studies, "make_pruner", lambda spec: optuna.pruners.ThresholdPruner(lower=2.0))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    plan = RunPlan(tasks=[get_task(TINY_TASK)], spec=load_spec(None), storage=storage, trials=2, seeds=1,
                   runs_dir=tmp_path / "runs", data_dir=tiny_data_dir,
                   train_overrides=dict(steps=20, eval_every=10, eval_episodes=1))
    studies.create_studies(plan, studies.open_storage(storage))
    report = studies.work(plan)
    assert report.pruned == 0 and report.complete == 2
    for trial in load(storage, "tql", TINY_TASK).trials:
        assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [10, 20]
        assert "judged_from" in trial.user_attrs and trial.user_attrs["judged_from"] is None


@pytest.mark.parametrize("extra, expected", [
    (["--tasks", "cube-double-play-singletask-task9-v0"], "unknown task"),
    (["--tasks", TINY_TASK, "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    (["--tasks", TINY_TASK, "--storage", "not a url"], "is not a valid URL; valid forms: sqlite:///"),
    (["--tasks", TINY_TASK, "--sampler", "anneal"], "sampler.name='anneal' is not one of: tpe, gp, cmaes"),
    (["--tasks", TINY_TASK, "--profile", "huge"], "unknown profile 'huge'; valid: smoke, cpu, paper"),
    (["--tasks", TINY_TASK, "--trials", "0"], "--trials 0 must be >= 1"),
    (["--tasks", TINY_TASK, "--precision", "fp16"], "precision 'fp16' is not one of: fp32, bf16"),
])
def test_bad_run_inputs_fail_with_one_line_and_write_nothing(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                              extra, expected):
    monkeypatch.chdir(tmp_path)  # the default storage would be ./tql-tune.db
    code, _, err = run_cli(monkeypatch, capsys, "run", "--data-dir", str(tiny_data_dir), "--quiet", *extra)
    assert code == 2 and expected in err and err.strip().count("\n") == 0, err
    assert list(tmp_path.iterdir()) == []


def test_bad_spec_range_fails_before_the_storage_is_touched(monkeypatch, capsys, tiny_data_dir, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("version = 1\n[search]\nrho_low = 0.8\nrho_high = 0.2\n")
    db = tmp_path / "s.db"
    code, _, err = run_cli(monkeypatch, capsys, "run", "--tasks", TINY_TASK, "--spec", str(spec),
                           "--storage", f"sqlite:///{db}", "--data-dir", str(tiny_data_dir), "--quiet")
    assert code == 2 and "search.rho_low=0.8, search.rho_high=0.2" in err and "need 0 < rho_low < rho_high" in err
    assert not db.exists()


def test_rerun_with_another_search_range_is_refused(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "1")
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    spec = tmp_path / "narrow.toml"
    spec.write_text("version = 1\n[search]\nrho_low = 0.3\nrho_high = 0.5\n")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--spec", str(spec))
    assert code == 2 and "searched rho in [0.1, 1.0], this spec in [0.3, 0.5]" in err
    assert len(load(storage, study, TINY_TASK).trials) == 1


def test_bf16_study_trains_in_bf16_and_refuses_to_continue_in_fp32(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                                     study):
    storage, runs = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    args = run_args(storage, study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    assert run_cli(monkeypatch, capsys, *args, "--precision", "bf16")[0] == 0
    saved = json.loads((runs / study / TINY_TASK / "trial-0000" / "seed-0" / "config.json").read_text())
    assert saved["train"]["agent"]["precision"] == "bf16"
    assert load(storage, study, TINY_TASK).user_attrs["tql:precision"] == "bf16"
    shown = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    assert shown["precision"] == "bf16" and shown["trials"][0]["precision"] == "bf16"
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "was run with precision 'bf16', not 'fp32'" in err
    assert len(load(storage, study, TINY_TASK).trials) == 1


def test_show_unknown_study_lists_the_stored_ones(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli(monkeypatch, capsys, *run_args(storage, study, tiny_data_dir, tmp_path / "runs",
                                                  "--tasks", TINY_TASK, "--trials", "1"))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", "nope")
    assert code == 2 and f"no study 'nope'" in err and study in err


def test_knots_study_learns_a_schedule_and_trains_with_it(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    from autotune.schedules import Schedule

    spec = tmp_path / "knots.toml"
    spec.write_text('version = 1\n[search]\nkind = "knots"\nknots = 3\nrho_low = 0.2\nrho_high = 1.0\n')
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2",
                    "--spec", str(spec))
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    for trial in show_json(monkeypatch, capsys, storage, study)["tasks"][0]["trials"]:
        schedule = Schedule.from_dict(trial["schedule"])
        params = load(storage, study, TINY_TASK).trials[trial["number"]].params
        assert [r for _, r in schedule.knots] == pytest.approx([params["rho_0"], params["rho_1"], params["rho_2"]])
        assert trial["rho"] == pytest.approx(schedule.mean_rho())
        rows = [json.loads(x) for x in Path(trial["metrics"][0]).read_text().splitlines()]
        target = next(r["target_entropy"] for r in rows if r["type"] == "train" and r["step"] == 20)
        assert target == pytest.approx(schedule.target_entropy(19 / 20, 43), rel=1e-5)


def test_layers_study_records_both_rhos_exports_a_profile_and_apply_prints_its_table(monkeypatch, capsys,
                                                                                      tiny_data_dir, tmp_path, study):
    import math

    from autotune.schedules import Schedule

    storage = f"sqlite:///{tmp_path / 's.db'}"
    spec = Path(__file__).resolve().parents[1] / "studies" / "layers.toml"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2",
                    "--spec", str(spec))
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    summary = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    assert summary["search"]["kind"] == "layers" and len(summary["trials"]) == 2
    for trial in summary["trials"]:
        params = load(storage, study, TINY_TASK).trials[trial["number"]].params
        assert set(params) == {"rho_first", "rho_last"}
        assert (trial["rho_first"], trial["rho_last"]) == (params["rho_first"], params["rho_last"])
        assert trial["rho"] == pytest.approx((params["rho_first"] + params["rho_last"]) / 2)
        schedule = Schedule.from_dict(trial["schedule"])
        assert schedule.layer_rhos(0.3, 2) == pytest.approx([params["rho_first"], params["rho_last"]])
        rows = [json.loads(x) for x in Path(trial["metrics"][0]).read_text().splitlines()]
        row = next(r for r in rows if r["type"] == "train")
        assert row["target_entropy/l0_value"] == pytest.approx(params["rho_first"] * math.log(43), rel=1e-5)
        assert row["target_entropy/l1_other"] == pytest.approx(params["rho_last"] * math.log(43), rel=1e-5)
    best = summary["best"]
    code, out, err = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", study, "--no-plots")
    assert code == 0 and "the first and the last attention layer's rho" in out
    assert f"{best['rho_first']:.3f} -> {best['rho_last']:.3f}" in out

    exported = tmp_path / "layers.json"
    code, _, err = run_cli(monkeypatch, capsys, "export", "--study", study, "--storage", storage, "--out", str(exported))
    assert code == 0, err
    data = json.loads(exported.read_text())
    assert data["version"] == 2 and data["kind"] == "profile"
    assert Schedule.load(exported).layer_rhos(0.0, 2) == pytest.approx([best["rho_first"], best["rho_last"]])

    code, out, err = run_cli(monkeypatch, capsys, "apply", "--schedule", str(exported), "--task", TINY_TASK,
                             "--profile", "smoke", "--steps", "10", "--eval-every", "10", "--eval-episodes", "1",
                             "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "applied"), "--quiet")
    assert code == 0, err
    assert "a depth-2 critic" in out and "H̄ in nats (rho = H̄ / log n, log n = 3.761)" in out
    for layer, rho in enumerate((best["rho_first"], best["rho_last"])):
        line = next(x for x in out.splitlines() if x.strip(" │|").startswith(f"{layer} "))
        assert line.count(f"{rho * math.log(43):.3f} ({rho:.3f})") == 3  # start, middle, end


def test_a_study_of_tql_tune_0_1_is_not_continued(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    """Its trials trained the 0.1 agent (no 'tql:settings' attr); new trials would not compare."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "1")
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    stored = load(storage, study, TINY_TASK)
    assert stored.user_attrs["tql:settings"] == "published-1"
    stored._storage.set_study_user_attr(stored._study_id, "tql:settings", None)  # as 0.1 left it
    code, _, err = run_cli(monkeypatch, capsys, *args[:-2], "--trials", "2")
    assert code == 2 and "was run with tql-tune 0.1's agent" in err and "use another --study name" in err
    assert len(load(storage, study, TINY_TASK).trials) == 1


def test_a_progress_study_maximises_progress_and_records_both(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    from tql.io import read_jsonl

    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TASK1, "--trials", "2",
                    "--seeds", "2")
    code, out, err = run_cli(monkeypatch, capsys, *args, "--objective", "progress")
    assert code == 0, err
    assert "objective progress" in out and "best by progress" in out
    task = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    assert task["objective"] == "progress"
    for trial in task["trials"]:
        # Each seed's evaluations, read back from its metrics.jsonl.
        evals = [[r for r in read_jsonl(path) if r["type"] == "eval"] for path in trial["metrics"]]
        assert trial["progress"] == pytest.approx([seed[-1]["progress"] for seed in evals])
        assert trial["successes"] == pytest.approx([seed[-1]["success_rate"] for seed in evals])
        assert trial["value"] == pytest.approx(sum(trial["progress"]) / 2)
        # The pruner heard progress, every evaluation of both seeds in order.
        assert list(trial["intermediate"].values()) == pytest.approx([r["progress"] for seed in evals for r in seed])
    assert task["best"]["progress_mean"] == pytest.approx(task["best"]["value"])
    code, _, err = run_cli(monkeypatch, capsys, *args)  # continued as a success study: refused
    assert code == 2 and "maximises progress, not success" in err


def test_a_gained_study_maximises_progress_from_the_start_state(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    """``--objective gained``: each trial's value is the mean over seeds of the last evaluation's
    progress counted from the episodes' start states, read back from the seeds' metrics."""
    from tql.io import read_jsonl

    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TASK1, "--trials", "1",
                    "--seeds", "2")
    code, out, err = run_cli(monkeypatch, capsys, *args, "--objective", "gained")
    assert code == 0, err
    assert "best by gained" in out
    task = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    (trial,) = task["trials"]
    evals = [[r for r in read_jsonl(path) if r["type"] == "eval"] for path in trial["metrics"]]
    gained = [seed[-1]["gained"] for seed in evals]
    assert all(len(seed[-1]["gained_episodes"]) == seed[-1]["episodes"] for seed in evals)
    assert gained == pytest.approx([sum(s[-1]["gained_episodes"]) / len(s[-1]["gained_episodes"]) for s in evals])
    assert trial["value"] == pytest.approx(sum(gained) / 2)
    assert list(trial["intermediate"].values()) == pytest.approx([r["gained"] for seed in evals for r in seed])


def test_an_unknown_objective_names_the_valid_ones(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    args = run_args(f"sqlite:///{tmp_path / 's.db'}", study, tiny_data_dir, tmp_path / "runs", "--tasks", TASK1)
    code, _, err = run_cli(monkeypatch, capsys, *args, "--objective", "reward")
    assert code == 2 and "objective.name='reward' is not one of: success, progress, gained" in err
    assert not (tmp_path / "s.db").exists()


def test_run_ends_with_each_tasks_data_verdict_and_show_keeps_it(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    import numpy as np

    from tql.data import load_task_data
    from tql.tasks import get_task

    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TWO_TASKS, "--trials", "1")
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "can H̄ change these runs?" in out
    tasks = show_json(monkeypatch, capsys, storage, study)["tasks"]
    for task in tasks:
        rewards = load_task_data(get_task(task["task"]), tiny_data_dir).train["rewards"]
        levels = sorted(int(r) + 2 for r in np.unique(rewards))  # recomputed from the relabelled rewards
        assert task["data_signal"]["reward_levels"] == levels
    silent = [t["task"] for t in tasks if len(t["data_signal"]["reward_levels"]) == 1]
    assert ("no signal for this task" in out) == bool(silent)
    assert ("no signal in the data of" in out) == bool(silent)
    # 20 updates of the smoke profile: no task's control can engage, said once for both tasks
    # before training, and per task in the table (the forecast recomputed from the config).
    assert out.count("H̄ cannot change the trials of 2 of 2 task(s)") == 1 and "use --steps >= " in out
    for task in tasks:
        from autotune.forecast import forecast
        from tql.trainer import TrainConfig

        config = TrainConfig.from_profile(task["task"], "smoke", steps=20)
        assert task["engagement"] == dataclasses.asdict(forecast(config, 1.0))
        assert task["engagement"]["engaged"] is None and task["engagement"]["steps"] == 20
    assert out.count("not within 20") == 2


def test_run_agent_options_reach_every_trial_and_the_study_keeps_them(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                                      study):
    storage, runs = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    args = run_args(storage, study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--agent", "alpha_init=0.01", "--agent", "critic_lr=1e-3")
    assert code == 0, err
    saved = json.loads((runs / study / TINY_TASK / "trial-0000" / "seed-0" / "config.json").read_text())
    assert saved["train"]["agent"]["alpha_init"] == 0.01 and saved["train"]["agent"]["critic_lr"] == 1e-3
    assert load(storage, study, TINY_TASK).user_attrs["tql:agent"] == {"alpha_init": 0.01, "critic_lr": 1e-3}
    assert show_json(monkeypatch, capsys, storage, study)["tasks"][0]["agent"] == {"alpha_init": 0.01,
                                                                                  "critic_lr": 1e-3}
    code, _, err = run_cli(monkeypatch, capsys, *args)  # the profile's agent: its trials would not compare
    assert code == 2 and ("was run with agent options alpha_init=0.01 critic_lr=0.001, not (none: the profile's)"
                          in " ".join(err.split()))
    code, _, err = run_cli(monkeypatch, capsys, *args, "--agent", "alpha_start=0.01")
    assert code == 2 and "agent option 'alpha_start=0.01': write KEY=VALUE with KEY one of:" in err
    assert len(load(storage, study, TINY_TASK).trials) == 1


@pytest.mark.parametrize("rho_low, rho_high, idle", [(0.1, 0.9, True), (0.99, 1.0, False)])
def test_show_tells_a_tie_where_h_never_acted_from_a_tie_by_result(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                                    study, rho_low, rho_high, idle):
    """20 updates leave attention uniform (log 43 = 3.76 nats): a target at most 0.9 log n is
    never reached (the tie is H̄ never acting), one of 0.99 log n or more is held from the start."""
    from tql.engagement import ENGAGE_MARGIN
    from tql.io import read_jsonl

    spec = tmp_path / "spec.toml"
    spec.write_text(f"version = 1\n[search]\nrho_low = {rho_low}\nrho_high = {rho_high}\n")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2",
                    "--spec", str(spec))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    task = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    for trial in task["trials"]:  # the premise, from each trial's own metrics
        rows = [r for r in read_jsonl(trial["metrics"][0]) if r["type"] == "train"]
        reached = any(r[k] <= r[f"target_entropy/{k.split('/')[1]}"] + ENGAGE_MARGIN
                      for r in rows for k in r if k.startswith("entropy/"))
        assert reached != idle and (trial["engaged_at"] is None) == idle
    assert task["best"]["tied"] == 2 and task["best"]["tied_idle"] == idle  # 0% success: a tie either way
    assert ("(tie x2 †)" in out) == idle and ("†: tied because H̄ never acted" in out) == idle


def test_a_study_searches_the_temperature_sharing_beside_rho(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    """search.sharing: a categorical trial parameter that reaches each trial's agent (its runs'
    config and temperatures), its attrs and `show`; with the grid sampler, every (rho, sharing)."""
    spec = tmp_path / "sharing.toml"
    spec.write_text('version = 1\n[search]\nrho_low = 0.5\nrho_high = 0.9\nsharing = ["global", "layer_group"]\n'
                    '[sampler]\nname = "grid"\ngrid_points = 1\n[pruner]\nname = "none"\n')
    storage, runs = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    args = run_args(storage, study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "2", "--spec", str(spec))
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    trials = load(storage, study, TINY_TASK).trials
    assert sorted(t.params["temperature_sharing"] for t in trials) == ["global", "layer_group"]
    for trial in trials:
        sharing = trial.params["temperature_sharing"]
        assert trial.user_attrs["temperature_sharing"] == sharing
        run = runs / study / TINY_TASK / f"trial-{trial.number:04d}" / "seed-0"
        assert json.loads((run / "config.json").read_text())["train"]["agent"]["temperature_sharing"] == sharing
        model = torch.load(run / "checkpoint.pt", weights_only=False)["agent"]["model"]
        assert tuple(model["temperatures.log_alpha"].shape) == {"global": (1, 1), "layer_group": (2, 2)}[sharing]
    summary = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    assert summary["search"]["sharing"] == ["global", "layer_group"]
    assert {t["temperature_sharing"] for t in summary["trials"]} == {"global", "layer_group"}
    code, out, _ = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", study, "--no-plots")
    assert code == 0 and "temperatures" in out and f" {summary['best']['temperature_sharing']} " in out
    code, _, err = run_cli(monkeypatch, capsys, *args, "--temperature-sharing", "layer")
    assert code == 2 and "temperature_sharing='layer' for every trial, but the study spec searches global" in err


def test_temperature_sharing_for_every_trial_and_its_bad_values(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage, runs = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs"
    args = run_args(storage, study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--trials", "1")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--temperature-sharing", "layer")
    assert code == 0, err
    assert load(storage, study, TINY_TASK).user_attrs["tql:agent"] == {"temperature_sharing": "layer"}
    assert load(storage, study, TINY_TASK).trials[0].user_attrs["temperature_sharing"] == "layer"
    code, _, err = run_cli(monkeypatch, capsys, *args, "--temperature-sharing", "per-head")
    assert code == 2 and "--temperature-sharing 'per-head' is not one of: layer_group, layer, global" in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "--temperature-sharing", "layer", "--agent",
                           "temperature_sharing=global")
    assert code == 2 and "--temperature-sharing layer and --agent temperature_sharing=global disagree" in err
