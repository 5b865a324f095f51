"""K members of one task on a CPU: one after another on every core, or one process per core?

On 2 cores a compiled population of K members costs what K compiled runs one after another
do (update_speed.py --members: 1.02x): batching members merges their matmuls but not their
elementwise traffic. The other way to share the cores is to split the members: P processes
of one thread each, all at once, each training K / P members, either one after another
(``--inside agents``) or as one compiled population (``--inside population``); both by
default, as two settings. This script measures the split side by side with K agents one after
another on all the threads (what K runs of a sweep cost one by one), in interleaved rounds:
per round, N updates of every member in each setting, one setting at a time (the others'
processes wait). Reported: ms per update of all K members (median) and the ratios.

    python -m benchmarks.speed.member_split --members 4 --processes 2 --rounds 15 \\
        --json benchmarks/speed/results/member_split.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from multiprocessing import get_context

import torch

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--processes", type=int, default=2, help="worker processes of the split (one thread each)")
    p.add_argument("--threads", type=int, default=2, help="threads of the one-by-one setting")
    p.add_argument("--inside", default="agents,population",
                   help="what each worker runs, settings side by side: 'agents' (its members one after "
                        "another) and/or 'population' (one compiled population of them)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=5, help="updates of every member per timed sample")
    common.add_json_option(p)
    args = p.parse_args(argv)
    if args.members % args.processes:
        p.error(f"--members {args.members} must split evenly over --processes {args.processes}")
    args.inside = args.inside.split(",")
    if bad := sorted(set(args.inside) - set(INSIDE)):
        p.error(f"--inside {','.join(bad)} is not one of: {', '.join(INSIDE)}")
    return args


INSIDE = ("agents", "population")


def setting(task: str, profile: str):
    """The profile's compiled agent config, the task's dims, one batch and H̄ table."""
    from benchmarks.speed.chunked_update import random_batch
    from tql.trainer import TrainConfig

    config = TrainConfig.from_profile(task, profile, {"compile": True})
    spec = config.spec
    return config, spec, random_batch(spec, config.agent.batch_size), torch.full((2, 2), 0.9 * spec.max_entropy)


def make_agents(config, spec, seeds) -> list:
    """One CPU agent of ``config`` per seed (torch's generator seeded before each is built)."""
    from tql.agent import TQLAgent

    agents = []
    for seed in seeds:
        torch.manual_seed(seed)
        agents.append(TQLAgent(spec.obs_dim, spec.act_dim, config.agent, "cpu", total_steps=config.steps))
    return agents


def worker(conn, task: str, profile: str, inside: str, members: int, first_seed: int) -> None:
    """One process, one thread: ``members`` compiled agents updated one after another
    (``inside='agents'``) or one compiled population of them; N updates of each per "go"."""
    from tql.batched.stacked import Population

    torch.set_num_threads(1)
    config, spec, batch, target = setting(task, profile)
    seeds = list(range(first_seed, first_seed + members))
    if inside == "population":
        population = Population(spec.obs_dim, spec.act_dim, config.agent, members, "cpu", seeds=seeds,
                                total_steps=config.steps)
        stacked = {k: v.expand(members, *v.shape).contiguous() for k, v in batch.items()}
        steps = [lambda: population.update(stacked, target)]
    else:
        steps = [lambda agent=agent: agent.update(batch, target) for agent in make_agents(config, spec, seeds)]
    for step in steps:
        step()  # compiles
    conn.send("ready")
    while (updates := conn.recv()) is not None:
        for _ in range(updates):
            for step in steps:
                step()
        conn.send("done")


def start_workers(args: argparse.Namespace, inside: str) -> list:
    """``args.processes`` workers of ``inside``, compiled and waiting; their pipes."""
    per = args.members // args.processes
    context = get_context("spawn")
    pipes = []
    for i in range(args.processes):
        ours, theirs = context.Pipe()
        context.Process(target=worker, args=(theirs, args.task, args.profile, inside, per, i * per),
                        daemon=True).start()
        pipes.append(ours)
    assert all(pipe.recv() == "ready" for pipe in pipes)
    return pipes


def run_split(pipes: list, updates: int) -> None:
    """All workers at once, ``updates`` updates of each of their members."""
    for pipe in pipes:
        pipe.send(updates)
    assert all(pipe.recv() == "done" for pipe in pipes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    config, spec, batch, target = setting(args.task, args.profile)
    agents = make_agents(config, spec, range(args.members))
    for agent in agents:
        agent.update(batch, target)  # compiles (once: the same shapes)
    splits = {f"split, {inside}": start_workers(args, inside) for inside in args.inside}
    samples = {"one by one": [], **{name: [] for name in splits}}
    for r in range(args.rounds):
        for name in (list(samples) if r % 2 == 0 else list(reversed(samples))):
            start = time.perf_counter()
            if name == "one by one":
                for _ in range(args.inner):
                    for agent in agents:
                        agent.update(batch, target)
            else:
                run_split(splits[name], args.inner)
            samples[name].append(1000 * (time.perf_counter() - start) / args.inner)
    for pipes in splits.values():
        for pipe in pipes:
            pipe.send(None)
    median = {name: statistics.median(values) for name, values in samples.items()}
    per = args.members // args.processes
    print(f"{args.members} members of `{args.profile}` updates: one after another on {args.threads} threads vs "
          f"{args.processes} processes x {per} members, one thread each ('agents': one after another, "
          f"'population': one compiled population); {args.rounds} interleaved rounds of {args.inner}")
    print(f"{'setting':<22} {'ms per K member-updates':>24} {'vs one by one':>14}")
    for name, value in median.items():
        print(f"{name:<22} {value:>24.1f} {median['one by one'] / value:>13.2f}x")
    common.write_json(args.json, {"args": vars(args), "median_ms": median, "ms_samples": samples},
                      __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
