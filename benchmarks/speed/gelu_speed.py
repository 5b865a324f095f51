"""GELU (tanh approximation) compiled two ways, side by side: ``F.gelu(approximate='tanh')``
vs ``x * sigmoid(2u)`` (the same function; ``tql.model.gelu_tanh`` under torch.compile).

Forward and forward+backward on one tensor, eager and compiled, interleaved rounds, medians;
also the largest difference between the two forms.

    python -m benchmarks.speed.gelu_speed --threads 2 --json benchmarks/speed/results/gelu_speed.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks import common

SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def tanh_form(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def sigmoid_form(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(SCALE * (x + 0.044715 * x * x * x))


def timed(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5504, help="default: batch 128 x 43 tokens")
    p.add_argument("--cols", type=int, default=128, help="default: the 0.03M critic's MLP width")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=50)
    common.add_json_option(p)
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.cols, requires_grad=True)
    grad = torch.randn_like(x)
    variants = {}
    for name, fn in (("tanh", tanh_form), ("sigmoid", sigmoid_form)):
        for mode, f in (("eager", fn), ("compiled", torch.compile(fn))):
            variants[f"{name} {mode} fwd"] = lambda f=f: f(x.detach())
            variants[f"{name} {mode} fwd+bwd"] = lambda f=f: f(x).backward(grad)
    for fn in variants.values():
        fn()
    samples = {k: [] for k in variants}
    for r in range(args.rounds):
        for key in (variants if r % 2 == 0 else reversed(list(variants))):
            samples[key].append(timed(variants[key], args.calls))
    with torch.no_grad():
        diff = float((tanh_form(x) - sigmoid_form(x)).abs().max())
    rows = {k: 1e6 * statistics.median(v) for k, v in samples.items()}
    print(f"[{args.rows} x {args.cols}] float32, {args.threads} threads, {args.rounds} rounds x {args.calls} calls")
    for key, us in rows.items():
        print(f"{key:>28}: {us:9.1f} us")
    for mode in ("compiled fwd", "compiled fwd+bwd", "eager fwd", "eager fwd+bwd"):
        ratio = statistics.median(t / s for t, s in zip(samples[f"tanh {mode}"], samples[f"sigmoid {mode}"]))
        print(f"tanh / sigmoid, {mode}: {ratio:.2f}x")
    print(f"largest |difference| between the forms: {diff:.2e}")
    result = {"us": rows, "max_abs_difference": diff}
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
