"""benchmarks/common.py: a result file names the command that reruns it, its machine and
commit first, and is written whole or not at all."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from benchmarks import common


def test_the_command_reruns_the_script_as_a_module_with_its_arguments_quoted():
    script = common.ROOT / "benchmarks" / "speed" / "update_speed.py"
    line = common.command(script, ["--shapes", "0.03M", "--note", "two words"])
    assert line == "python -m benchmarks.speed.update_speed --shapes 0.03M --note 'two words'"
    assert shlex.split(line)[3:] == ["--shapes", "0.03M", "--note", "two words"]
    assert common.results_dir(script) == common.ROOT / "benchmarks" / "speed" / "results"


def test_the_json_starts_with_the_header_and_holds_the_result(tmp_path):
    script = common.ROOT / "benchmarks" / "learning" / "collapse.py"
    path = common.write_json(tmp_path / "deep" / "r.json", {"ratio": 1.5, "runs": [1, 2]}, script, ["--steps", "9"])
    text = path.read_text()
    saved = json.loads(text)
    assert list(saved) == ["header", "ratio", "runs"]
    assert saved["ratio"] == 1.5 and saved["runs"] == [1, 2]
    header = saved["header"]
    assert header["command"] == "python -m benchmarks.learning.collapse --steps 9"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=common.ROOT).stdout.strip()
    assert header["commit"].startswith(head or "unknown")
    assert f"{__import__('os').cpu_count()} CPU cores" in header["machine"]
    import torch
    assert header["torch"] == torch.__version__
    assert common.header_lines(header) == [
        "$ python -m benchmarks.learning.collapse --steps 9",
        f"machine: {header['machine']}; torch {torch.__version__}; commit {header['commit']}"]
    assert common.write_json(None, {"x": 1}, script) is None


def test_an_older_files_header_lines_read_back_unchanged():
    old = ["$ python benchmarks/learning/collapse.py --steps 6000", "machine: x86_64, 2 CPU cores"]
    assert common.header_lines(old) == old


def test_a_result_cannot_overwrite_the_header(tmp_path):
    with pytest.raises(ValueError, match="'header'"):
        common.write_json(tmp_path / "r.json", {"header": "mine"}, common.ROOT / "benchmarks" / "common.py")
    assert not (tmp_path / "r.json").exists()


def test_a_write_that_fails_keeps_the_previous_file(tmp_path, monkeypatch):
    script = common.ROOT / "benchmarks" / "common.py"
    path = common.write_json(tmp_path / "r.json", {"n": 1}, script, [])

    def broken(*args, **kwargs):  # the new text is on disk, the final rename fails
        raise OSError("disk full")

    monkeypatch.setattr("tql.io.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        common.write_json(path, {"n": 2}, script, [])
    assert json.loads(path.read_text())["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_json_option_is_the_same_everywhere():
    import argparse

    parser = argparse.ArgumentParser()
    common.add_json_option(parser)
    assert parser.parse_args(["--json", "out.json"]).json == "out.json"
    assert parser.parse_args([]).json is None


def test_a_benchmark_runs_as_a_module_from_the_root():
    done = subprocess.run([sys.executable, "-m", "benchmarks.learning.side_by_side"], capture_output=True,
                          text=True, cwd=common.ROOT)
    assert done.returncode == 0, done.stderr


def test_a_child_process_returns_its_json_and_a_failing_one_says_why():
    script = common.ROOT / "benchmarks" / "speed" / "compile_cost.py"
    result = common.run_child(script, ["eager", "--threads", "1", "--task", "cube-double-play-singletask-task2-v0",
                                       "--profile", "smoke", "--updates", "1"])
    assert result["compiled"] is False and result["steady_ms"] > 0 and result["first_seconds"] > 0
    with pytest.raises(common.ChildFailed, match=r"benchmarks.speed.compile_cost --child eager .*failed \(exit"):
        common.run_child(script, ["eager", "--threads", "1", "--task", "no-such-task", "--profile", "smoke"])
