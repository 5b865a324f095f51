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
