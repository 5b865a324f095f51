"""K members of one task on a CPU: one after another on every core, or one process per core?

On 2 cores a compiled population of K members costs what K compiled runs one after another
do (update_speed.py --members: 1.02x): batching members merges their matmuls but not their
elementwise traffic. The other way to share the cores is to split the members: P processes
of one thread each, each training K / P members as one compiled population, all at once.
This script measures that split side by side with K agents one after another on all the
threads (what K runs of a sweep cost one by one), in interleaved rounds: per round, N updates
of every member in each setting; the one-by-one setting runs while the workers wait, and the
other way round. Reported: ms per update of all K members (median) and the ratio.

    python benchmarks/speed/member_split.py --members 4 --processes 2 --rounds 9 \\
        --json benchmarks/speed/results/member_split.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--processes", type=int, default=2, help="worker processes of the split (one thread each)")
    p.add_argument("--threads", type=int, default=2, help="threads of the one-by-one setting")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=5, help="updates of every member per timed sample")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.members % args.processes:
        p.error(f"--members {args.members} must split evenly over --processes {args.processes}")
    return args


def setting(task: str, profile: str):
    """The profile's compiled agent config, the task's dims, one batch and H̄ table."""
    from benchmarks.speed.chunked_update import random_batch
    from tql.trainer import TrainConfig

    config = TrainConfig.from_profile(task, profile, {"compile": True})
    spec = config.spec
    return config, spec, random_batch(spec, config.agent.batch_size), torch.full((2, 2), 0.9 * spec.max_entropy)


def worker(conn, task: str, profile: str, members: int, first_seed: int) -> None:
    """One process, one thread: a compiled population of ``members``; runs N updates per "go"."""
    from tql.batched.population import Population

    torch.set_num_threads(1)
    config, spec, batch, target = setting(task, profile)
    population = Population(spec.obs_dim, spec.act_dim, config.agent, members, "cpu",
                            seeds=list(range(first_seed, first_seed + members)), total_steps=config.steps)
    stacked = {k: v.expand(members, *v.shape).contiguous() for k, v in batch.items()}
    population.update(stacked, target)  # compiles
    conn.send("ready")
    while (updates := conn.recv()) is not None:
        for _ in range(updates):
            population.update(stacked, target)
        conn.send("done")


def main(argv: list[str] | None = None) -> int:
    from tql.agent import TQLAgent

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config, spec, batch, target = setting(args.task, args.profile)
    agents = []
    for seed in range(args.members):
        torch.manual_seed(seed)
        agents.append(TQLAgent(spec.obs_dim, spec.act_dim, config.agent, "cpu", total_steps=config.steps))
    for agent in agents:
        agent.update(batch, target)  # compiles (once: the same shapes)
    per = args.members // args.processes
    context = get_context("spawn")
    pipes, workers = [], []
    for i in range(args.processes):
        ours, theirs = context.Pipe()
        process = context.Process(target=worker, args=(theirs, args.task, args.profile, per, i * per), daemon=True)
        process.start()
        pipes.append(ours)
        workers.append(process)
    assert all(pipe.recv() == "ready" for pipe in pipes)
    samples = {"one by one": [], "split": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.inner):
            for agent in agents:
                agent.update(batch, target)
        samples["one by one"].append(1000 * (time.perf_counter() - start) / args.inner)
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send(args.inner)
        assert all(pipe.recv() == "done" for pipe in pipes)
        samples["split"].append(1000 * (time.perf_counter() - start) / args.inner)
    for pipe in pipes:
        pipe.send(None)
    for process in workers:
        process.join(timeout=30)
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{args.members} members of `{args.profile}` updates: one after another on {args.threads} threads vs "
          f"{args.processes} processes x {per} members (one compiled population, one thread each); "
          f"{args.rounds} interleaved rounds of {args.inner}")
    print(f"{'setting':<12} {'ms per K member-updates':>24} {'vs one by one':>14}")
    for name, value in median.items():
        print(f"{name:<12} {value:>24.1f} {median['one by one'] / value:>13.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "median_ms": median, "ms_samples": samples},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
