"""The budgeted GPU scripts (benchmarks/gpu/gpu_suite.sh, benchmarks/learning/sensitivity_gpu.sh)
checked on a CPU: a broken command would cost a GPU machine's minutes. With GPU_STEPS_DRY=1
they list their commands instead of running them; each is a module run from the repository
root (``python -m benchmarks.<folder>.<name>``) whose arguments must parse, and each
sensitivity run's settings must make a valid training config."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["benchmarks/gpu/gpu_suite.sh", "benchmarks/learning/sensitivity_gpu.sh"]


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def listed_commands(script: str, out: Path) -> list[list[str]]:
    """The commands ``script`` would run, started from another folder than the root (it goes there)."""
    done = subprocess.run(["bash", str(ROOT / script), "10", str(out)], cwd=out.parent,
                          env={**os.environ, "GPU_STEPS_DRY": "1"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in (out / "commands.txt").read_text().splitlines() if line.strip()]


def parsed_arguments(module_name: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """The script's own parser applied to ``argv`` (its main stops right after parsing)."""
    module = importlib.import_module(module_name)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed) as parsed:
        module.main(argv)
    monkeypatch.undo()
    return parsed.value.namespace


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_listed_command_parses(script, tmp_path, monkeypatch):
    commands = listed_commands(script, tmp_path)
    assert len(commands) >= 4 and (tmp_path / "skipped.txt").read_text() == ""
    for command in commands:
        assert command[:2] == ["python", "-m"], command  # every script runs as a module from the root
        if command[2] == "pytest":  # python -m pytest -q FILE...
            assert all((ROOT / f).is_file() for f in command[4:]), command
            continue
        assert command[2].startswith("benchmarks."), command
        assert (ROOT / (command[2].replace(".", "/") + ".py")).is_file(), command
        namespace = parsed_arguments(command[2], command[3:], monkeypatch)
        assert namespace is not None


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_goes_to_the_repository_root_before_it_runs_anything(script):
    """``python -m benchmarks...`` finds the scripts only from the root: each script goes there."""
    text = (ROOT / script).read_text()
    go_to_root = 'cd "$(dirname "$0")/../.."'  # not git's top level: a GPU machine's copy may not be a checkout
    assert go_to_root in text
    assert text.index(go_to_root) < text.index("source benchmarks/gpu/budget_steps.sh")  # before any step


def test_sensitivity_gpu_runs_make_valid_configs(tmp_path):
    import benchmarks.learning.sensitivity as sensitivity

    for command in listed_commands("benchmarks/learning/sensitivity_gpu.sh", tmp_path):
        assert command[:3] == ["python", "-m", "benchmarks.learning.sensitivity"], command
        args = sensitivity.parse_args(command[3:])
        runs = sensitivity.grid(args)
        assert args.batch and runs
        for run in runs:  # the agent options, rho labels, layouts and budgets are all accepted
            config = sensitivity.train_config(args, run)
            assert config.steps == args.steps and args.steps % args.eval_every == 0  # the last evaluation at the end
