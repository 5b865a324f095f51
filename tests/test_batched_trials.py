"""Batched trials (`tql-tune run --batch K`) with real storages: the same results as one by one,
pruning, divergence, Ctrl-C, a killed worker's batch resumed, two workers, show and export.

Storage-backed checks of several workers run on SQLite and on the throwaway PostgreSQL server
(skipped with the reason where it is missing), as in ``tests/test_studies.py``.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.conftest import TINY_TASK
from tests.test_cli import run_cli
from tests.test_studies import (SQLITE_ONLY, _cli, _wait_for, load, run_args, show_json,  # noqa: F401
                                storage_url, study)

TINY_TRAIN = dict(steps=20, eval_every=10, eval_episodes=1)


@pytest.fixture
def batch_train():
    import importlib

    return importlib.import_module("tql.batched.batch_runs")


def _plan(tmp_path: Path, data_dir: Path, name: str, batch: int, seeds: int, trials: int, pruner: str = "none"):
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import get_task

    spec = tmp_path / f"{pruner}.toml"
    spec.write_text(f'version = 1\n[pruner]\nname = "{pruner}"\nstartup_trials = 0\n')
    return RunPlan(tasks=[get_task(TINY_TASK)], spec=load_spec(spec), storage=f"sqlite:///{tmp_path / 's.db'}",
                   study=name, trials=trials, seeds=seeds, runs_dir=tmp_path / "runs", data_dir=data_dir,
                   train_overrides=dict(TINY_TRAIN), batch=batch)


def _start(plan, rhos: list[float]) -> optuna.Study:
    """Create the plan's study and queue trials at fixed rhos (the same both ways)."""
    from autotune.tuning import studies

    study = studies.create_studies(plan, studies.open_storage(plan.storage))[0]
    for rho in rhos:
        study.enqueue_trial({"rho": rho})
    return study


def _rows(path: str | Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, Path(path).read_text().splitlines()) if r["type"] == kind]


def test_batched_trials_equal_the_same_trials_one_by_one(tiny_data_dir, tmp_path):
    from autotune.tuning import studies

    rhos = [0.3, 0.6, 0.9]
    runs = {}
    for name, batch in (("single", 1), ("batched", 3)):
        plan = _plan(tmp_path, tiny_data_dir, name, batch, seeds=2, trials=3)
        _start(plan, rhos)
        assert studies.work(plan).complete == 3
        runs[name] = {t.params["rho"]: t for t in load(plan.storage, name, TINY_TASK).trials}
    assert sorted(runs["batched"]) == rhos and sorted(runs["single"]) == rhos
    batch_ids = {t.user_attrs["batch_id"] for t in runs["batched"].values()}
    assert len(batch_ids) == 1 and all("batch_id" not in t.user_attrs for t in runs["single"].values())
    for rho in rhos:
        one, batched = runs["single"][rho], runs["batched"][rho]
        assert batched.state == TrialState.COMPLETE and batched.value == pytest.approx(one.value)
        assert batched.intermediate_values == pytest.approx(one.intermediate_values)
        for key in ("successes", "steps", "data_kind", "success_std", "seeds", "target_entropy"):
            assert batched.user_attrs[key] == pytest.approx(one.user_attrs[key]), key
        assert [Path(p).relative_to(tmp_path / "runs" / "batched") for p in batched.user_attrs["metrics"]] == \
               [Path(p).relative_to(tmp_path / "runs" / "single") for p in one.user_attrs["metrics"]]
        for mine, theirs in zip(batched.user_attrs["metrics"], one.user_attrs["metrics"]):
            a, b = _rows(mine, "train"), _rows(theirs, "train")
            assert [r["step"] for r in a] == [r["step"] for r in b] == [20]
            assert set(a[0]) == set(b[0]) and "critic/td_loss" in a[0]
            for key in set(a[0]) - {"type", "time/wall_seconds"}:  # losses, entropies, targets, Q statistics
                assert a[0][key] == pytest.approx(b[0][key], rel=1e-3, abs=1e-5), (rho, key)
            assert [r["success_rate"] for r in _rows(mine, "eval")] == [r["success_rate"] for r in _rows(theirs, "eval")]


