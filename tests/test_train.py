"""The training loop: metrics files, hooks (H̄ per step, pruning), checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_TASK
from tql.errors import ConfigError, MissingDatasetError
from tql.io import read_jsonl
from tql.trainer import TrainConfig, TrainHooks, Trainer, TrainingDiverged, train


def _config(data_dir, **overrides):
    values = dict(steps=30, eval_every=15, eval_episodes=1, eval_max_steps=8, log_every=5,
                  checkpoint_every=10, data_dir=str(data_dir))
    values.update(overrides)
    return TrainConfig.from_profile(TINY_TASK, "smoke", {"batch_size": 16}, **values)


class StepTarget(TrainHooks):
    """H̄ that depends on the step, so each logged value can be checked."""

    def __init__(self):
        self.logged, self.evals = [], []

    def target_entropy(self, step, progress):
        return 1.0 + step / 100.0

    def on_log(self, step, metrics):
        self.logged.append((step, metrics["target_entropy"]))

    def on_eval(self, step, result):
        self.evals.append((step, result.success_rate))
        return False


def test_run_writes_metrics_evals_config_and_summary(tiny_data_dir, tmp_path):
    hooks = StepTarget()
    result = train(_config(tiny_data_dir), tmp_path, hooks=hooks, progress=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    train_rows = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    # Each log row holds the H̄ the hook gave for that update (step - 1 before the increment).
    for row in train_rows:
        assert row["target_entropy"] == pytest.approx(1.0 + (row["step"] - 1) / 100.0, abs=1e-6)
    depth = 2  # the smoke profile's 0.03M preset
    for layer in range(depth):
        for group in ("value", "other"):
            assert 0.0 < train_rows[-1][f"entropy/l{layer}_{group}"] <= torch.log(torch.tensor(43.0)) + 1e-5
            assert train_rows[-1][f"alpha/l{layer}_{group}"] > 0
    assert [r["step"] for r in rows if r["type"] == "eval"] == [15, 30]
    for row in (r for r in rows if r["type"] == "eval"):  # graded: cube-double's two cubes
        assert len(row["subtask_rates"]) == 2 and 0.0 <= row["progress"] <= 1.0
        # The mean of per-episode fractions is the mean of per-subtask rates (equal-length rows).
        assert row["progress"] == pytest.approx(sum(row["subtask_rates"]) / 2)
    assert [s for s, _ in hooks.evals] == [15, 30] and result.steps == 30
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data_kind"] == "generated" and summary["final_success"] == result.final_success
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data_kind"] == "generated" and config["n_tokens"] == 43


def test_a_hook_can_stop_the_run_after_an_evaluation(tiny_data_dir, tmp_path):
    class Prune(TrainHooks):
        def on_eval(self, step, result):
            return True

    result = train(_config(tiny_data_dir), tmp_path, hooks=Prune(), progress=False)
    assert result.stopped_early and result.steps == 15
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 15


def test_resume_after_a_crash_continues_exactly_like_an_uninterrupted_run(tiny_data_dir, tmp_path):
    config = _config(tiny_data_dir, eval_every=10)
    straight = Trainer(config, tmp_path / "a", progress=False)
    straight.run()

    class Crash(TrainHooks):
        def on_log(self, step, metrics):
            if step == 25:
                raise KeyboardInterrupt  # killed between the checkpoints at 20 and 30

    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "b", hooks=Crash(), progress=False).run()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 20
    resumed = Trainer(config, tmp_path / "b", progress=False)
    assert resumed.step == 20
    resumed.run()
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["type"] == "train"]
    assert steps == [5, 10, 15, 20, 25, 30]  # the steps after the checkpoint ran again, once
    for key, value in straight.agent.state_dict().items():
        torch.testing.assert_close(resumed.agent.state_dict()[key], value, msg=key)


def test_a_damaged_checkpoint_resumes_from_the_previous_one_or_stops_in_one_line(tiny_data_dir, tmp_path):
    config = _config(tiny_data_dir, steps=20, eval_every=10)
    train(config, tmp_path, progress=False)  # checkpoints at 10 and 20: the one at 10 is kept beside
    checkpoint, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert torch.load(previous, weights_only=False)["step"] == 10
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated, as by a full disk
    longer = _config(tiny_data_dir, steps=30, eval_every=10)
    class Heard:
        def __init__(self):
            self.lines = []

        def print(self, text, *args, **kwargs):
            self.lines.append(text)

    heard = Heard()
    resumed = Trainer(longer, tmp_path, console=heard, progress=False)
    said = [line for line in heard.lines if "checkpoint" in line]
    assert resumed.step == 10 and len(said) == 2  # the damage, then "resuming ... from step 10"
    assert said[0].startswith(f"checkpoint {checkpoint} is damaged (") and "\n" not in said[0]
    assert said[0].endswith("resuming from the previous one, checkpoint.prev.pt (step 10)")
    resumed.run()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"] == [5, 10, 15, 20, 25,
                                                                                                  30]
    for path in (checkpoint, previous):  # now both damaged: one line, nothing deleted
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError) as caught:
        Trainer(longer, tmp_path, progress=False)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {checkpoint} is damaged (") and "\n" not in message
    assert message.endswith("start the run over with --fresh (fresh=True), or restore the file")
    assert checkpoint.read_bytes() == b"not a checkpoint" and (tmp_path / "metrics.jsonl").exists()
    assert train(longer, tmp_path, fresh=True, progress=False).steps == 30 and not previous.read_bytes().startswith(b"not")


def test_more_steps_extend_a_finished_run(tiny_data_dir, tmp_path):
    train(_config(tiny_data_dir, steps=10), tmp_path, progress=False)
    result = train(_config(tiny_data_dir, steps=20), tmp_path, progress=False)
    assert result.steps == 20
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"] == [5, 10, 15, 20]


def test_resume_refuses_a_run_with_other_settings(tiny_data_dir, tmp_path):
    train(_config(tiny_data_dir, steps=10), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different settings.*seed"):
        train(_config(tiny_data_dir, steps=10, seed=3), tmp_path, progress=False)
    fresh = train(_config(tiny_data_dir, steps=10, seed=3), tmp_path, fresh=True, progress=False)
    assert fresh.steps == 10


def test_a_run_saved_before_an_agent_option_existed_resumes_with_its_default(tiny_data_dir, tmp_path):
    train(_config(tiny_data_dir, steps=10), tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["train"]["agent"]["precision"]  # as written by a version without the option
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert train(_config(tiny_data_dir, steps=20), tmp_path, progress=False).steps == 20
    bf16 = _config(tiny_data_dir, steps=30)
    bf16.agent = bf16.agent.replace(precision="bf16")
    with pytest.raises(ConfigError, match="different settings.*agent"):
        train(bf16, tmp_path, progress=False)


def test_nan_losses_stop_the_run_as_diverged(tiny_data_dir, tmp_path):
    trainer = Trainer(_config(tiny_data_dir), tmp_path, progress=False)
    trainer.sampler.tensors["rewards"][:] = float("nan")
    with pytest.raises(TrainingDiverged, match="diverged at step 5"):
        trainer.run()


def test_missing_dataset_says_how_to_make_it(tmp_path):
    with pytest.raises(MissingDatasetError, match="tql-tune data make"):
        train(_config(tmp_path / "empty"), tmp_path / "out", progress=False)


def test_bad_configs_are_rejected():
    with pytest.raises(ConfigError, match="unknown profile 'fast'; valid: smoke, cpu, paper"):
        TrainConfig.from_profile(TINY_TASK, "fast")
    with pytest.raises(ConfigError, match="outside"):
        TrainConfig.from_profile(TINY_TASK, "smoke", target_entropy=9.0)
    with pytest.raises(ConfigError, match="give one of --rho, --target-entropy, --targets, not --rho and --target-entropy"):
        TrainConfig.from_profile(TINY_TASK, "smoke", target_entropy=1.0, rho=0.5)
    with pytest.raises(ConfigError, match="unknown critic size '5M'"):
        TrainConfig.from_profile(TINY_TASK, "smoke", {"size": "5M"})


class TableTarget(TrainHooks):
    """A per-layer table from step 10 on, a bad one from step ``bad`` on."""

    def __init__(self, bad=None):
        self.bad = bad

    def target_entropy(self, step, progress):
        if self.bad is not None and step >= self.bad:
            return [[3.0, 3.0], [2.5, 9.0]]
        return 3.0 if step < 10 else [[3.0, 2.0], [1.5, 1.0]]


def test_hook_tables_reach_the_metrics_per_layer_and_group(tiny_data_dir, tmp_path):
    train(_config(tiny_data_dir, steps=20), tmp_path, TableTarget(), progress=False)
    rows = {r["step"]: r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "train"}
    assert [rows[5][f"target_entropy/l{k}_{g}"] for k in (0, 1) for g in ("value", "other")] == [3.0] * 4
    assert [rows[15][f"target_entropy/l{k}_{g}"] for k in (0, 1) for g in ("value", "other")] == [3.0, 2.0, 1.5, 1.0]
    assert rows[15]["target_entropy"] == pytest.approx(1.875)


def test_a_bad_hook_table_is_refused_naming_the_entry(tiny_data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"H̄ \(from a hook at step 12\) 9.0 at layer 1 \(other\) is outside \(0, "
                                          r"log n\]"):
        train(_config(tiny_data_dir, steps=20), tmp_path, TableTarget(bad=12), progress=False)
    assert json.loads((tmp_path / "config.json").read_text())  # the run's files are intact
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 10  # work before it kept
