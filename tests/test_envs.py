"""Env builds are quiet about third-party warnings, in every process; our own warnings are one line, once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import gymnasium
import ogbench  # noqa: F401  (registers the environments)

from tests.conftest import TINY_TASK
from tql.envs import make_env
from tql.tasks import get_task

ENV = get_task(TINY_TASK).env_name
PYTHON_WARNING_LINE = re.compile(r"\w+Warning: ")  # how Python prints a warning: "file:line: XWarning: text"


def _recorded(build) -> list[str]:
    """The messages of every warning while ``build()`` makes an env and runs a reset and a step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = build()
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
    return [str(w.message) for w in caught]


def test_a_plain_gymnasium_build_warns_as_the_filters_expect():
    """The warnings tql.envs silences exist (when this fails, the filter may no longer be needed)."""
    assert any("precision lowered by casting to float32" in m for m in _recorded(lambda: gymnasium.make(ENV)))


def test_make_env_silences_the_known_warnings_and_leaves_others_alone():
    assert _recorded(lambda: make_env(ENV)) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_env(ENV).close()
        warnings.warn("a warning of ours", UserWarning)
        warnings.warn("a deprecation of ours", DeprecationWarning)
    assert [str(w.message) for w in caught] == ["a warning of ours", "a deprecation of ours"]


def test_our_warnings_are_one_line_once_on_the_cli(capsys):
    from autotune.cli import _quiet_library_warnings

    with warnings.catch_warnings():
        _quiet_library_warnings()
        for _ in range(3):
            warnings.warn("the dataset is small", RuntimeWarning)
    assert capsys.readouterr().err == "warning: the dataset is small\n"


def test_a_run_with_evaluation_processes_prints_no_third_party_warning(tiny_data_dir, tmp_path):
    """Evaluation workers are fresh interpreters with Python's default filters: the silencing
    must reach them through the env builder, not through the CLI's own process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "train", "--task", TINY_TASK, "--data-dir", str(tiny_data_dir),
         "--profile", "smoke", "--steps", "4", "--eval-every", "4", "--eval-episodes", "2", "--eval-workers", "2",
         "--threads", "1", "--quiet", "--out", str(tmp_path / "run")],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert (tmp_path / "run" / "summary.json").exists()
    for third_party in ("precision lowered", "DISPLAY", "GLFW", "gym.logger"):
        assert third_party not in output, output
    assert not PYTHON_WARNING_LINE.search(output), output
