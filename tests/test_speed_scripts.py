"""The speed benchmarks' own instruments (benchmarks/speed): what they replay is what they recorded."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from benchmarks.speed.update_profile import MatmulChain, MatmulRecorder, matmul_flops, matmuls_made


def _small_step(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    hidden = torch.addmm(b, x, w.t())  # x and w read again below: shared operands
    scores = torch.bmm(hidden.view(2, 3, 4), hidden.view(2, 3, 4).transpose(1, 2))
    return torch.mm(x, w.t()) + scores.sum()


def test_the_matmul_chain_replays_the_recorded_calls_with_their_shared_operands():
    x, w, b = torch.randn(6, 5), torch.randn(4, 5), torch.randn(4)
    with MatmulRecorder() as rec:
        _small_step(x, w, b)
    assert [name for name, _ in rec.calls] == ["addmm", "bmm", "mm"]
    assert sum(matmul_flops(*c) for c in rec.calls) == 2 * 6 * 5 * 4 + 2 * 2 * 3 * 4 * 3 + 2 * 6 * 5 * 4

    chain = MatmulChain(rec.calls, rec.addresses)
    replayed = [(op.__name__, tuple((tuple(t.shape), t.stride()) for t in operands)) for op, operands in chain.steps]
    assert replayed == [(name, layout) for name, layout in rec.calls]
    # x and w of the addmm are the mm's x and w; the bmm's two operands are one buffer (hidden).
    addmm_ops, bmm_ops, mm_ops = (operands for _, operands in chain.steps)
    assert addmm_ops[1].data_ptr() == mm_ops[0].data_ptr() and addmm_ops[2].data_ptr() == mm_ops[1].data_ptr()
    assert bmm_ops[0].data_ptr() == bmm_ops[1].data_ptr()
    assert len(chain.buffers) == 4  # b, x, w, hidden
    assert chain.megabytes == 4 * (4 + 30 + 20 + 24) / 1e6
    chain()  # runs every call on its views


def test_the_chain_of_a_compiled_update_keeps_the_calls_it_made_and_refuses_ones_never_recorded():
    x, w, b = torch.randn(6, 5), torch.randn(4, 5), torch.randn(4)
    with MatmulRecorder() as rec:
        _small_step(x, w, b)
    made = matmuls_made(lambda: torch.mm(x, w.t()) + torch.addmm(b, x, w.t()))
    assert made == Counter({("mm", ((6, 5), (5, 4))): 1, ("addmm", ((6, 5), (5, 4))): 1})
    chain = MatmulChain.of_calls_made(rec.calls, rec.addresses, made)
    assert [op.__name__ for op, _ in chain.steps] == ["addmm", "mm"]  # the bmm was not made
    assert len(chain.buffers) == 3

    with pytest.raises(ValueError, match="bmm"):
        MatmulChain.of_calls_made(rec.calls, rec.addresses, made + Counter({("bmm", ((9, 1, 1), (9, 1, 1))): 1}))


def test_inductor_counts_a_pointwise_kernel_reading_its_input_and_writing_its_output_once():
    import torch._inductor.config as inductor_config

    from benchmarks.speed.update_limit import counting_kernel_bytes, parts_in_the_update
    from tql.model import gelu_tanh

    x, w = torch.randn(1000), torch.randn(8, 8)
    step = torch.compile(lambda x, w: (gelu_tanh(x), w @ w), dynamic=False)
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        with counting_kernel_bytes() as counted:
            step(x, w)  # one fused kernel (the GELU form) and one library matmul
        inside = parts_in_the_update(lambda: step(x, w), updates=2)
    assert counted["fused"] == 2 * 4 * x.numel()  # the matmul's bytes are not counted
    assert inside["calls"] == {"matmuls": 1, "fused kernels": 1}
    assert 0 < inside["ms"]["fused kernels"] + inside["ms"]["matmuls"] <= inside["ms"]["all"]


def test_the_logging_cost_script_parses_its_options_and_tables_fake_runs_without_training():
    from benchmarks.speed import logging_cost as lc

    args = lc.parse_args([])
    assert (args.task, args.profile, args.steps, args.rounds, args.eval_every, args.eval_episodes, args.threads,
            args.data_dir, args.warm_up) == ("cube-single-play-singletask-task1-v0", "cpu", 2000, 2, 2000, 2, 1,
                                             "data", True)
    assert args.variant_list == ["none", "tensorboard", "wandb", "tensorboard+wandb"]
    small = lc.parse_args(["--steps", "200", "--variants", "wandb,none", "--profile", "smoke", "--no-warm-up"])
    assert (small.eval_every, small.variant_list, small.profile, small.warm_up) == (200, ["wandb", "none"], "smoke",
                                                                                     False)
    for bad in (["--variants", "none,mlflow"], ["--variants", "none,none"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            lc.parse_args(bad)
    assert [lc.round_order(["a", "b", "c"], r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"],
                                                                       ["c", "a", "b"], ["a", "b", "c"]]

    # metrics.jsonl: the span between the first and the last train row, evaluations left out
    lines = ['{"step": 100, "type": "train", "time/wall_seconds": 10.0}', '{"type": "eval", "step": 100}',
             '{"step": 300, "type": "train", "time/wall_seconds": 20.0}', "",
             '{"step": 200, "type": "train", "time/wall_seconds": 16.0}']
    timing = lc.per_update_ms(lc.train_rows(lines))
    assert timing["ms_per_update"] == pytest.approx(50.0) and timing["rows"] == 3
    assert timing["interval_median_ms"] == pytest.approx(50.0)  # intervals of 60 and 40 ms
    assert lc.per_update_ms(lc.train_rows(lines[:1]))["ms_per_update"] is None

    def run(r, ms, seconds):
        return {"round": r, "ms_per_update": ms, "call_seconds": seconds, "summary_wall_seconds": seconds - 5}

    rows = lc.summarize({"none": [run(1, 44.0, 100.0), run(0, 40.0, 90.0)],
                         "wandb": [run(0, 42.0, 99.0), run(1, 46.2, 110.0)]})
    assert rows["none"]["ms_per_update"] == pytest.approx(42.0) and rows["none"]["rounds_ms"] == [40.0, 44.0]
    assert rows["wandb"]["vs_none"] == pytest.approx(44.1 / 42.0)
    assert rows["wandb"]["call_vs_none"] == pytest.approx(104.5 / 95.0)
    text = "\n".join(lc.table(rows))
    assert "| wandb | 44.10 | 1.050x | 42.00, 46.20 | 104.5 | 1.100x | 99.0, 110.0 | 99.5 |" in text
    no_baseline = lc.summarize({"wandb": [run(0, 42.0, 99.0)]})
    assert no_baseline["wandb"]["vs_none"] is None and "| – |" in "\n".join(lc.table(no_baseline))
