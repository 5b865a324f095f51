"""Batched runs (``tql.batched.batch_runs``): K runs of one task as one population give what the K
runs give alone; a stopped or diverged member leaves the others untouched; a batch resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import TINY_TASK
from tql.batched.batch_runs import BatchMember, train_batch
from tql.errors import ConfigError
from tql.io import read_jsonl
from tql.trainer import TrainConfig, TrainHooks, train

RHOS = (0.3, 0.6, 0.9)
SEEDS = (0, 1, 2)
LOSSES = ("critic/td_loss", "critic/loss", "actor/bc_flow_loss", "actor/distill_loss", "actor/q_loss",
          "entropy/l0_value", "entropy/l1_other", "alpha/l0_value", "val/td_loss")


def _config(data_dir, seed, rho, **overrides):
    values = dict(steps=30, eval_every=15, eval_episodes=1, eval_max_steps=8, log_every=5, checkpoint_every=10,
                  data_dir=str(data_dir), seed=seed, rho=rho)
    values.update(overrides)
    return TrainConfig.from_profile(TINY_TASK, "smoke", {"batch_size": 16}, **values)


class Recorder(TrainHooks):
    """Remembers what the loop asked and told; H̄ rises with the step (a schedule), and the
    run may be stopped at its first evaluation (a pruned trial)."""

    def __init__(self, rho_step: float = 0.0, stop: bool = False):
        self.rho_step, self.stop, self.calls = rho_step, stop, []

    def target_entropy(self, step, progress):
        return None if not self.rho_step else 1.0 + self.rho_step * step

    def on_log(self, step, metrics):
        self.calls.append(("log", step, metrics["critic/td_loss"]))

    def on_eval(self, step, result):
        self.calls.append(("eval", step, result.success_rate))
        return self.stop


def _rows(out_dir, kind="train"):
    return [r for r in read_jsonl(out_dir / "metrics.jsonl") if r["type"] == kind]


def _assert_same_run(batched_dir, alone_dir):
    got, want = _rows(batched_dir), _rows(alone_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for key in LOSSES:
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), (g["step"], key)  # reassociation only
    assert [(r["step"], r["success_rate"], r["episodes"]) for r in _rows(batched_dir, "eval")] == \
        [(r["step"], r["success_rate"], r["episodes"]) for r in _rows(alone_dir, "eval")]


def test_a_batch_computes_what_its_members_compute_alone(tiny_data_dir, tmp_path):
    """Three members with their own seeds, rho and an H̄ schedule (member 2): losses,
    held-out TD errors, evaluations, hook calls and summaries as three single runs."""
    hooks = [Recorder(), Recorder(), Recorder(rho_step=0.02)]
    members = [BatchMember(_config(tiny_data_dir, s, r), tmp_path / f"b{s}", h) for s, r, h in zip(SEEDS, RHOS, hooks)]
    outcomes = train_batch(members, tmp_path / "batch", progress=False)
    for seed, rho, hook, outcome in zip(SEEDS, RHOS, hooks, outcomes):
        alone_hooks = Recorder(rho_step=hook.rho_step)
        alone = train(_config(tiny_data_dir, seed, rho), tmp_path / f"a{seed}", alone_hooks, progress=False)
        _assert_same_run(tmp_path / f"b{seed}", tmp_path / f"a{seed}")
        assert [c[:2] for c in hook.calls] == [c[:2] for c in alone_hooks.calls]
        assert outcome.result.steps == alone.steps == 30 and not outcome.stopped and outcome.diverged is None
        summary = json.loads((tmp_path / f"b{seed}" / "summary.json").read_text())
        assert summary["final_success"] == alone.final_success and summary["evals"] == alone.evals
        saved = json.loads((tmp_path / f"b{seed}" / "config.json").read_text())
        assert saved["train"]["rho"] == rho and saved["batch"]["members"] == 3
    assert (tmp_path / "batch" / "checkpoint.pt").exists()


def test_a_stopped_member_is_frozen_and_the_others_are_untouched(tiny_data_dir, tmp_path):
    hooks = [Recorder(), Recorder(stop=True), Recorder()]
    members = [BatchMember(_config(tiny_data_dir, s, r), tmp_path / f"b{s}", h) for s, r, h in zip(SEEDS, RHOS, hooks)]
    outcomes = train_batch(members, tmp_path / "batch", progress=False)
    assert outcomes[1].stopped and outcomes[1].result.stopped_early and outcomes[1].result.steps == 15
    assert [c for c in hooks[1].calls if c[0] == "eval"] == [("eval", 15, hooks[1].calls[-1][2])]
    assert max(r["step"] for r in _rows(tmp_path / "b1")) == 15  # nothing logged after it stopped
    train(_config(tiny_data_dir, 2, 0.9), tmp_path / "a2", progress=False)
    _assert_same_run(tmp_path / "b2", tmp_path / "a2")
    assert outcomes[2].result.steps == 30


def test_a_diverged_member_fails_alone(tiny_data_dir, tmp_path, monkeypatch):
    from tql.batched.batch_runs import BatchTrainer

    members = [BatchMember(_config(tiny_data_dir, s, r), tmp_path / f"b{s}") for s, r in zip(SEEDS, RHOS)]
    trainer = BatchTrainer(members, tmp_path / "batch", progress=False)
    with torch.no_grad():
        trainer.population.state["critic.q_heads.w_out"][1] = math.nan  # member 1 only
    outcomes = trainer.run()
    assert outcomes[1].result is None and outcomes[1].diverged.step == 5
    assert "diverged at step 5" in str(outcomes[1].diverged)
    assert not (tmp_path / "b1" / "summary.json").exists()
    assert [o.result.steps for o in (outcomes[0], outcomes[2])] == [30, 30]
    assert all(math.isfinite(r["critic/td_loss"]) for r in _rows(tmp_path / "b2"))


def test_an_interrupted_batch_resumes_like_an_uninterrupted_one(tiny_data_dir, tmp_path):
    class Crash(Recorder):
        def on_log(self, step, metrics):
            super().on_log(step, metrics)
            if step == 25:  # after the checkpoint at step 20
                raise KeyboardInterrupt

    def members(folder, hooks):
        return [BatchMember(_config(tiny_data_dir, s, r), tmp_path / folder / f"m{s}", h)
                for s, r, h in zip(SEEDS[:2], RHOS[:2], hooks)]

    train_batch(members("whole", [Recorder(), Recorder()]), tmp_path / "whole" / "batch", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_batch(members("cut", [Crash(), Recorder()]), tmp_path / "cut" / "batch", progress=False)
    outcomes = train_batch(members("cut", [Recorder(), Recorder()]), tmp_path / "cut" / "batch", progress=False)
    assert [o.result.steps for o in outcomes] == [30, 30]
    for seed in SEEDS[:2]:
        cut, whole = _rows(tmp_path / "cut" / f"m{seed}"), _rows(tmp_path / "whole" / f"m{seed}")
        assert [r["step"] for r in cut] == [r["step"] for r in whole]  # the rows after step 20 were redone once
        for c, w in zip(cut, whole):
            assert c["critic/td_loss"] == pytest.approx(w["critic/td_loss"], rel=1e-6)


def test_a_member_that_ended_elsewhere_rides_along_untouched(tiny_data_dir, tmp_path):
    """Member 1 stopped at its evaluation at step 20, after the last checkpoint (10), when the
    batch was cut; resumed as ``frozen`` it keeps the rows it wrote (not cut back to step 10
    and run again) and writes nothing more, while the others finish as an uncut batch."""
    class Stop(Recorder):
        def on_eval(self, step, result):
            super().on_eval(step, result)
            return step == 20

    class Crash(Recorder):
        def on_eval(self, step, result):
            if step == 20:  # after member 1 stopped, before the checkpoint at step 20
                raise KeyboardInterrupt
            return super().on_eval(step, result)

    def members(folder, hooks, frozen=False):
        return [BatchMember(_config(tiny_data_dir, s, r, eval_every=5), tmp_path / folder / f"m{s}", h,
                            frozen=frozen and s == 1) for s, r, h in zip(SEEDS, RHOS, hooks)]

    train_batch(members("whole", [Recorder(), Stop(), Recorder()]), tmp_path / "whole" / "batch", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_batch(members("cut", [Recorder(), Stop(), Crash()]), tmp_path / "cut" / "batch", progress=False)
    written = read_jsonl(tmp_path / "cut" / "m1" / "metrics.jsonl")
    assert max(r["step"] for r in written) == 20 and [r["step"] for r in written if r["type"] == "eval"][-1] == 20
    outcomes = train_batch(members("cut", [Recorder(), Recorder(), Recorder()], frozen=True),
                           tmp_path / "cut" / "batch", progress=False)
    assert read_jsonl(tmp_path / "cut" / "m1" / "metrics.jsonl") == written
    assert outcomes[1].result is None and outcomes[1].stopped and outcomes[1].diverged is None
    assert not (tmp_path / "cut" / "m1" / "summary.json").exists()
    assert [outcomes[i].result.steps for i in (0, 2)] == [30, 30]
    for seed in (0, 2):
        cut, whole = _rows(tmp_path / "cut" / f"m{seed}"), _rows(tmp_path / "whole" / f"m{seed}")
        assert [r["step"] for r in cut] == [r["step"] for r in whole]
        for c, w in zip(cut, whole):
            assert c["critic/td_loss"] == pytest.approx(w["critic/td_loss"], rel=1e-6)


def test_members_may_differ_only_in_seed_and_targets(tiny_data_dir, tmp_path):
    base = BatchMember(_config(tiny_data_dir, 0, 0.5), tmp_path / "m0")
    other = BatchMember(_config(tiny_data_dir, 1, 0.5, eval_every=10), tmp_path / "m1")
    with pytest.raises(ConfigError, match="member 1 differs from member 0 in eval_every; members may differ only in "
                                          "seed, rho, target_entropy, targets"):
        train_batch([base, other], tmp_path / "batch", progress=False)
    with pytest.raises(ConfigError, match="distinct out_dirs"):
        train_batch([base, BatchMember(_config(tiny_data_dir, 1, 0.5), tmp_path / "m0")], tmp_path / "b", progress=False)
    train_batch([base], tmp_path / "batch", progress=False)
    with pytest.raises(ConfigError, match="holds a batch of other members"):
        train_batch([BatchMember(_config(tiny_data_dir, 5, 0.5), tmp_path / "m0")], tmp_path / "batch", progress=False)


def test_members_evaluated_together_in_processes_record_the_in_process_results(tiny_data_dir, tmp_path,
                                                                             monkeypatch):
    """All members' episodes are asked at once, each with its own actor, seed and noise seed
    (seed + step); dealt over two evaluation processes (3 members x 3 episodes: shares cross
    members) they record what evaluating here records."""
    import numpy as np

    from tql.batched.batch_runs import BatchTrainer
    from tql.eval_workers import ActorPolicy, PolicyEvaluator

    asked = []
    run_many = PolicyEvaluator.run_many
    monkeypatch.setattr(PolicyEvaluator, "run_many", lambda self, requests: asked.append(requests) or
                        run_many(self, requests))

    def members(folder, eval_workers):
        return [BatchMember(_config(tiny_data_dir, s, r, eval_episodes=3, eval_workers=eval_workers),
                            tmp_path / folder / f"m{s}") for s, r in zip(SEEDS, RHOS)]

    def batch(folder, eval_workers):
        train_batch(members(folder, eval_workers), tmp_path / folder / "batch", progress=False)
        return [_rows(tmp_path / folder / f"m{s}", "eval") for s in SEEDS]

    here, spread = batch("here", 1), batch("spread", 2)
    assert spread == here and [len(rows) for rows in here] == [2, 2, 2]
    assert len(asked) == 4 and all(len(requests) == 3 for requests in asked)  # one call per evaluation
    trainer = BatchTrainer(members("spread", 2), tmp_path / "spread" / "batch", progress=False)
    trainer._load_checkpoint()  # the final step's networks
    obs = np.random.default_rng(0).normal(size=(4, trainer.task.obs_dim)).astype(np.float32)
    z = np.random.default_rng(1).normal(size=(4, trainer.task.act_dim))
    for i, (request, seed) in enumerate(zip(asked[-1], SEEDS)):
        assert (request.seed, request.noise_seed, request.episodes) == (seed, seed + 30, 3)
        np.testing.assert_array_equal(request.policy(obs, z), ActorPolicy(trainer._agent(i).actor)(obs, z))
