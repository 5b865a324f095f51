"""The collapse alarm (tql.collapse): the first logged row below the threshold, computed by
hand from a run's metrics.jsonl; the one line while training; the summary, trial and report."""

from __future__ import annotations

import json
import math

from tests.conftest import TINY_TASK
from tests.test_cli import run_cli
from tql.collapse import alarm_line, first_collapse, lowest_group
from tql.io import read_jsonl


def test_the_first_row_below_the_threshold_names_its_layer_group_and_fraction():
    log_n = 4.0
    rows = [{"step": 10, "type": "train", "entropy/l0_value": 3.9, "entropy/l0_other": 4.0,
             "entropy/l1_value": 3.0, "entropy/l1_other": 3.5},
            {"type": "eval", "step": 10, "success_rate": 0.0},
            {"step": 20, "type": "train", "entropy/l0_value": 0.7, "entropy/l0_other": 3.9,
             "entropy/l1_value": 0.6, "entropy/l1_other": 3.5},
            {"step": 30, "type": "train", "entropy/l0_value": 0.1, "entropy/l0_other": 3.9,
             "entropy/l1_value": 0.6, "entropy/l1_other": 3.5}]
    assert lowest_group(rows[0], 2, log_n) == (0.75, 1, "value")
    assert first_collapse(rows, 2, log_n, 0.2) == {"step": 20, "layer": 1, "group": "value", "fraction": 0.15,
                                                   "threshold": 0.2}
    assert first_collapse(rows, 2, log_n, 0.1) == {"step": 30, "layer": 0, "group": "value", "fraction": 0.025,
                                                   "threshold": 0.1}
    assert first_collapse(rows, 2, log_n, 0.0) is None  # the alarm off
    assert first_collapse(rows, 0, log_n, 0.2) is None  # no attention (FQL's MLP)
    assert "layer 1 [VALUE] rows at 0.15 log n (< 0.2 log n) at update 20" in alarm_line(first_collapse(rows, 2, log_n))


def _by_hand(rows: list[dict], log_n: float, threshold: float) -> tuple[int, float] | None:
    for row in rows:
        values = [v / log_n for k, v in row.items() if k.startswith("entropy/")]
        if row["type"] == "train" and min(values) < threshold:
            return row["step"], min(values)
    return None


def test_train_flags_a_run_below_its_alarm_in_one_line_and_its_summary(monkeypatch, capsys, tiny_data_dir, tmp_path):
    """A threshold just under uniform attention goes off at once: the line, and the summary's
    record equal to the metrics read by hand; --collapse-alarm 0 keeps the same run quiet."""
    from tql.tasks import get_task

    log_n = get_task(TINY_TASK).max_entropy
    common = ["train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "40", "--eval-every", "40",
              "--eval-episodes", "1", "--data-dir", str(tiny_data_dir), "--quiet", "--no-entropy-control"]
    code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / "a"), "--collapse-alarm", "0.99999")
    assert code == 0, err
    said = [line for line in (out + err).splitlines() if "attention collapsed" in line]
    assert len(said) == 1  # once, however many rows are below
    step, fraction = _by_hand(read_jsonl(tmp_path / "a" / "metrics.jsonl"), log_n, 0.99999)
    collapse = json.loads((tmp_path / "a" / "summary.json").read_text())["extra"]["collapse"]
    assert collapse["step"] == step and math.isclose(collapse["fraction"], fraction, abs_tol=1e-4)
    assert f"at update {step:,}" in said[0]
    code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / "b"), "--collapse-alarm", "0")
    assert code == 0, err
    assert "attention collapsed" not in out + err
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["extra"]["collapse"] is None


def test_a_population_run_names_the_member_whose_attention_collapsed(monkeypatch, capsys, tiny_data_dir, tmp_path):
    """PBT logs one row per member: the record is the first such row, read by hand, and names
    its member."""
    from tql.tasks import get_task

    log_n = get_task(TINY_TASK).max_entropy
    code, out, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "20",
                             "--eval-every", "20", "--eval-episodes", "1", "--data-dir", str(tiny_data_dir),
                             "--quiet", "--no-entropy-control", "--controller", "population", "--members", "2",
                             "--out", str(tmp_path / "p"), "--collapse-alarm", "0.99999")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "p" / "metrics.jsonl")
    step, fraction = _by_hand(rows, log_n, 0.99999)
    first = next(r for r in rows if r["type"] == "train" and r["step"] == step and
                 min(v / log_n for k, v in r.items() if k.startswith("entropy/")) == fraction)
    collapse = json.loads((tmp_path / "p" / "summary.json").read_text())["extra"]["collapse"]
    assert collapse["member"] == first["member"] and collapse["step"] == step
    assert f"attention collapsed: member {first['member']}: layer" in out + err


def test_a_bad_alarm_is_one_line(monkeypatch, capsys, tiny_data_dir, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--data-dir",
                           str(tiny_data_dir), "--out", str(tmp_path / "r"), "--collapse-alarm", "1.5")
    assert code == 2 and "collapse_alarm=1.5 must be in [0, 1)" in err and not (tmp_path / "r").exists()


def test_a_run_inside_the_measured_map_gets_its_measurement_and_one_outside_gets_none():
    from autotune.forecast import collapse_line
    from tql.collapse import MEASURED
    from tql.trainer import TrainConfig

    task = "cube-double-play-singletask-task1-v0"
    inside = TrainConfig.from_profile(task, "cpu", {"critic_lr": 1e-3, "entropy_control": False}, steps=2000)
    short, long = sorted((m for m in MEASURED if (m.domain, m.size, m.critic_lr, m.data_episodes)
                          == ("cube-double-play", "0.03M", 1e-3, 40)), key=lambda m: m.steps)
    line = collapse_line(inside)  # 2,000 updates: inside the shorter measurement, which is the one told
    assert f"fell to {short.lowest:.2f} log n within {short.steps:,} updates" in line
    assert short.source in line and "control holds" not in line
    longer = TrainConfig.from_profile(task, "cpu", {"critic_lr": 1e-3, "entropy_control": False}, steps=long.steps)
    assert f"fell to {long.lowest:.2f} log n within {long.steps:,} updates" in collapse_line(longer)
    measured = long
    controlled = TrainConfig.from_profile(task, "cpu", {"critic_lr": 1e-3}, steps=2000)
    assert "control holds it above its target" in collapse_line(controlled)
    for outside in (TrainConfig.from_profile(task, "cpu", {"critic_lr": 1e-3}, steps=measured.steps + 1),  # longer
                    TrainConfig.from_profile(task, "cpu", {"critic_lr": 2e-3}),  # another rate
                    TrainConfig.from_profile(task, "cpu", {"critic_lr": 1e-3, "critic": "mlp"}),  # no attention
                    TrainConfig.from_profile(task, "smoke", {"critic_lr": 1e-3})):  # another batch and data
        assert collapse_line(outside) is None
