"""Seconds per update of a batched population of K agents vs K separate single-agent updates.

For each K, one ``Population`` update (K members, each with its own batch and H̄) per
population backend (``--backends``: ``native`` = tql.batched.forward, ``vmap`` = vmap over the agent's
own losses) is timed against K consecutive ``TQLAgent.update`` calls on K separate agents with
the same batches; all settings alternate within each round (interleaved, so drift in machine
load hits them alike) and the medians of ``--repeats`` timings of ``--iters`` updates each are
compared:

    ratio = t(population of K) / (K x t(one single-agent update))
    native / vmap = t(native population of K) / t(vmap population of K)

The issue's goal is ratio <= 0.5 at K = 8. Data are random tensors of the task's shapes (the
update's cost does not depend on their values); all settings get the same threads.

    python -m benchmarks.speed.population_speed --preset 0.03M --batch-size 128 --actor-hidden 256,256,256
    python -m benchmarks.speed.population_speed --device cuda --preset 0.4M --batch-size 256 --actor-hidden 512,512,512,512
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks import common
from tql.agent import AgentConfig, TQLAgent
from tql.batched.stacked import BACKENDS, Population
from tql.tasks import get_task


def random_batches(k: int, batch: int, obs_dim: int, act_dim: int, device, generator) -> dict:
    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    return {
        "observations": rand(k, batch, obs_dim) * 2 - 1,
        "actions": rand(k, batch, act_dim) * 2 - 1,
        "next_observations": rand(k, batch, obs_dim) * 2 - 1,
        "rewards": -rand(k, batch),
        "masks": (rand(k, batch) > 0.01).float(),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, iters: int, device: torch.device) -> float:
    """Seconds per call, averaged over ``iters`` calls (one sync at the end)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def measure_k(k: int, args, config: AgentConfig, task, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(k)
    batches = random_batches(k, args.batch_size, task.obs_dim, task.act_dim, device, generator)
    singles = [{key: value[i] for key, value in batches.items()} for i in range(k)]
    targets = torch.linspace(0.3, 0.8, k, device=device) * float(torch.log(torch.tensor(float(task.n_tokens))))
    target_list = [float(t) for t in targets]
    pops = {backend: Population(task.obs_dim, task.act_dim, config, k, device, seeds=list(range(k)),
                                chunk_size=args.chunk_size if backend == "vmap" else None, backend=backend)
            for backend in args.backends}
    agents = []
    for seed in range(k):
        torch.manual_seed(seed)
        agents.append(TQLAgent(task.obs_dim, task.act_dim, config, device))

    def separate_updates():
        for agent, batch, target in zip(agents, singles, target_list):
            agent.update(batch, target)

    settings = {backend: (lambda pop=pop: pop.update(batches, targets)) for backend, pop in pops.items()}
    settings["separate"] = separate_updates
    for _ in range(args.warmup):
        for fn in settings.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):  # one round: every setting once, in the same order
        for name, fn in settings.items():
            times[name].append(time_calls(fn, args.iters, device))
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    t_sep = medians["separate"]
    row = {"k": k, "separate_s": t_sep, "single_s": t_sep / k, "separate_runs_s": times["separate"],
           "backends": {b: {"population_s": medians[b], "ratio": medians[b] / t_sep, "runs_s": times[b]}
                        for b in pops}}
    if {"native", "vmap"} <= set(pops):
        row["native_over_vmap"] = medians["native"] / medians["vmap"]
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0", help="sets obs/act dims")
    p.add_argument("--preset", default="0.03M", help="TQL critic size preset")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--actor-hidden", default="256,256,256", help="comma-separated widths")
    p.add_argument("--flow-steps", type=int, default=10)
    p.add_argument("--ks", default="1,4,8", help="population sizes")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timings per setting")
    p.add_argument("--iters", type=int, default=5, help="updates per timing")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backends", default=",".join(BACKENDS), help="population backends to time side by side")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="vmap backend: members per batched call (Population chunk_size; default: all K)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--precision", default="fp32", help="AgentConfig.precision: fp32 or bf16")
    p.add_argument("--device", default="cpu")
    common.add_json_option(p, "the numbers")
    args = p.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown or not args.backends:
        p.error(f"--backends {','.join(args.backends)}: valid are {', '.join(BACKENDS)}")
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    task = get_task(args.task)
    hidden = tuple(int(w) for w in args.actor_hidden.split(","))
    config = AgentConfig.for_task(task, size=args.preset, batch_size=args.batch_size,
                                  actor_hidden=hidden, flow_steps=args.flow_steps, precision=args.precision)
    print(f"task {task.name} (obs {task.obs_dim}, act {task.act_dim}), preset {args.preset}, "
          f"batch {args.batch_size}, actor {hidden}, flow_steps {args.flow_steps}, device {device}, "
          f"threads {args.threads}, backends {','.join(args.backends)}, chunk_size (vmap) {args.chunk_size}, "
          f"precision {args.precision}")
    print(f"medians of {args.repeats} interleaved rounds, each timing {args.iters} updates of every setting")
    print(f"{'K':>3} {'backend':>8} {'population ms':>14} {'K x single ms':>14} {'single ms':>10} {'ratio':>7}"
          f" {'native/vmap':>12}")
    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        row = measure_k(k, args, config, task, device)
        rows.append(row)
        for backend, timing in row["backends"].items():
            versus = f"{row['native_over_vmap']:>12.3f}" if backend == "native" and "native_over_vmap" in row else ""
            print(f"{k:>3} {backend:>8} {timing['population_s'] * 1e3:>14.2f} {row['separate_s'] * 1e3:>14.2f} "
                  f"{row['single_s'] * 1e3:>10.2f} {timing['ratio']:>7.3f} {versus}".rstrip(), flush=True)
    print("ratio = K-batched / (K x single), goal: <= 0.5 at K = 8; native/vmap = native time / vmap time")
    result = {"args": vars(args), "device": str(device), "rows": rows}
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