class PruneLowRho(optuna.pruners.BasePruner):
    """Prunes every trial whose rho is below 0.5 at its first report."""

    def prune(self, study, trial) -> bool:
        return trial.params["rho"] < 0.5


def test_a_pruned_trial_stops_counting_at_once_and_its_members_freeze(tiny_data_dir, tmp_path, monkeypatch,
                                                                      batch_train):
    from autotune.tuning import studies

    monkeypatch.setattr(studies, "make_pruner", lambda spec: PruneLowRho())
    import autotune.tuning.batched

    monkeypatch.setattr(autotune.tuning.batched, "judge_from", lambda config, schedule: 0)  # 20 updates engage nothing
    real, states_when_trained = batch_train.train_batch, []

    def spy(members, batch_dir, **kwargs):
        outcomes = real(members, batch_dir, **kwargs)
        states_when_trained.extend(t.state for t in load(plan.storage, "p", TINY_TASK).trials)
        return outcomes

    monkeypatch.setattr(batch_train, "train_batch", spy)
    plan = _plan(tmp_path, tiny_data_dir, "p", batch=2, seeds=2, trials=2)
    _start(plan, [0.3, 0.8])
    report = studies.work(plan)
    assert report.pruned == 1 and report.complete == 1
    # Told PRUNED during the batch, not when it ended: the other trial was still running then.
    assert states_when_trained == [TrialState.PRUNED, TrialState.RUNNING]
    pruned, kept = load(plan.storage, "p", TINY_TASK).trials
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [10]
    assert pruned.user_attrs["pruned_at"] == {"seed": 0, "step": 10} and pruned.user_attrs["steps"] == 20
    assert pruned.user_attrs["data_kind"] == "generated"
    assert kept.state == TrialState.COMPLETE and sorted(kept.intermediate_values) == [10, 20, 30, 40]
    for path in pruned.user_attrs["metrics"]:  # both seeds frozen at the first evaluation
        assert [r["step"] for r in _rows(path, "eval")] == [10]
    for path in kept.user_attrs["metrics"]:
        assert [r["step"] for r in _rows(path, "eval")] == [10, 20]


def test_a_diverged_member_fails_its_own_trial_and_the_others_go_on(tiny_data_dir, tmp_path, monkeypatch,
                                                                    batch_train):
    from autotune.tuning import studies
    from tql.trainer import TrainingDiverged

    real = batch_train.train_batch

    def diverge_second_member(members, batch_dir, **kwargs):
        outcomes = real(members, batch_dir, **kwargs)
        outcomes[1] = batch_train.MemberOutcome(None, TrainingDiverged(7, "critic/td_loss", math.nan), False)
        return outcomes

    monkeypatch.setattr(batch_train, "train_batch", diverge_second_member)
    plan = _plan(tmp_path, tiny_data_dir, "d", batch=2, seeds=2, trials=2)
    _start(plan, [0.3, 0.8])
    report = studies.work(plan)
    assert report.failed == 1 and report.complete == 1
    failed, kept = load(plan.storage, "d", TINY_TASK).trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_kind"] == "diverged"
    assert failed.user_attrs["fail_reason"] == "seed 1: training diverged at step 7: critic/td_loss = nan"
    assert len(failed.user_attrs["successes"]) == 1 and failed.user_attrs["steps"] == 27
    assert kept.state == TrialState.COMPLETE and len(kept.user_attrs["successes"]) == 2
    assert len(load(plan.storage, "d", TINY_TASK).trials) == 2  # a diverged trial counts: no retry


