"""The Python API (``autotune.api``, ``tql.train``): the docs' examples run as written, the
functions keep the commands' defaults, and bad input fails as the commands do."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotune import api
from autotune.schedules import Schedule
from autotune.cli import compare as cli_compare
from autotune.cli import experiment as cli_experiment
from autotune.cli import study_commands as cli_studies
from autotune.cli import train as cli_train
from tql.errors import ConfigError, TQLError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"

# CLI option -> API keyword, where the names differ; None: the option has no API keyword.
RENAMED = {"compile_loss": "compile", "no_entropy_control": "entropy_control", "quiet": "progress",
           "run_dir": "runs", "as_json": None, "plots": None}
# (command, function, options the function leaves to the caller): `run --quiet` is run_studies'
# progress display, which the caller builds (``progress=``).
PAIRS = [(cli_studies.run, api.study_plan, ("quiet",)), (cli_studies.export, api.export_schedule, ()),
         (cli_studies.show, api.study_summary, ()), (cli_train.train, api.train, ()),
         (cli_compare.compare, api.compare, ()), (cli_compare.lodo, api.lodo, ()),
         (cli_experiment.experiment, api.experiment, ()), (cli_train.apply, api.apply, ()),
         (cli_train.attention, api.attention, ("as_json", "plot", "run_dir")),  # --json: png=False
         (cli_train.data_make, api.make_data, ())]


def doc_examples() -> str:
    """The python blocks of docs/api.md, in order, as one script."""
    return "\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S))


def test_the_docs_examples_run_and_write_what_they_say(tmp_path):
    script = doc_examples()
    assert script.count("autotune.") >= 5 and "tql.train(" in script
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    task = "cube-double-play-singletask-task2-v0"
    # The study, read back with Optuna itself: the exported schedule is its best trial's rho.
    trials = optuna.load_study(study_name=f"tql:{task}", storage=f"sqlite:///{tmp_path}/api.db").trials
    assert len([t for t in trials if t.state.is_finished()]) == 2
    best = max((t for t in trials if t.value is not None), key=lambda t: (t.value, -t.number))  # earliest of ties
    assert Schedule.load(tmp_path / "best.json").rho_at(0.5) == pytest.approx(best.params["rho"])
    summary = api.study_summary("tql", f"sqlite:///{tmp_path}/api.db")["tasks"][0]["best"]
    assert f"best rho {summary['rho']:.3f}" in done.stdout
    assert (tmp_path / "runs" / task / "tql-seed0" / "summary.json").exists()  # tql.train's default folder
    followed = json.loads((tmp_path / "runs" / "feedback" / "schedule.json").read_text())
    assert followed["meta"]["task"] == task
    data = json.loads((tmp_path / "runs" / "compare" / "data.json").read_text())
    assert sorted(data["approaches"]) == ["default", "tuned"] and len(data["scores"]["tuned"][task]) == 2
    assert (tmp_path / "runs" / "compare" / "report.md").read_text().startswith("#")


@pytest.mark.parametrize("command, function, left_out", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_each_function_has_its_commands_defaults(command, function, left_out):
    keywords = inspect.signature(function).parameters
    for name, param in inspect.signature(command).parameters.items():
        option = param.default  # a typer OptionInfo / ArgumentInfo
        keyword = RENAMED.get(name, name)
        if keyword is None or name in left_out:
            continue
        assert keyword in keywords, f"{function.__name__} lacks the option --{name.replace('_', '-')}"
        expected = keywords[keyword].default
        if expected is inspect.Parameter.empty:
            continue  # a required argument, as the command's (e.g. --task)
        default = option.default
        if name in ("no_entropy_control", "quiet"):
            default = not default  # a flag that turns the keyword off
        if isinstance(default, Path):
            default = str(default)
        if isinstance(expected, Path):
            expected = str(expected)
        if name in ("agent", "run_dir", "log"):
            assert not default and not expected, name  # repeatable options: none given
            continue
        assert default == expected, f"--{name.replace('_', '-')}: {default!r} in the CLI, {expected!r} in the API"


def test_bad_input_fails_before_any_work_with_the_commands_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="controller 'pid' is not one of: none, feedback, population"):
        api.train("cube-double-play-singletask-task2-v0", controller="pid")
    with pytest.raises(ConfigError, match="--members applies only with --controller population"):
        api.train("cube-double-play-singletask-task2-v0", members=3)
    with pytest.raises(TQLError, match="give either --study"):
        api.export_schedule(tmp_path / "s.json")
    with pytest.raises(TQLError, match="unknown profile 'huge'"):
        api.study_plan("cube-double-play-singletask-task2-v0", profile="huge")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_tql_train_takes_a_config_or_a_task_name_not_both(tmp_path):
    import tql
    from tql.trainer import TrainConfig

    config = TrainConfig.from_profile("cube-double-play-singletask-task2-v0", "smoke")
    with pytest.raises(ConfigError, match="profile, agent and settings go with a task name"):
        tql.train(config, tmp_path, steps=10)
    assert tql.train is tql.trainer.train and tql.TrainConfig is TrainConfig
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tql.nothing  # noqa: B018
