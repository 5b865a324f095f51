"""bf16 autocast vs float32: do the losses agree, and how much faster is an update?

``AgentConfig(precision="bf16")`` runs the forward passes under bfloat16 autocast with the
attention core, residual stream, Q heads, output layers and losses kept in float32
(``tql.model``).
On one task's dataset (generated if missing) this script trains these agents from the same
initialisation, one update of each in turn:

- ``fp32``: the float32 run;
- ``bf16``: the same run under bf16 autocast (same batches, same update noise);
- ``ref1`` .. ``refN`` (``--references``): float32 again, each with another batch order and
  update noise (same initialisation): the run-to-run reference, what reshuffling alone
  changes.

and measures

1. per-update agreement: at evenly spaced points of the fp32 run, every loss term and the
   per-layer attention entropies on held-out batches with the same weights and noise, once in
   float32 and once under autocast: relative difference |bf16 - fp32| / |fp32| (for mean Q
   and the Q loss -mean Q, near 0 at initialisation, / max(|fp32|, 1): Q is in reward units),
   and the entropy difference in units of log n. Beside it, the noise reference: the same
   float32 losses with the update's random draws (z', flow noise and t, z) drawn again, i.e.
   how much a loss moves from one update's own sampling. The TD loss is a small residual of
   large Q values, so bf16's ~1e-4 relative error in Q shows up magnified in it;
2. drift: at the end, each run's Q values, TD loss and entropies on the held-out batches, as
   distances from the fp32 run: bf16's distance against the references';
3. speed: ms per update of each run (interleaved, so the machine's load hits all alike).

Verdict, printed at the end: bf16 keeps the losses equal within tolerance when, at every
measurement, the median relative difference of every loss term is <= --loss-tol (default 1%)
or below that term's noise reference, every entropy differs by <= --entropy-tol x log n
(default 0.005), and bf16's drift is within the references' (no larger than the largest).

    python -m benchmarks.gpu.precision_check --threads 2 --steps 600 --json benchmarks/gpu/results/precision_check.json
    python -m benchmarks.gpu.precision_check --device cuda --size 1.6M --steps 5000     # on a GPU
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from benchmarks import common
from tql.agent import AgentConfig, TQLAgent
from tql.data import ReplaySampler, generate_dataset, load_task_data
from tql.errors import MissingDatasetError
from tql.tasks import get_task

# critic/loss is td_loss + the entropy penalty: its agreement is td_loss's and the entropies'.
LOSS_TERMS = ("critic/td_loss", "critic/q_mean", "actor/bc_flow_loss", "actor/distill_loss", "actor/q_loss")
FLOORS = {"actor/q_loss": 1.0, "critic/q_mean": 1.0}  # denominators' floors (see the module text); others 1e-6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--size", default="0.4M", help="TQL critic preset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=600, help="updates of each run")
    p.add_argument("--checkpoints", type=int, default=4, help="agreement measurements over the fp32 run")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out batches per measurement")
    p.add_argument("--references", type=int, default=3, help="reshuffled float32 runs (run-to-run reference)")
    p.add_argument("--rho", type=float, default=0.5, help="H̄ = rho log n")
    p.add_argument("--loss-tol", type=float, default=0.01)
    p.add_argument("--entropy-tol", type=float, default=0.005, help="in units of log n")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--data-episodes", type=int, default=20)
    p.add_argument("--data-episode-length", type=int, default=501)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    common.add_json_option(p, "the numbers")
    return p.parse_args(argv)


def load_samplers(task, args) -> tuple[ReplaySampler, ReplaySampler]:
    try:
        data = load_task_data(task, args.data_dir)
    except MissingDatasetError:
        generate_dataset(task, args.data_dir, episodes=args.data_episodes,
                         episode_length=args.data_episode_length, seed=0, progress=False)
        data = load_task_data(task, args.data_dir)
    return ReplaySampler(data.train, args.device), ReplaySampler(data.val, args.device)


def make_agent(task, args, precision: str) -> TQLAgent:
    config = AgentConfig.for_task(task, size=args.size, batch_size=args.batch_size, precision=precision)
    torch.manual_seed(args.seed)  # the same initial weights for every run
    return TQLAgent(task.obs_dim, task.act_dim, config, args.device)


def losses_both_ways(agent: TQLAgent, batch, noise, target) -> tuple[dict, dict]:
    """The agent's update metrics on (batch, noise) in float32 and under bf16 autocast."""
    with torch.no_grad():
        _, fp32 = agent.losses(batch, target, noise)
        with torch.autocast(agent.device.type, dtype=torch.bfloat16):
            _, bf16 = agent.losses(batch, target, noise)
    return fp32, bf16


