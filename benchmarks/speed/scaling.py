"""Update time and peak memory of the full TQL update per critic preset (0.4M .. 26M).

Each preset runs in a fresh subprocess (this module with ``--child``) so that its peak memory
is its own: on CPU the process's peak resident set (``resource.getrusage(RUSAGE_SELF)
.ru_maxrss``; ``tracemalloc`` cannot see torch's allocations), reported in total and as the
growth over the same process right before the agent was built (imports, batch); on CUDA
``torch.cuda.max_memory_allocated``. The first (warm-up) update runs under
``torch.utils.flop_counter.FlopCounterMode`` to count the update's matmul FLOPs; then updates
are timed until ``--repeats`` are done or ``--budget-s`` seconds are spent (at least one), and
the median is reported. Presets are separate workloads in separate processes, so the times
are not interleaved: on a shared machine read them as orders of magnitude, and compare
ratios within one run only.

    python -m benchmarks.speed.scaling --threads 2 --repeats 3 --budget-s 40 \\
        --json benchmarks/speed/results/scaling.json
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from tql.agent import AgentConfig, TQLAgent
from tql.model import PRESETS

DEFAULT_PRESETS = "0.4M,1.6M,7M,26M"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def child(args: argparse.Namespace) -> dict:
    """One preset in this process; prints one JSON line."""
    torch.set_num_threads(args.threads)
    device = args.device
    g = torch.Generator().manual_seed(1)
    b, o, a = args.batch_size, args.obs_dim, args.act_dim
    batch = {
        "observations": torch.randn(b, o, generator=g), "actions": torch.rand(b, a, generator=g) * 2 - 1,
        "next_observations": torch.randn(b, o, generator=g), "rewards": -torch.rand(b, generator=g).round(),
        "masks": torch.ones(b),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    base_rss = _maxrss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    config = AgentConfig(critic=args.critic, size=args.child, compile=args.compile,
                         precision="bf16" if args.bf16 else "fp32")
    agent = TQLAgent(o, a, config, device)
    target = torch.tensor(0.5 * math.log(1 + o + a), device=device)

    def step():
        return agent.update(batch, target)  # in the agent's precision (bf16 autocast with --bf16)

    t0 = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    times: list[float] = []
    spent = 0.0
    while len(times) < args.repeats and (not times or spent < args.budget_s):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    sec = statistics.median(times)
    row = {
        "preset": args.child, "critic": args.critic,
        "critic_params": sum(p.numel() for p in agent.critic.parameters()),
        "agent_params": sum(p.numel() for p in agent.parameters()),
        "ms_per_update": 1e3 * sec, "updates_per_s": 1 / sec, "ms_samples": [1e3 * t for t in times],
        "timed_updates": len(times), "warmup_s": warmup_s,
        "gflop_per_update": counter.get_total_flops() / 1e9,
        "gflop_per_s": counter.get_total_flops() / sec / 1e9,
    }
    if device.startswith("cuda"):
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["mem_kind"] = "torch.cuda.max_memory_allocated"
    else:
        peak = _maxrss_mb()
        row.update(peak_mem_mb=peak - base_rss, peak_rss_mb=peak, base_rss_mb=base_rss,
                   mem_kind="ru_maxrss growth over the process before the agent was built")
    common.print_child_result(row)
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=DEFAULT_PRESETS)
    p.add_argument("--critic", default="tql", choices=("tql", "mlp"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--obs-dim", type=int, default=37, help="cube-double: 37 (n = 43)")
    p.add_argument("--act-dim", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed updates per preset (at most)")
    p.add_argument("--budget-s", type=float, default=40.0, help="stop timing a preset after this (>= 1 update)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="AgentConfig(precision='bf16'): bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="AgentConfig(compile=True)")
    common.add_json_option(p, "the numbers")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    presets = [s for s in args.presets.split(",") if s]
    unknown = [s for s in presets if s not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {unknown}; valid: {', '.join(PRESETS)}")
    header = common.print_header(__file__, argv)

    passthrough = ["--critic", args.critic, "--batch-size", str(args.batch_size), "--obs-dim", str(args.obs_dim),
                   "--act-dim", str(args.act_dim), "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--budget-s", str(args.budget_s), "--device", args.device]
    passthrough += ["--bf16"] * args.bf16 + ["--compile"] * args.compile
    rows = []
    for preset in presets:
        t0 = time.perf_counter()
        try:
            row = common.run_child(__file__, [preset, *passthrough], {**os.environ, "PYTHONWARNINGS": "ignore"})
        except common.ChildFailed as exc:
            print(f"{preset}: {exc}", file=sys.stderr)
            rows.append({"preset": preset, "error": str(exc)[-2000:]})
            continue
        row["process_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {preset}: {row['ms_per_update']:.0f} ms/update, peak {row['peak_mem_mb']:.0f} MB", flush=True)

    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["preset"] == "0.4M"), ok[0] if ok else None)
    for r in ok:
        r["time_vs_0.4M"] = r["ms_per_update"] / base["ms_per_update"]
        r["flops_vs_0.4M"] = r["gflop_per_update"] / base["gflop_per_update"]
        r["mem_vs_0.4M"] = r["peak_mem_mb"] / base["peak_mem_mb"] if base["peak_mem_mb"] > 0 else None
    result = {
        "device": args.device, "threads": args.threads, "batch_size": args.batch_size,
        "n_tokens": 1 + args.obs_dim + args.act_dim, "bf16": args.bf16, "compile": args.compile,
        "load_avg": [round(x, 2) for x in os.getloadavg()], "rows": rows,
    }
    print(f"device={args.device} threads={args.threads} batch={args.batch_size} n={result['n_tokens']} "
          f"critic={args.critic} bf16={args.bf16} load_avg={result['load_avg']}")
    print(f"{'preset':>6} {'critic':>11} {'agent':>11} {'ms/upd':>9} {'upd/s':>7} {'timed':>5} {'GFLOP/upd':>9} "
          f"{'GFLOP/s':>8} {'peak MB':>8} {'t/t0.4M':>7} {'F/F0.4M':>7} {'M/M0.4M':>7}")
    for r in ok:
        mem_ratio = f"{r['mem_vs_0.4M']:.1f}" if r["mem_vs_0.4M"] else "-"
        print(f"{r['preset']:>6} {r['critic_params']:>11,} {r['agent_params']:>11,} {r['ms_per_update']:>9.0f} "
              f"{r['updates_per_s']:>7.3f} {r['timed_updates']:>5} {r['gflop_per_update']:>9.1f} "
              f"{r['gflop_per_s']:>8.1f} {r['peak_mem_mb']:>8.0f} {r['time_vs_0.4M']:>7.1f} "
              f"{r['flops_vs_0.4M']:>7.1f} {mem_ratio:>7}")
    if ok:
        print(f"peak memory: {ok[0]['mem_kind']}")
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
