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


def test_the_last_checkpoints_rows_agree_with_the_critics_own_entropies(monkeypatch, capsys, tiny_data_dir,
                                                                         tmp_path):
    """Per-row entropies from the attention maps average to the critic's training-side group
    means (log-softmax path); the command's quantiles lie within the bounds of attention."""
    import math

    import numpy as np
    import pytest
    import torch

    from tql.attention import checkpoint_critic, critic_attention
    from tql.tasks import get_task

    out = tmp_path / "run"
    train_tiny(monkeypatch, capsys, tiny_data_dir, out, "0.5")
    task = get_task(TINY_TASK)
    critic = checkpoint_critic(out / "checkpoint.pt", task.obs_dim, task.act_dim)
    generator = torch.Generator().manual_seed(1)
    obs, act = torch.randn(64, task.obs_dim, generator=generator), torch.rand(64, task.act_dim, generator=generator)
    with torch.no_grad():
        _, means = critic(obs, act)
    for layer in critic_attention(critic, obs, act):
        assert layer.value_entropy.mean() == pytest.approx(float(means[layer.layer, 0]), abs=1e-4)
        assert layer.other_entropy.mean() == pytest.approx(float(means[layer.layer, 1]), abs=1e-4)
        assert sum(layer.value_weight.values()) == pytest.approx(1.0)
    code, text, err = run_cli(monkeypatch, capsys, "attention", str(out), "--json", "--batch", "32")
    assert code == 0, err
    view = json.loads(text)["checkpoint"]
    n = task.n_tokens
    assert view["step"] == 40 and view["batch"] == 32 and len(view["layers"]) == 2
    for layer in view["layers"]:
        for group in ("value", "other"):
            assert 0 <= layer[group]["entropy"][0] <= layer[group]["entropy"][2] <= math.log(n) + 1e-6
            assert 1 / n - 1e-6 <= layer[group]["largest"][0] <= layer[group]["largest"][2] <= 1
            assert sum(layer[group]["entropy_hist"]) == pytest.approx(1) == sum(layer[group]["largest_hist"])
        assert np.isclose(sum(layer["value_weight"].values()), 1.0)
    code, text, err = run_cli(monkeypatch, capsys, "attention", str(out), "--no-plot")
    assert code == 0 and "at the last checkpoint (update 40)" in text and "[VALUE] reads" in text


def test_a_checkpoint_without_a_single_agent_is_one_line(tmp_path):
    import pytest
    import torch

    from tql.attention import checkpoint_critic
    from tql.errors import ConfigError

    torch.save({"step": 1, "agent": {"k": 4, "config": {}}}, tmp_path / "checkpoint.pt")  # a population's
    with pytest.raises(ConfigError, match="holds no single agent with attention"):
        checkpoint_critic(tmp_path / "checkpoint.pt", 3, 2)
    from autotune.report.attention_report import checkpoint_view

    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_view(tmp_path) is None  # `attention` shows the logged history alone
