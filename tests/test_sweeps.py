"""The learning sweeps (benchmarks/learning) spread their runs over the cores as run and compare do."""

from __future__ import annotations

import importlib

import pytest

SWEEPS = ("sensitivity", "engagement", "learning_check", "target_tracking", "learning_curves", "collapse")


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_bad_jobs_value_fails_in_one_line_before_any_run(sweep, tmp_path, capsys):
    script = importlib.import_module(f"benchmarks.learning.{sweep}")
    out = tmp_path / "runs"
    writes = ["--out", str(out)] if sweep in ("sensitivity", "learning_check", "learning_curves", "collapse") else []
    code = script.main(["--jobs", "two", *writes, "--data-dir", str(tmp_path / "data")])
    captured = capsys.readouterr()
    said = (captured.out + captured.err).strip()
    assert code == 2
    assert said == "--jobs 'two' is not one of: auto, an integer >= 1"
    assert not out.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("cores, runs, threads, jobs", [(2, 3, None, 2), (8, 3, None, 3), (1, 4, None, 1), (2, 3, 2, 1)])
def test_auto_jobs_are_one_per_core_and_at_most_one_per_run(cores, runs, threads, jobs, tmp_path, monkeypatch):
    """``--threads T`` (threads of one run) leaves cores // T processes."""
    import benchmarks.learning.learning_check as check
    import tql.data

    monkeypatch.setattr(tql.data, "available_cpus", lambda: cores)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    seen = {}

    def stop_before_training(args):
        seen["jobs"] = args.jobs
        raise SystemExit(0)

    monkeypatch.setattr(check, "ensure_data", lambda *a: "generated")
    monkeypatch.setattr(check, "run_all", stop_before_training)
    seeds = ",".join(str(seed) for seed in range(runs))
    with pytest.raises(SystemExit):
        check.main(["--seeds", seeds, "--out", str(tmp_path), *(["--threads", str(threads)] if threads else [])])
    assert seen["jobs"] == jobs


def test_the_learning_curves_budget_prices_the_busiest_process():
    import argparse

    from benchmarks.learning.learning_curves import step_budget, worker_loads

    assert worker_loads([3.0, 1.0, 2.0, 2.0], 2) == [[0, 1], [2, 3]]  # the costliest first, to the least loaded
    assert worker_loads([1.0, 1.0], 3) == [[0], [1], []]
    probes = {pair: {"update_seconds": per_step, "eval_seconds_per_member": 1.0, "env_setup_seconds": 0.0}
              for pair, per_step in zip("abc", (0.3, 0.2, 0.1))}
    args = argparse.Namespace(evals=2, seeds=3, jobs=2)
    # 2 processes: [a] and [b, c], 0.3 s per step each; evaluations 6 s per population, 12 s for [b, c]
    assert step_budget(args, probes, seconds_left=612.3) == 2000  # 600.3 s of updates / 0.3
    args.jobs = 1  # one process: 0.6 s per step, 18 s of evaluations
    assert step_budget(args, probes, seconds_left=618.3) == 1000


def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    """``side_by_side``'s workers end with the sweep: a killed sweep leaves none training beside
    the one that resumes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    script = f"""
import argparse, os, time
from pathlib import Path
from benchmarks.learning.side_by_side import side_by_side

def work(args, i):
    with open({str(pids)!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(60)

if __name__ == "__main__":
    side_by_side(argparse.Namespace(jobs=2), work, [(0,), (1,)])
"""
    (tmp_path / "sweep.py").write_text(script)  # a file: spawned workers import its functions
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sweep = subprocess.Popen([sys.executable, str(tmp_path / "sweep.py")], cwd=str(tmp_path),
                             env={**os.environ, "PYTHONPATH": root})
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"

    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)