def relative(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-6) -> float:
    """|b - a| / max(|a|, floor), norms over all elements (RMS for the floor's sake)."""
    a, b = a.float(), b.float()
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    return float(rms(b - a) / rms(a).clamp_min(floor))


def agreement(agent: TQLAgent, held_out: list, target, log_n: float) -> dict:
    """Per loss term, the median and max over held-out batches of the bf16 relative difference
    and the median of the noise reference's; the largest entropy difference (units of log n)."""
    per_term: dict[str, list[float]] = {k: [] for k in LOSS_TERMS}
    per_term_noise: dict[str, list[float]] = {k: [] for k in LOSS_TERMS}
    entropy_gaps = []
    for batch, noise, other_noise in held_out:
        fp32, bf16 = losses_both_ways(agent, batch, noise, target)
        with torch.no_grad():
            _, redrawn = agent.losses(batch, target, other_noise)
        for key in LOSS_TERMS:
            per_term[key].append(relative(fp32[key], bf16[key], FLOORS.get(key, 1e-6)))
            per_term_noise[key].append(relative(fp32[key], redrawn[key], FLOORS.get(key, 1e-6)))
        entropy_gaps.append(float((bf16["entropies"] - fp32["entropies"]).abs().max()) / log_n)
    out = {key: {"median": statistics.median(v), "max": max(v), "noise_median": statistics.median(per_term_noise[key])}
           for key, v in per_term.items()}
    out["entropy_gap_log_n"] = max(entropy_gaps)
    return out


def held_out_state(agent: TQLAgent, held_out: list, target) -> dict[str, torch.Tensor]:
    """Q values, TD loss and entropies of the agent (in its own precision) on the held-out set."""
    qs, td, ent = [], [], []
    with torch.no_grad(), agent.autocast():
        for batch, noise, _ in held_out:
            q, _ = agent.critic(batch["observations"], batch["actions"], entropies=False)
            _, metrics = agent.losses(batch, target, noise)
            qs.append(q.float())
            td.append(metrics["critic/td_loss"])
            ent.append(metrics["entropies"])
    return {"q": torch.cat(qs, dim=1), "td_loss": torch.stack(td).mean(), "entropies": torch.stack(ent).mean(0)}


def drift(reference: dict, other: dict, log_n: float) -> dict:
    return {
        "q_rel": relative(reference["q"], other["q"]),
        "td_loss_rel": relative(reference["td_loss"], other["td_loss"]),
        "entropy_gap_log_n": float((other["entropies"] - reference["entropies"]).abs().max()) / log_n,
    }