def test_ctrl_c_retries_every_trial_of_the_batch(tiny_data_dir, tmp_path, monkeypatch,
                                                 batch_train):
    from autotune.tuning import studies

    def interrupted(members, batch_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_train, "train_batch", interrupted)
    plan = _plan(tmp_path, tiny_data_dir, "c", batch=2, seeds=1, trials=2)
    _start(plan, [0.3, 0.8])
    with pytest.raises(KeyboardInterrupt):
        studies.work(plan)
    trials = load(plan.storage, "c", TINY_TASK).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    for lost, retry in zip(trials[:2], trials[2:]):
        assert lost.user_attrs["fail_kind"] == "interrupted" and retry.system_attrs["fixed_params"] == lost.params
        for key in ("run_dir", "batch_id", "batch_dir"):
            assert retry.user_attrs[key] == lost.user_attrs[key]
    monkeypatch.undo()
    report = studies.work(plan)  # the queued batch is claimed whole and finished
    assert report.complete == 2
    trials = load(plan.storage, "c", TINY_TASK).trials
    assert [t.state for t in trials[2:]] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["batch_id"] for t in trials} == {"batch-0000"}


def test_a_trial_pruned_after_the_checkpoint_rides_along_the_resumed_batch_untouched(tiny_data_dir, tmp_path,
                                                                                    monkeypatch):
    """Trial 0 is pruned at step 10, after the checkpoint at step 8; Ctrl-C at step 11 re-queues
    trial 1 only. The resumed batch carries trial 0 frozen from the start: its files are not cut
    back to step 8 and rewritten, and trial 1 finishes from the checkpoint."""
    from autotune.tuning import batched as batched_trials, studies

    monkeypatch.setattr(studies, "make_pruner", lambda spec: PruneLowRho())
    monkeypatch.setattr(batched_trials, "judge_from", lambda config, schedule: 0)  # 20 updates engage nothing
    plan = _plan(tmp_path, tiny_data_dir, "r", batch=2, seeds=1, trials=2)
    plan.train_overrides.update(checkpoint_every=4, log_every=1)
    _start(plan, [0.3, 0.8])
    real_on_log = batched_trials.MemberReporter.on_log

    def interrupt_at_11(self, step, metrics):
        if step == 11:
            raise KeyboardInterrupt
        real_on_log(self, step, metrics)

    monkeypatch.setattr(batched_trials.MemberReporter, "on_log", interrupt_at_11)
    with pytest.raises(KeyboardInterrupt):
        studies.work(plan)
    monkeypatch.setattr(batched_trials.MemberReporter, "on_log", real_on_log)
    pruned = load(plan.storage, "r", TINY_TASK).trials[0]
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["pruned_at"]["step"] == 10
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in Path(pruned.user_attrs["run_dir"]).rglob("*.json*")}
    assert [r["step"] for r in _rows(pruned.user_attrs["metrics"][0], "eval")] == [10]
    report = studies.work(plan)
    assert report.complete == 1 and report.ran == 1
    trials = load(plan.storage, "r", TINY_TASK).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files  # untouched
    assert sorted(trials[2].intermediate_values) == [10, 20]
    assert [r["step"] for r in _rows(trials[2].user_attrs["metrics"][0], "train")] == list(range(1, 21))


