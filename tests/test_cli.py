"""`tql-tune` end to end: commands, output files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import sys

import pytest

from autotune import cli
from tests.conftest import TINY_TASK


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["tql-tune", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, expected", [
    (["--task", "cube-double-play-singletask-task9-v0"], "unknown task"),
    (["--task", TINY_TASK, "--size", "5M"], "unknown critic size '5M'; valid:"),
    (["--task", TINY_TASK, "--target-entropy", "10"], "outside (0, log n]"),
    (["--task", TINY_TASK, "--rho", "0"], "rho 0.0 is outside (0, 1]"),
    (["--task", TINY_TASK, "--profile", "huge"], "unknown profile 'huge'; valid: smoke, cpu, paper"),
    (["--task", TINY_TASK, "--critic", "cnn"], "critic 'cnn' is not one of: tql, mlp"),
    (["--task", TINY_TASK, "--precision", "fp16"], "precision 'fp16' is not one of: fp32, bf16"),
    (["--task", TINY_TASK, "--controller", "magic"], "controller 'magic' is not one of: none, feedback, population"),
    (["--task", TINY_TASK, "--fitness", "success"], "--fitness applies only with --controller population (got "
                                                    "--controller none)"),
    (["--task", TINY_TASK, "--controller", "feedback", "--members", "8"], "--members applies only with --controller"),
    (["--task", TINY_TASK, "--members", "8", "--fitness", "success"], "--members and --fitness apply only with"),
    (["--task", TINY_TASK, "--controller", "population", "--fitness", "bogus"],
     "fitness signal 'bogus' is not one of: val_td, success"),
])
def test_bad_train_arguments_fail_with_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, expected):
    code, _, err = run_cli(monkeypatch, capsys, "train", *args, "--data-dir", str(tmp_path), "--quiet")
    assert code == 2
    assert expected in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "generated").exists()


def test_missing_dataset_error_says_how_to_get_it(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "run"), "--quiet")
    assert code == 2 and "tql-tune data make" in err and "download" in err


def test_train_command_writes_a_run(monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke",
                                "--steps", "10", "--eval-every", "10", "--eval-episodes", "1",
                                "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["data_kind"] == "generated"
    assert "generated data" in stdout


def test_data_make_writes_marked_generated_files(monkeypatch, capsys, tmp_path):
    from tql.data import load_task_data
    from tql.tasks import get_task

    code, stdout, err = run_cli(monkeypatch, capsys, "data", "make", "puzzle-3x3-play", "--episodes", "1",
                                "--episode-length", "30", "--dir", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "generated" / "puzzle-3x3-play-v0.npz").exists()
    data = load_task_data(get_task("puzzle-3x3-play-singletask-task1-v0"), tmp_path)
    assert data.kind == "generated" and len(data.train["observations"]) == 29


def test_sizes_and_tasks_tables(monkeypatch, capsys):
    from tql.model import PRESETS

    code, stdout, _ = run_cli(monkeypatch, capsys, "sizes")
    assert code == 0 and all(name in stdout for name in PRESETS)
    code, stdout, _ = run_cli(monkeypatch, capsys, "tasks")
    assert code == 0 and stdout.count("-singletask-task") == 25 and "cube-triple-play" in stdout
