"""Seconds to log a batch's held-out TD errors: member by member vs the population at once.

A batched run (``tql.batched.batch_runs``) logs every member's TD error on a held-out batch every
``log_every`` steps. Member by member (how it was done before): load member i into a scratch
agent and run ``tql.trainer.held_out_td_error``, K times. At once: one
``Population.held_out_td_errors`` over the stacked members. The two settings alternate within
each round on the same batches and z' noise; medians of ``--rounds`` are compared, and the
values must agree (float reassociation only):

    ratio = t(member by member) / t(at once)

On a GPU the member-by-member way pays K times the kernel launches of one measurement.

    python -m benchmarks.speed.held_out_speed --k 16
    python -m benchmarks.speed.held_out_speed --device cuda --k 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks import common
from benchmarks.speed.population_speed import random_batches, sync
from tql.agent import AgentConfig, TQLAgent
from tql.batched.stacked import Population
from tql.tasks import get_task
from tql.trainer import VAL_BATCH, held_out_td_error


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--k", type=int, default=16, help="members")
    p.add_argument("--preset", default="0.03M", help="critic size (the cpu profile's by default)")
    p.add_argument("--actor-hidden", default="256,256,256")
    p.add_argument("--batch-size", type=int, default=VAL_BATCH, help="held-out transitions per member")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    common.add_json_option(p, "the numbers")
    return p.parse_args(argv)


def member_by_member(pop: Population, scratch: TQLAgent, batches: dict, noise: torch.Tensor) -> list[float]:
    errors = []
    with torch.no_grad():
        for i in range(pop.k):
            scratch.load_state_dict({name: t[i] for name, t in pop.state.items()})
            errors.append(float(held_out_td_error(scratch, {key: v[i] for key, v in batches.items()}, noise[i])))
    return errors


def main(argv=None) -> dict:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, task = torch.device(args.device), get_task(args.task)
    config = AgentConfig(size=args.preset, actor_hidden=tuple(int(h) for h in args.actor_hidden.split(",")))
    pop = Population(task.obs_dim, task.act_dim, config, args.k, device, seeds=list(range(args.k)))
    scratch = TQLAgent(task.obs_dim, task.act_dim, config, device)
    generator = torch.Generator().manual_seed(0)
    batches = random_batches(args.k, args.batch_size, task.obs_dim, task.act_dim, device, generator)
    noise = torch.randn(args.k, args.batch_size, task.act_dim, generator=generator).to(device)
    settings = {"member by member": lambda: member_by_member(pop, scratch, batches, noise),
                "at once": lambda: pop.held_out_td_errors(batches, noise).tolist()}
    values = {name: fn() for name, fn in settings.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for r in range(args.rounds):
        for name in (settings if r % 2 == 0 else reversed(settings)):
            sync(device)
            start = time.perf_counter()
            values[name] = settings[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(*values.values()))
    if worst > 1e-4:
        raise SystemExit(f"the settings disagree: largest relative difference {worst:.2e}")
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    ratio = medians["member by member"] / medians["at once"]
    print(f"K={args.k} members, critic {args.preset}, actor {config.actor_hidden}, {args.batch_size} held-out "
          f"transitions each, {task.name}, device {args.device}, threads {torch.get_num_threads()}")
    for name, median in medians.items():
        print(f"{name:>16}: {1000 * median:9.1f} ms per log (median of {args.rounds})")
    print(f"ratio member by member / at once: {ratio:.2f}x (largest relative difference {worst:.1e})")
    result = {"args": vars(args), "seconds": seconds, "medians": medians, "ratio": ratio, "max_rel_diff": worst}
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
