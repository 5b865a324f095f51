"""How close the compiled `cpu`-profile update sits to the limits of its parts on this machine.

A compiled update is its matmuls, inductor's fused kernels (everything elementwise: GELU,
layer norms, softmax and entropies, residual adds, the losses, their backward) and the rest
(the optimiser, dynamo's guards, autograd, addmm's bias copies, Python). Each part is set
against its own limit:

- **Matmuls**: their self time inside the update (``torch.profiler``, mm / addmm / bmm /
  baddbmm), against the same calls replayed one after another with nothing between them
  (``update_profile.MatmulChain``) and each alone with its operands in cache
  (``update_profile.matmul_floor_ms``).
- **Fused kernels**: their self time inside the update (inductor's kernel profiling) and the
  bytes inductor counts them reading and writing (its ``inductor_metrics``; a cold compile,
  because only code generation counts them), as GB/s. They are set against reference
  elementwise kernels at the update's largest activation ([5504 x 128] float32) on this
  machine: the GELU form the critic compiles to, and a plain add. Each is run on one buffer
  (in cache) and on 40 buffers (from memory). If the GELU form is as fast in cache as from
  memory, it is bound by its arithmetic, not by memory traffic. Fusing such work into a
  matmul's epilogue would then save the traffic but not the time.
- **The rest**: the profiler's total minus the two. The profiler adds its own cost per event
  (about 1,600 events per update), so the rest is shown as the profiler measured it, beside
  the update timed without it.

``compiled update / matmuls in the update`` is the most that any change keeping the matmuls
(float32, these shapes) could gain: the update with every other part free.

    python -m benchmarks.speed.update_limit --threads 2 --repeats 15 --inner 5 \\
        --json benchmarks/speed/results/update_limit.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import time
import warnings
from collections.abc import Iterator

import torch
import torch._inductor.config as inductor_config
from torch._inductor import metrics
from torch._inductor.scheduler import ExternKernelSchedulerNode, NopKernelSchedulerNode

from benchmarks import common
from benchmarks.speed.update_profile import (MATMULS, Components, MatmulChain, MatmulRecorder, matmul_floor_ms,
                                             matmuls_made, profile_agent, random_sampler, timed)
from tql.model import gelu_tanh

ACTIVATION = 5504 * 128  # the critic's MLP hidden layer at batch 128, n = 43: the largest activation
COLD_BUFFERS = 40


def elementwise_rates(repeats: int) -> list[dict]:
    """GB/s (bytes read + written) of compiled reference kernels at the largest activation's
    size, on one buffer (in cache) and on ``COLD_BUFFERS`` buffers (from memory)."""
    rows = []
    for name, fn in (("GELU form", gelu_tanh), ("add", lambda x: x + 1.0)):
        kernel = torch.compile(fn, dynamic=False)
        for where, count in (("in cache", 1), ("from memory", COLD_BUFFERS)):
            buffers = [torch.randn(ACTIVATION) for _ in range(count)]
            for x in buffers[:3]:
                kernel(x)
            calls = max(count, 40)
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                for i in range(calls):
                    kernel(buffers[i % count])
                seconds.append((time.perf_counter() - start) / calls)
            per_call = statistics.median(seconds)
            rows.append({"kernel": name, "where": where, "ms_per_call": 1e3 * per_call,
                         "gb_per_s": 2 * 4 * ACTIVATION / per_call / 1e9})
    return rows


@contextlib.contextmanager
def counting_kernel_bytes() -> Iterator[dict]:
    """Inside: what inductor compiles counts its kernels' bytes (``counted["fused"]`` after the
    block). Inductor counts them while it generates code, when its metrics log is on: so the
    block compiles afresh (no cached graph) with that log on but not printed."""
    from torch._inductor.compile_fx import inductor_metrics_log as log

    counted: dict = {}
    level, propagate, quiet = log.level, log.propagate, logging.NullHandler()
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(quiet)
    metrics.reset()
    try:
        with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what the block asks for
            yield counted
        counted["fused"] = fused_kernel_bytes()
    finally:
        log.setLevel(level)
        log.propagate = propagate
        log.removeHandler(quiet)


def fused_kernel_bytes() -> int:
    """Bytes inductor counted its fused kernels reading and writing (its count is of 4-byte
    elements), over the graphs compiled since the last ``metrics.reset()``; matmuls and other
    library calls are left out."""
    return sum(4 * elems for node, elems in metrics.nodes_num_elem
               if not isinstance(node, (ExternKernelSchedulerNode, NopKernelSchedulerNode)))


def parts_in_the_update(update, updates: int) -> dict:
    """Self time per update of matmuls, fused kernels, copies and everything under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            update()
    sums = {"matmuls": 0.0, "fused kernels": 0.0, "copies": 0.0, "all": 0.0}
    calls = {"matmuls": 0, "fused kernels": 0}
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / updates
        sums["all"] += ms
        if event.key.removeprefix("aten::") in MATMULS:
            sums["matmuls"] += ms
            calls["matmuls"] += event.count // updates
        elif event.key.startswith("graph_"):  # inductor's kernels, named (cpp.enable_kernel_profile)
            sums["fused kernels"] += ms
            calls["fused kernels"] += event.count // updates
        elif event.key == "aten::copy_":
            sums["copies"] += ms
    return {"ms": sums, "calls": calls}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--obs-dim", type=int, default=37, help="cube-double: 37 (n = 43 tokens)")
    p.add_argument("--act-dim", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds (medians)")
    p.add_argument("--inner", type=int, default=5, help="updates per timed sample")
    p.add_argument("--profile-updates", type=int, default=20)
    common.add_json_option(p)
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True
    inductor_config.cpp.descriptive_names = "original_aten"

    eager, transitions = profile_agent(args.profile, args.obs_dim, args.act_dim, False)
    sampler = random_sampler(transitions, args.obs_dim, args.act_dim)
    target = Components(eager, sampler, False).target
    with MatmulRecorder() as rec:
        eager.update(sampler.sample(eager.config.batch_size), target)
    agent, _ = profile_agent(args.profile, args.obs_dim, args.act_dim, True)
    update = lambda: agent.update(sampler.sample(agent.config.batch_size), target)  # noqa: E731
    with counting_kernel_bytes() as counted:
        update()  # compiles
    kernel_bytes = counted["fused"]
    chain = MatmulChain.of_calls_made(rec.calls, rec.addresses, matmuls_made(update))
    for fn in (update, chain):
        for _ in range(3):
            fn()
    fns = {"update": update, "chain": chain}
    samples: dict[str, list[float]] = {"update": [], "chain": [], "floor": []}
    for r in range(args.repeats):
        for name in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            samples[name].append(1e3 * timed(fns[name], args.inner))
        samples["floor"].append(matmul_floor_ms(chain.calls))
    inside = parts_in_the_update(update, args.profile_updates)
    rates = elementwise_rates(args.repeats)
    ms = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "profile": args.profile, "threads": args.threads,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "update_ms": ms["update"], "chain_ms": ms["chain"], "floor_ms": ms["floor"],
        "update_over_chain": statistics.median(u / c for u, c in zip(samples["update"], samples["chain"])),
        "inside": inside, "fused_kernel_mb": kernel_bytes / 1e6,
        "fused_kernel_gb_per_s": kernel_bytes / (inside["ms"]["fused kernels"] / 1e3) / 1e9,
        "update_over_matmuls_inside": ms["update"] / inside["ms"]["matmuls"],
        "elementwise_rates": rates, "samples": samples,
    }
    print_result(result)
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


