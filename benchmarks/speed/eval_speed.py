"""Env steps/s of batched evaluation (num_envs=8) vs one episode at a time (num_envs=1),
and with ``--workers W`` of in-process vs W-process evaluation (tql.eval_workers).

Both settings run the same episodes (same seeds, same max_steps) in one process, one after
the other and repeated alternately, with a small torch MLP as the policy. The env pools
are created before timing (creation, i.e. MuJoCo compilation, is reported separately), so
the numbers are the rollout throughput. The policy's share of the time is measured too:
batching only saves per-call policy overhead, the MuJoCo steps stay sequential.

    python -m benchmarks.speed.eval_speed --task cube-double-play-singletask-task2-v0 \\
        --episodes 8 --max-steps 100

The process comparison evaluates a TQL actor (the agent's default size, random weights) the
way a training run does (``PolicyEvaluator``): the same episodes in this process and spread
over W worker processes, whose results must be identical. Each side runs once untimed first
(env creation, process start), then is timed; the ratio is in-process time / W-process time.
W processes can gain only where W cores are free (at most W times; less the time spent
sending the actor and merging): on a busy 2-core machine expect little.

    python -m benchmarks.speed.eval_speed --episodes 16 --max-steps 200 --workers 8

``--members K`` adds how a batch of K members is evaluated over ``--workers W`` processes:
member by member (K calls, each dealing its E episodes over min(E, W) processes) vs all at
once (``PolicyEvaluator.run_many``, K x E episodes dealt over W processes), alternating,
with identical results required. All at once gains where E < W (at most min(W, K x E) / E
times): on one GPU's 16 cores with 8 episodes, or here with E = 1 and W = 2.

    python -m benchmarks.speed.eval_speed --members 16 --episodes 8 --workers 15 --max-steps 500
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks import common
from tql.eval_workers import PolicyEvaluator
from tql.evaluation import EnvPool, run_episodes
from tql.tasks import get_task


def mlp_policy(obs_dim: int, act_dim: int, hidden: int, layers: int, device: str):
    """A randomly initialised tanh-squashed MLP; returns (policy, seconds-in-policy list)."""
    torch.manual_seed(0)
    dims = [obs_dim] + [hidden] * layers
    mods: list[torch.nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.GELU(approximate="tanh")]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(dims[-1], act_dim), torch.nn.Tanh())
    net = net.to(device).eval()
    spent = [0.0]

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = net(torch.from_numpy(obs).to(device)).cpu().numpy()
        spent[0] += time.perf_counter() - t0
        return out

    return policy, spent


def measure(policy, spent, pool, task, args) -> dict:
    spent[0] = 0.0
    res = run_episodes(policy, pool, task, args.episodes, seed=0, max_steps=args.max_steps)
    return {
        "steps_per_s": res.env_steps / res.seconds,
        "seconds": res.seconds,
        "policy_seconds": spent[0],
        "env_steps": res.env_steps,
        "successes": res.successes,
        "lengths": res.lengths,
    }


def compare_processes(task, args) -> dict:
    """Seconds of one evaluation in this process vs spread over ``args.workers`` processes."""
    from tql.agent import AgentConfig, TQLAgent

    torch.manual_seed(0)
    actor = TQLAgent(task.obs_dim, task.act_dim, AgentConfig(), torch.device("cpu")).actor
    seconds, results = {}, {}
    for name, workers in (("in-process", 1), (f"{args.workers} processes", args.workers)):
        with PolicyEvaluator(task, args.episodes, workers) as evaluator:
            t0 = time.perf_counter()
            evaluator.run(actor, args.episodes, seed=0, noise_seed=0, max_steps=args.max_steps)  # envs, processes
            startup = time.perf_counter() - t0
            runs = [evaluator.run(actor, args.episodes, seed=0, noise_seed=0, max_steps=args.max_steps)
                    for _ in range(args.repeats)]
        results[name] = runs[0]
        seconds[name] = min(r.seconds for r in runs)
        print(f"{name:>14}: {seconds[name]:7.2f} s per evaluation (best of {args.repeats}; "
              f"{runs[0].env_steps / seconds[name]:8.1f} env steps/s; first run with startup {startup:.1f} s)")
    local, spread = results.values()
    assert (local.successes, local.returns, local.lengths) == (spread.successes, spread.returns, spread.lengths)
    ratio = seconds["in-process"] / seconds[f"{args.workers} processes"]
    print(f"ratio in-process / {args.workers} processes: {ratio:.2f}x  (identical successes, returns, lengths)")
    return {"workers": args.workers, "seconds": seconds, "ratio": ratio, "success_rate": local.success_rate}


def compare_members(task, args) -> dict:
    """Seconds of evaluating ``args.members`` actors member by member vs all at once."""
    from tql.agent import AgentConfig, TQLAgent
    from tql.eval_workers import EvalRequest

    actors = []
    for k in range(args.members):
        torch.manual_seed(k)
        actors.append(TQLAgent(task.obs_dim, task.act_dim, AgentConfig(), torch.device("cpu")).actor)

    def requests():
        return [EvalRequest.of(a, args.episodes, seed=k, noise_seed=k, max_steps=args.max_steps)
                for k, a in enumerate(actors)]

    settings = {"member by member": lambda ev: [ev.run_many([r])[0] for r in requests()],
                "all at once": lambda ev: ev.run_many(requests())}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    results = {}
    with PolicyEvaluator(task, args.episodes, args.workers or 1, members=args.members) as evaluator:
        evaluator.run(actors[0], args.episodes, seed=0, noise_seed=0, max_steps=args.max_steps)  # envs, processes
        for r in range(args.repeats):
            for name in (settings if r % 2 == 0 else reversed(settings)):
                t0 = time.perf_counter()
                results[name] = settings[name](evaluator)
                seconds[name].append(time.perf_counter() - t0)
    one, together = results.values()
    for a, b in zip(one, together):
        assert (a.successes, a.returns, a.lengths) == (b.successes, b.returns, b.lengths)
    best = {name: min(times) for name, times in seconds.items()}
    for name in settings:
        print(f"{name:>16}: {best[name]:7.2f} s for {args.members} members x {args.episodes} episodes "
              f"(best of {args.repeats}) on {args.workers or 1} process(es)")
    ratio = best["member by member"] / best["all at once"]
    print(f"ratio member by member / all at once: {ratio:.2f}x  (identical successes, returns, lengths)")
    return {"members": args.members, "workers": args.workers or 1, "seconds": seconds, "best": best, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--num-envs", type=int, default=8, help="batched setting (vs 1)")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per setting")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0,
                   help="also compare in-process evaluation with this many worker processes (0: skip)")
    p.add_argument("--members", type=int, default=0,
                   help="also compare evaluating this many actors member by member vs all at once (0: skip)")
    common.add_json_option(p, "the numbers")
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    policy, spent = mlp_policy(task.obs_dim, task.act_dim, args.hidden, args.layers, args.device)
    policy(np.zeros((args.num_envs, task.obs_dim), np.float32))  # warm-up (allocations, CUDA)

    settings = {"batched": args.num_envs, "sequential": 1}
    pools, runs = {}, {name: [] for name in settings}
    try:
        for name, n in settings.items():
            t0 = time.perf_counter()
            pools[name] = EnvPool(task.env_name, n)
            for env in pools[name].envs:  # the first reset compiles the MuJoCo model
                env.reset(seed=0)
            print(f"created and compiled {n} env(s) in {time.perf_counter() - t0:.1f} s")
        for _ in range(args.repeats):
            for name in settings:
                runs[name].append(measure(policy, spent, pools[name], task, args))
    finally:
        for pool in pools.values():
            pool.close()

    assert runs["batched"][0]["lengths"] == runs["sequential"][0]["lengths"]  # same episodes
    summary = {"task": task.name, "episodes": args.episodes, "max_steps": args.max_steps,
               "policy": f"MLP {args.layers}x{args.hidden} on {args.device}",
               "torch_threads": args.threads}
    for name, n in settings.items():
        best = max(runs[name], key=lambda r: r["steps_per_s"])
        summary[name] = {
            "num_envs": n,
            "steps_per_s_best": best["steps_per_s"],
            "steps_per_s_median": statistics.median(r["steps_per_s"] for r in runs[name]),
            "policy_share": best["policy_seconds"] / best["seconds"],
        }
        print(f"{name:>10} (num_envs={n}): {best['steps_per_s']:8.1f} env steps/s "
              f"(best of {args.repeats}; policy {100 * summary[name]['policy_share']:.0f}% "
              f"of the time, {best['env_steps']} steps)")
    ratio = summary["batched"]["steps_per_s_best"] / summary["sequential"]["steps_per_s_best"]
    summary["ratio"] = ratio
    if args.workers:
        summary["processes"] = compare_processes(task, args)
    if args.members:
        summary["members"] = compare_members(task, args)
    print(f"ratio batched / sequential: {ratio:.2f}x  ({summary['policy']}, "
          f"{args.episodes} episodes x <= {args.max_steps} steps)")
    common.write_json(args.json, summary, __file__, argv, header=header)
    return summary


if __name__ == "__main__":
    main()
