"""`tql-tune attention RUN_DIR`: a run's entropies, targets and temperatures read back from its
metrics.jsonl, the engagement step, the terminal table and plot, and attention.png."""

from __future__ import annotations

import json

from tests.conftest import TINY_TASK
from tests.test_cli import run_cli
from tql.engagement import ENGAGE_MARGIN
from tql.io import read_jsonl


def train_tiny(monkeypatch, capsys, data_dir, out, rho: str) -> None:
    """40 updates of the smoke agent at constant ``rho``: attention stays near uniform."""
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "40",
                           "--eval-every", "40", "--eval-episodes", "1", "--rho", rho, "--data-dir", str(data_dir),
                           "--out", str(out), "--quiet")
    assert code == 0, err


def test_attention_reads_the_run_back_and_marks_engagement(monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    train_tiny(monkeypatch, capsys, tiny_data_dir, out, "0.99")
    code, text, err = run_cli(monkeypatch, capsys, "attention", str(out), "--json")
    assert code == 0, err
    history = json.loads(text)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert sorted(history["series"]) == ["l0_other", "l0_value", "l1_other", "l1_value"]
    for key, series in history["series"].items():
        assert series["steps"] == [r["step"] for r in rows]
        assert series["entropy"] == [r[f"entropy/{key}"] for r in rows]
        assert series["alpha"] == [r[f"alpha/{key}"] for r in rows]
        # rho 0.99: the target sits 0.04 nats under uniform, so the control holds from the start.
        first = next(r["step"] for r in rows if r[f"entropy/{key}"] <= r[f"target_entropy/{key}"] + ENGAGE_MARGIN)
        assert series["engaged"] == first == rows[0]["step"]
    code, text, err = run_cli(monkeypatch, capsys, "attention", str(out))
    assert code == 0, err
    assert "attention entropy vs target" in text and "engaged at" in text
    assert (out / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_metrics_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "attention", str(tmp_path))
    assert code == 2 and f"{tmp_path} holds no metrics.jsonl" in err and len(err.strip().splitlines()) == 1


def test_a_target_far_below_uniform_never_engages_in_a_short_run(monkeypatch, capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    train_tiny(monkeypatch, capsys, tiny_data_dir, out, "0.3")
    code, text, err = run_cli(monkeypatch, capsys, "attention", str(out), "--no-plot")
    assert code == 0, err
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert all(r[f"entropy/{key}"] > r[f"target_entropy/{key}"] + ENGAGE_MARGIN for r in rows
               for key in ("l0_value", "l0_other", "l1_value", "l1_other"))  # the premise, from the file
    assert text.count("never") >= 4