def print_result(r: dict) -> None:
    inside, ms = r["inside"], r["inside"]["ms"]
    print(f"profile={r['profile']} threads={r['threads']} load_avg={r['load_avg']}")
    print(f"compiled update, timed: {r['update_ms']:.2f} ms (under the profiler: {ms['all']:.2f} ms)")
    print(f"  matmuls in the update      {ms['matmuls']:6.2f} ms ({inside['calls']['matmuls']} calls); the same calls "
          f"in a chain {r['chain_ms']:.2f} ms, each alone in cache {r['floor_ms']:.2f} ms")
    print(f"  fused kernels in the update {ms['fused kernels']:5.2f} ms ({inside['calls']['fused kernels']} calls), "
          f"{r['fused_kernel_mb']:.0f} MB read and written: {r['fused_kernel_gb_per_s']:.1f} GB/s")
    print(f"  copies (aten::copy_)       {ms['copies']:6.2f} ms")
    rest = ms["all"] - ms["matmuls"] - ms["fused kernels"] - ms["copies"]
    print(f"  the rest, under the profiler {rest:4.2f} ms (optimiser, dynamo, autograd, Python, the profiler's own)")
    print("reference elementwise kernels, compiled, [5504 x 128] float32 (bytes read + written):")
    for row in r["elementwise_rates"]:
        print(f"  {row['kernel']:<10} {row['where']:<12} {row['ms_per_call']:.3f} ms  {row['gb_per_s']:5.1f} GB/s")
    print(f"compiled update / matmuls in the update: {r['update_over_matmuls_inside']:.2f}x (the update with every "
          f"other part free); / the chain: {r['update_over_chain']:.2f}x (median of rounds); "
          f"1.8x the update needs {r['update_ms'] / 1.8:.2f} ms")


if __name__ == "__main__":
    main()
