"""What compiling a profile's loss costs a CPU run and what it buys: the first compiled
updates' extra seconds (inductor's cache cold, then warm) and the update rate compiled vs
eager, on 1 thread and on all cores, each measurement in a fresh process.

A run pays the compilation once per process (`tql.agent.compile_pays`: runs of >= 2,000
updates on a CPU compile), so what matters for sizing an experiment
(`autotune.experiment.probe`) is

    compile seconds = time of the first K compiled updates - K x a steady compiled update
    speedup         = eager ms per update / compiled ms per update

Processes alternate eager and compiled, round by round, so drift in the machine's load hits
both alike. The cold measurement uses an empty inductor cache (a fresh TORCHINDUCTOR_CACHE_DIR),
the warm ones the cache it filled (what every run after a machine's first finds).

    python -m benchmarks.speed.compile_cost --profile cpu --threads 1,2 --rounds 3 \\
        --json benchmarks/speed/results/compile_cost.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common

FIRST = 3  # updates timed from the start: the compilation happens in the first one or two


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task1-v0")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    p.add_argument("--updates", type=int, default=40, help="steady updates timed per process")
    p.add_argument("--rounds", type=int, default=3)
    common.add_json_option(p)
    p.add_argument("--child", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.updates < 1:
        p.error(f"--rounds {args.rounds} and --updates {args.updates} must be >= 1")
    return args


def child(args: argparse.Namespace) -> dict:
    """In a fresh process: seconds of the first FIRST updates and ms of a steady update."""
    import torch

    from autotune.experiment.probe import random_batch
    from tql.agent import TQLAgent
    from tql.tasks import get_task
    from tql.trainer import TrainConfig

    torch.set_num_threads(int(args.threads))
    task = get_task(args.task)
    config = TrainConfig.from_profile(task.name, args.profile, {"compile": args.child == "compiled"}).agent
    torch.manual_seed(0)
    agent = TQLAgent(task.obs_dim, task.act_dim, config, torch.device("cpu"), total_steps=100_000)
    batch = random_batch(config.batch_size, task, torch.device("cpu"))
    start = time.perf_counter()
    for _ in range(FIRST):
        agent.update(batch, 1.0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.updates):
        agent.update(batch, 1.0)
    steady_ms = 1000 * (time.perf_counter() - start) / args.updates
    return {"first_seconds": first, "steady_ms": steady_ms, "compiled": agent.compiled}


def measure(args: argparse.Namespace, mode: str, threads: int, cache: Path) -> dict:
    child_args = [mode, "--threads", str(threads), "--task", args.task, "--profile", args.profile,
                  "--updates", str(args.updates)]
    try:
        result = common.run_child(__file__, child_args, {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)})
    except common.ChildFailed as exc:
        raise SystemExit(str(exc)) from None
    if result["compiled"] != (mode == "compiled"):
        raise SystemExit(f"the {mode} agent ran compiled={result['compiled']}")
    return result


def compile_seconds(run: dict) -> float:
    return run["first_seconds"] - FIRST * run["steady_ms"] / 1000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return common.print_child_result(child(args))
    header = common.print_header(__file__, argv)
    threads = [int(t) for t in args.threads.split(",")]
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        cold = measure(args, "compiled", threads[0], Path(cache))
        print(f"cold cache, {threads[0]} thread(s): compile {compile_seconds(cold):.1f} s, "
              f"then {cold['steady_ms']:.1f} ms per update", flush=True)
        for t in threads:
            runs: dict[str, list[dict]] = {"eager": [], "compiled": []}
            for r in range(args.rounds):
                for mode in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
                    runs[mode].append(measure(args, mode, t, Path(cache)))
                    print(f"{t} thread(s), round {r}, {mode}: {runs[mode][-1]['steady_ms']:.1f} ms per update, "
                          f"first {FIRST}: {runs[mode][-1]['first_seconds']:.1f} s", flush=True)
            eager = statistics.median(run["steady_ms"] for run in runs["eager"])
            compiled = statistics.median(run["steady_ms"] for run in runs["compiled"])
            rows[t] = {"eager_ms": eager, "compiled_ms": compiled, "speedup": eager / compiled,
                       "warm_compile_seconds": statistics.median(compile_seconds(run) for run in runs["compiled"]),
                       "runs": runs}
    print(f"task {args.task}, profile {args.profile}, {args.updates} steady updates per process, median of "
          f"{args.rounds} round(s); cold-cache compile ({threads[0]} thread(s)): {compile_seconds(cold):.1f} s")
    print("| threads | eager ms/update | compiled ms/update | speedup | compile s (warm cache) |")
    print("|---|---|---|---|---|")
    for t, row in rows.items():
        print(f"| {t} | {row['eager_ms']:.1f} | {row['compiled_ms']:.1f} | {row['speedup']:.2f}x | "
              f"{row['warm_compile_seconds']:.1f} |")
    common.write_json(args.json, {"args": vars(args), "cold": cold, "cold_compile_seconds": compile_seconds(cold),
                                  "threads": rows}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