@SQLITE_ONLY
def test_killed_worker_batch_is_retried_from_the_population_checkpoint(monkeypatch, capsys, tiny_data_dir, tmp_path,
                                                                      storage_url, study):
    runs = tmp_path / "runs"
    base = run_args(storage_url, study, tiny_data_dir, runs, "--tasks", TINY_TASK, "--batch", "2")
    assert run_cli(monkeypatch, capsys, *base, "--trials", "2")[0] == 0  # trials 0 and 1 finish
    finished = {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")}
    assert len(finished) == 2
    # Trials 2 and 3 train for "ever" as one batch in another process; kill it after a checkpoint.
    # --no-compile (here and at the retry, whose batch must match) spares a cold compile.
    worker = _cli(*base, "--trials", "4", "--steps", "100000", "--eval-every", "100000", "--no-compile")
    checkpoint = runs / study / TINY_TASK / "batch-0002" / "checkpoint.pt"
    try:
        _wait_for(checkpoint.exists, 180, f"{checkpoint}")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    assert [t.state for t in load(storage_url, study, TINY_TASK).trials[2:]] == [TrialState.RUNNING] * 2
    saved_step = torch.load(checkpoint, weights_only=False)["step"]
    metrics = runs / study / TINY_TASK / "trial-0002" / "seed-0" / "metrics.jsonl"
    before = [r for r in _rows(metrics, "train") if r["step"] <= saved_step]
    code, _, err = run_cli(monkeypatch, capsys, *base, "--trials", "4", "--steps", "300", "--eval-every", "300",
                           "--no-compile")
    assert code == 0, err
    trials = load(storage_url, study, TINY_TASK).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    for lost, retry in zip(trials[2:4], trials[4:]):
        assert lost.user_attrs["fail_kind"] == "worker_lost" and "is gone" in lost.user_attrs["fail_reason"]
        assert retry.user_attrs["retry_of"] == lost.number and retry.params == lost.params
        for key in ("run_dir", "batch_id", "batch_dir"):
            assert retry.user_attrs[key] == lost.user_attrs[key]
    rows = _rows(metrics, "train")
    assert rows[:len(before)] == before and rows[-1]["step"] == 300  # resumed (same wall times), not restarted
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished trials were not re-run
    counts = show_json(monkeypatch, capsys, storage_url, study)["tasks"][0]["counts"]
    assert counts["complete"] == 4 and counts["retried"] == 2


@SQLITE_ONLY
def test_two_workers_with_batches_finish_exactly_n_trials(monkeypatch, capsys, tiny_data_dir, tmp_path, storage_url,
                                                          study):
    args = run_args(storage_url, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "5",
                    "--workers", "2", "--batch", "2")
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    trials = load(storage_url, study, TINY_TASK).trials
    counted = [t for t in trials if t.user_attrs.get("fail_kind") != "surplus"]
    assert len(counted) == 5 and all(t.state == TrialState.COMPLETE for t in counted)
    batches = {}
    for t in counted:
        batches.setdefault(t.user_attrs["batch_id"], []).append(t.number)
    assert all(len(numbers) <= 2 for numbers in batches.values()) and len(batches) >= 3


def test_show_and_export_read_a_batched_study(monkeypatch, capsys, tiny_data_dir, tmp_path, study):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2",
                    "--seeds", "2", "--batch", "2")
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and "batches of 2 trials" in out, err
    task = show_json(monkeypatch, capsys, storage, study)["tasks"][0]
    assert task["counts"]["complete"] == 2 and task["steps_total"] == 80 and task["data_kind"] == "generated"
    assert {t["batch_id"] for t in task["trials"]} == {"batch-0000"}
    for trial in task["trials"]:
        finals = [json.loads((Path(p).parent / "summary.json").read_text())["final_success"] for p in trial["metrics"]]
        assert trial["successes"] == pytest.approx(finals) and sorted(map(int, trial["intermediate"])) == [10, 20, 30, 40]
    code, out, err = run_cli(monkeypatch, capsys, "show", "--storage", storage, "--study", study)
    assert code == 0 and "success % of complete trials vs rho" in out, err
    exported = tmp_path / "best.json"
    code, _, err = run_cli(monkeypatch, capsys, "export", "--study", study, "--storage", storage, "--out", str(exported))
    assert code == 0, err
    assert json.loads(exported.read_text())["rho"] == pytest.approx(task["best"]["rho"])


def test_a_batch_of_layers_trials_trains_each_member_with_its_own_depth_profile(monkeypatch, capsys, tiny_data_dir,
                                                                                tmp_path, study):
    spec = Path(__file__).resolve().parents[1] / "studies" / "layers.toml"
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = run_args(storage, study, tiny_data_dir, tmp_path / "runs", "--tasks", TINY_TASK, "--trials", "2",
                    "--spec", str(spec), "--batch", "2")
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    trials = load(storage, study, TINY_TASK).trials
    assert len({t.user_attrs["batch_id"] for t in trials}) == 1
    for trial in trials:
        row = _rows(trial.user_attrs["metrics"][0], "train")[0]
        assert row["target_entropy/l0_value"] == pytest.approx(trial.params["rho_first"] * math.log(43), rel=1e-5)
        assert row["target_entropy/l1_other"] == pytest.approx(trial.params["rho_last"] * math.log(43), rel=1e-5)


