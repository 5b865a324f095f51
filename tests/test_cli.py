"""`tql-tune` end to end: commands, output files, and one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
import torch

from autotune import cli
from tests.conftest import TINY_TASK


class ModuleCapture:
    """``capsys`` for a fixture wider than one test: stdout and stderr while entered, and the
    same ``readouterr``."""

    def __enter__(self) -> ModuleCapture:
        self._out, self._err = io.StringIO(), io.StringIO()
        self._redirects = contextlib.ExitStack()
        self._redirects.enter_context(contextlib.redirect_stdout(self._out))
        self._redirects.enter_context(contextlib.redirect_stderr(self._err))
        return self

    def __exit__(self, *exc) -> None:
        self._redirects.close()

    def readouterr(self) -> tuple[str, str]:
        texts = self._out.getvalue(), self._err.getvalue()
        for stream in (self._out, self._err):
            stream.seek(0)
            stream.truncate()
        return texts


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
    (["--task", TINY_TASK, "--rho", "0.8,0.7,0.6"], "rho [0.8, 0.7, 0.6] has the wrong shape for a depth-2 critic"),
    (["--task", TINY_TASK, "--target-entropy", "3.0:2.0,2.5:9"], "target entropy 9.0 at layer 1 (other) is outside"),
    (["--task", TINY_TASK, "--rho", "0.5", "--targets", "published"], "give one of --rho, --target-entropy, --targets, not --rho and --targets"),
    (["--task", TINY_TASK, "--targets", "paper"], "targets 'paper' is not one of: published"),
    (["--task", TINY_TASK, "--settings", "old"], "settings 'old' is not one of: published, fql, small-alpha"),
    (["--task", TINY_TASK, "--settings", "legacy"], "settings 'legacy' are called 'small-alpha' since tql-tune 0.2"),
    (["--task", TINY_TASK, "--agent", "alpha_init"], "agent option 'alpha_init': write KEY=VALUE with KEY one of"),
    (["--task", TINY_TASK, "--agent", "alpha_init=big"], "agent option alpha_init='big': expected float"),
    (["--task", TINY_TASK, "--agent", "entropy_reduction=max"], "entropy_reduction 'max' is not one of: mean, sum"),
    (["--task", TINY_TASK, "--critic", "cnn"], "critic 'cnn' is not one of: tql, mlp"),
    (["--task", TINY_TASK, "--temperature-sharing", "head"], "--temperature-sharing 'head' is not one of: "
                                                             "layer_group, layer, global"),
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


def test_train_with_one_temperature_per_layer_saves_it_and_trains_two(monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "4",
                           "--eval-every", "4", "--eval-episodes", "1", "--temperature-sharing", "layer",
                           "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["agent"]["temperature_sharing"] == "layer"
    model = torch.load(out / "checkpoint.pt", weights_only=False)["agent"]["model"]
    assert tuple(model["temperatures.log_alpha"].shape) == (2, 1)  # one per layer of the depth-2 critic


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
    # 10 updates cannot engage the control: said once, with what would (tests/test_forecast.py)
    warning = " ".join(stdout.split())
    assert warning.count("H̄ cannot change this run: the control engages after ~") == 1
    assert "this one has 10 (predicted for its highest target, rho 0.60" in warning


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


def _train_rows(out):
    from tql.io import read_jsonl

    return [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]


@pytest.mark.parametrize("args, table", [
    (["--targets", "published"], [[3.0, 3.0], [2.5, 2.5]]),
    (["--rho", "0.8,0.5"], [[0.8 * 3.7612, 0.8 * 3.7612], [0.5 * 3.7612, 0.5 * 3.7612]]),
    (["--target-entropy", "3.0:2.0,1.5:1.0"], [[3.0, 2.0], [1.5, 1.0]]),
])
def test_train_logs_each_layer_and_groups_target(monkeypatch, capsys, tiny_data_dir, tmp_path, args, table):
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "20",
                           "--eval-every", "20", "--eval-episodes", "1", "--data-dir", str(tiny_data_dir),
                           "--out", str(out), "--quiet", *args)  # smoke logs every 20 steps: one row
    assert code == 0, err
    row = _train_rows(out)[-1]
    for layer in range(2):
        for g, group in enumerate(("value", "other")):
            assert row[f"target_entropy/l{layer}_{group}"] == pytest.approx(table[layer][g], abs=1e-3)
            assert f"alpha/l{layer}_{group}" in row and f"entropy/l{layer}_{group}" in row
    assert row["target_entropy"] == pytest.approx(sum(map(sum, table)) / 4, abs=1e-3)


def test_legacy_settings_and_agent_options_reach_the_run(monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "2",
                           "--eval-every", "2", "--eval-episodes", "1", "--data-dir", str(tiny_data_dir),
                           "--out", str(out), "--quiet", "--settings", "small-alpha", "--size", "0.03M-v1",
                           "--agent", "alpha_init=0.05", "--agent", "two_sided=true")
    assert code == 0, err
    agent = json.loads((out / "config.json").read_text())["train"]["agent"]
    assert (agent["alpha_init"], agent["alpha_lr"], agent["entropy_reduction"], agent["lr_schedule"]) == \
        (0.05, 3e-4, "sum", "constant")
    assert (agent["critic_lr"], agent["weight_decay"], agent["two_sided"], agent["size"]) == (3e-4, 0.0, True, "0.03M-v1")


def test_a_run_folder_of_tql_tune_0_1_resumes_with_its_settings(monkeypatch, capsys, tiny_data_dir, tmp_path):
    """A 0.1 run folder (config without critic_lr, preset '0.03M') continues as that run."""
    import torch

    out = tmp_path / "old"
    args = ["train", "--task", TINY_TASK, "--profile", "smoke", "--eval-episodes", "1", "--data-dir",
            str(tiny_data_dir), "--out", str(out), "--quiet", "--settings", "small-alpha", "--size", "0.03M-v1"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--steps", "3", "--eval-every", "3")
    assert code == 0, err
    # Rewrite the folder as tql-tune 0.1 wrote it: its config fields and preset name.
    config_path = out / "config.json"
    saved = json.loads(config_path.read_text())
    agent = saved["train"]["agent"]
    old_agent = {k: agent[k] for k in ("critic", "num_q", "batch_size", "gamma", "tau", "alpha_fql", "flow_steps",
                                       "actor_hidden", "normalize_q_loss", "alpha_lr", "alpha_init",
                                       "entropy_control", "compile", "precision")}
    saved["train"]["agent"] = {**old_agent, "size": "0.03M", "lr": 3e-4}
    for key in ("targets",):
        saved["train"].pop(key)
    config_path.write_text(json.dumps(saved))
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    for key in ("lr_step", "total_steps"):
        state["agent"].pop(key)
    torch.save(state, out / "checkpoint.pt")
    # Today's command line for that run: the profile's (now published) agent, the old config on disk.
    code, stdout, err = run_cli(monkeypatch, capsys, *args[:-4], "--steps", "6", "--eval-every", "3")
    assert code == 2 and "holds a run with different settings" in err
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--steps", "6", "--eval-every", "3")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