def train_side_by_side(runs: dict, sampler: ReplaySampler, args, target, on_step) -> dict[str, list[float]]:
    """One update of each run in turn, each with batches and noise from its own generators."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.steps):
        on_step(step)
        for name, (agent, batch_gen, noise_gen) in runs.items():
            batch = sampler.sample(args.batch_size, batch_gen)
            noise = agent.sample_noise(batch, noise_gen)
            start = time.perf_counter()
            agent.update(batch, target, noise)
            if agent.device.type == "cuda":
                torch.cuda.synchronize(agent.device)
            seconds[name].append(time.perf_counter() - start)
    on_step(args.steps)
    return seconds


def verdict(checks: list[dict], drifts: dict, args) -> tuple[bool, list[str]]:
    reasons = []
    for check in checks:
        for key in LOSS_TERMS:
            term = check["agreement"][key]
            if term["median"] > max(args.loss_tol, term["noise_median"]):
                reasons.append(f"step {check['step']}: {key} differs by {term['median']:.2%} (noise reference "
                               f"{term['noise_median']:.2%})")
        if check["agreement"]["entropy_gap_log_n"] > args.entropy_tol:
            reasons.append(f"step {check['step']}: entropies differ by "
                           f"{check['agreement']['entropy_gap_log_n']:.4f} log n")
    references = [d for name, d in drifts.items() if name.startswith("ref")]
    for key in ("q_rel", "td_loss_rel", "entropy_gap_log_n"):
        largest = max(d[key] for d in references)
        if drifts["bf16"][key] > largest:
            reasons.append(f"bf16 drift in {key} {drifts['bf16'][key]:.3g} > every reshuffled run's "
                           f"(max {largest:.3g})")
    return not reasons, reasons


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    log_n = math.log(task.n_tokens)
    target = torch.tensor(args.rho * log_n, device=args.device)
    sampler, val_sampler = load_samplers(task, args)
    # Generators on the agents' device: noise is drawn there (and batch indices too).
    generator = lambda seed: torch.Generator(device=args.device).manual_seed(seed)  # noqa: E731
    val_gen = generator(args.seed + 200)
    gens = lambda seed: (generator(seed), generator(seed + 1))  # noqa: E731
    runs = {"fp32": (make_agent(task, args, "fp32"), *gens(args.seed + 1)),
            "bf16": (make_agent(task, args, "bf16"), *gens(args.seed + 1))}
    for i in range(1, args.references + 1):
        runs[f"ref{i}"] = (make_agent(task, args, "fp32"), *gens(args.seed + 1 + 2 * i))
    fp32_agent = runs["fp32"][0]
    held_out = []
    for _ in range(args.eval_batches):
        batch = val_sampler.sample(args.batch_size, val_gen)
        held_out.append((batch, fp32_agent.sample_noise(batch, val_gen), fp32_agent.sample_noise(batch, val_gen)))

    marks = sorted({round(i * args.steps / max(1, args.checkpoints - 1)) for i in range(args.checkpoints)})
    checks = []

    def on_step(step: int) -> None:
        if step in marks:
            checks.append({"step": step, "agreement": agreement(fp32_agent, held_out, target, log_n)})
            a = checks[-1]["agreement"]
            print(f"step {step:>6}: " + "  ".join(f"{k.split('/')[1]} {a[k]['median']:.1e} ({a[k]['noise_median']:.0e})"
                                                 for k in LOSS_TERMS)
                  + f"  entropy {a['entropy_gap_log_n']:.1e} log n", flush=True)

    print(f"task {task.name} (n = {task.n_tokens}), size {args.size}, batch {args.batch_size}, "
          f"{args.steps} steps x {len(runs)} runs, device {args.device}, threads {torch.get_num_threads()}")
    print("per-update relative difference bf16 vs fp32, median over held-out batches (noise reference):")
    seconds = train_side_by_side(runs, sampler, args, target, on_step)
    states = {name: held_out_state(agent, held_out, target) for name, (agent, *_) in runs.items()}
    drifts = {name: drift(states["fp32"], states[name], log_n) for name in runs if name != "fp32"}
    ms = {name: 1e3 * statistics.median(s[len(s) // 10:]) for name, s in seconds.items()}  # skip warm-up
    ok, reasons = verdict(checks, drifts, args)

    print(f"\ndrift from the fp32 run after {args.steps} steps (held-out batches):")
    print(f"{'run':>6} {'Q rel':>9} {'TD loss rel':>12} {'entropy gap':>12}")
    for name, d in drifts.items():
        print(f"{name:>6} {d['q_rel']:>9.2e} {d['td_loss_rel']:>12.2e} {d['entropy_gap_log_n']:>8.1e} log n")
    print(f"\nms per update (median over steps): fp32 {ms['fp32']:.1f}, bf16 {ms['bf16']:.1f}"
          f" -> bf16 speed-up {ms['fp32'] / ms['bf16']:.2f}x (float32 reference runs: "
          f"{', '.join(f'{ms[n]:.1f}' for n in ms if n.startswith('ref'))})")
    print("verdict: bf16 keeps the losses equal within tolerance" if ok else
          "verdict: NOT within tolerance: " + "; ".join(reasons))
    result = {"args": vars(args), "threads": torch.get_num_threads(), "checks": checks, "drift": drifts,
              "ms_per_update": ms, "within_tolerance": ok, "reasons": reasons}
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