@pytest.mark.parametrize("value", ["0", "x", "2.5"])
def test_bad_batch_value_is_a_one_line_error(monkeypatch, capsys, tiny_data_dir, tmp_path, value):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "run", "--tasks", TINY_TASK, "--data-dir", str(tiny_data_dir),
                           "--quiet", "--batch", value)
    assert code == 2 and f"--batch {value!r} is not one of: auto, an integer >= 1" in err
    assert err.strip().count("\n") == 0 and list(tmp_path.iterdir()) == []


def test_batch_auto_is_one_on_a_cpu_and_eight_on_cuda():
    from autotune.tuning.trials import trials_per_batch

    assert trials_per_batch("auto", "cpu") == 1 and trials_per_batch("auto", "cuda:0") == 8 and trials_per_batch("3", "cpu") == 3
    assert trials_per_batch("auto", "auto") == (8 if torch.cuda.is_available() else 1)


def test_compare_batched_gives_the_one_by_one_numbers_and_reuses_finished_runs(monkeypatch, capsys, tiny_data_dir,
                                                                              tmp_path):
    from autotune.schedules import Schedule

    data = {}
    for batch in ("off", "on"):
        out = tmp_path / batch
        code, _, err = run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--approaches",
                               "default,published,feedback", "--seeds", "2", "--out", str(out), "--data-dir",
                               str(tiny_data_dir), "--reps", "100", "--batch", batch, "--profile", "smoke",
                               "--steps", "20", "--eval-every", "10", "--eval-episodes", "1", "--threads", "1")
        assert code == 0, err
        data[batch] = json.loads((out / "data.json").read_text())
    assert data["on"]["steps"] == data["off"]["steps"] == {"default": 40, "published": 40, "feedback": 40}
    assert data["on"]["scores"].keys() == data["off"]["scores"].keys()
    for approach, scores in data["off"]["scores"].items():  # approach -> task -> one score per seed
        assert data["on"]["scores"][approach].keys() == scores.keys(), approach
        for task, per_seed in scores.items():
            assert data["on"]["scores"][approach][task] == pytest.approx(per_seed), (approach, task)
    batches = list((tmp_path / "on" / "runs" / "_batches" / TINY_TASK).iterdir())
    assert len(batches) == 1 and (batches[0] / "checkpoint.pt").exists()  # all six runs as one population
    for seed in (100, 101):
        run = f"runs/feedback/{TINY_TASK}/seed-{seed}"
        on, off = (Schedule.load(tmp_path / side / run / "schedule.json") for side in ("on", "off"))
        assert on.kind == off.kind == "piecewise" and sum(on.knots, ()) == pytest.approx(sum(off.knots, ()), rel=1e-4)
        a, b = (_rows(tmp_path / side / run / "metrics.jsonl", "train") for side in ("on", "off"))
        assert a[-1]["critic/td_loss"] == pytest.approx(b[-1]["critic/td_loss"], rel=1e-3, abs=1e-5)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "on").rglob("summary.json")}
    assert run_cli(monkeypatch, capsys, "compare", "--tasks", TINY_TASK, "--approaches", "default,published,feedback",
                   "--seeds", "2", "--out", str(tmp_path / "on"), "--data-dir", str(tiny_data_dir), "--reps", "100",
                   "--batch", "on", "--profile", "smoke", "--steps", "20", "--eval-every", "10", "--eval-episodes",
                   "1", "--threads", "1")[0] == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "on").rglob("summary.json")} == mtimes  # nothing re-ran
