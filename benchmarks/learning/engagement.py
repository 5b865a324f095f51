"""When does H̄ start to matter? Attention entropy, target, temperature and TD loss per layer
over training, for a grid of configurations, and the updates at which each thing happens.

H̄ can change a run only once (a) the critic's attention, left to itself, would fall below
H̄ and (b) the temperature alpha is large enough to push back. This script measures both:

- ``free`` runs (control off: no penalty, temperatures frozen), over critic presets, critic
  learning rates and dataset sizes: the update at which attention first leaves uniform
  (some layer's entropy more than ``UNIFORM_MARGIN`` below log n) and, for each rho in
  ``--rhos``, the update at which it first falls below H̄ = rho log n;
- ``control`` runs (the published control), over alpha_init, H̄ (``--rhos``) and run length
  (the learning-rate and alpha schedules are relative to it): the update at which each
  layer's entropy first comes within ``ENGAGE_MARGIN`` of its target ("engagement"), and,
  for two runs that differ only in H̄, the first update at which their TD loss or entropies
  differ (``differ``).

Each run trains the whole agent (critic and policy) on generated data with the same batches
(seeded), no evaluation episodes. Runs are spread over ``--jobs`` processes of one thread
(default ``auto``: one per core, one on a GPU).

    python -m benchmarks.learning.engagement --grid free --steps 3000 --jobs 2 \\
        --json benchmarks/learning/results/engagement_free.json
    python -m benchmarks.learning.engagement --grid control --steps 3000 --jobs 2 \\
        --json benchmarks/learning/results/engagement_control.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from autotune.tuning.trials import resolve_workers
from benchmarks import common
from benchmarks.learning.side_by_side import side_by_side
from tql.agent import AgentConfig, TQLAgent, critic_depth, flat_metrics
from tql.data import ReplaySampler, expected_size, provide_task_data
from tql.engagement import ENGAGE_MARGIN
from tql.errors import ConfigError
from tql.targets import GROUP_NAMES, rho_table
from tql.tasks import get_task
from tql.trainer import resolve_device

UNIFORM_MARGIN = 0.05  # nats below log n that count as "left uniform"
GRIDS = ("free", "control")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="free", help=f"one of: {', '.join(GRIDS)}")
    parser.add_argument("--task", default="cube-double-play-singletask-task1-v0")
    parser.add_argument("--sizes", default="0.03M", help="critic presets (free grid)")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3", help="critic learning rates (free grid)")
    parser.add_argument("--episodes", default="4,40", help="dataset sizes in episodes of 1001 steps (free grid; "
                                                          "the control grid uses the first)")
    parser.add_argument("--alpha-inits", default="1.0,0.1,0.01", help="initial temperatures (control grid)")
    parser.add_argument("--rhos", default="0.5,0.9", help="H̄ / log n: the targets (control) or thresholds (free)")
    parser.add_argument("--steps", default="3000", help="updates per run; a comma list runs each length (control)")
    parser.add_argument("--control-size", default="0.03M")
    parser.add_argument("--control-lr", type=float, default=1e-4, help="critic learning rate (control grid)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--actor-hidden", default="256,256,256")
    parser.add_argument("--log-points", type=int, default=60, help="logged updates per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", default="auto",
                        help="runs trained at once, processes of one thread (auto: one per core; 1 on a GPU)")
    parser.add_argument("--data-dir", default="data")
    common.add_json_option(parser, "every run's logged updates and the summaries")
    parser.add_argument("--from-json", default=None, help="re-read the runs of an earlier --json and report them")
    args = parser.parse_args(argv)
    if args.grid not in GRIDS:
        parser.error(f"--grid {args.grid!r} is not one of: {', '.join(GRIDS)}")
    return args


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def grid_runs(args) -> list[dict]:
    """The configurations of ``args.grid``: each a dict of what it varies (rho None: control off)."""
    steps = [int(s) for s in args.steps.split(",")]
    if args.grid == "free":
        return [dict(size=size, critic_lr=lr, episodes=int(ep), alpha_init=1.0, rho=None, steps=n)
                for size, lr, ep, n in itertools.product(args.sizes.split(","), floats(args.lrs),
                                                         args.episodes.split(","), steps)]
    episodes = int(args.episodes.split(",")[0])
    return [dict(size=args.control_size, critic_lr=args.control_lr, episodes=episodes, alpha_init=alpha, rho=rho,
                 steps=n)
            for n, alpha, rho in itertools.product(steps, floats(args.alpha_inits), floats(args.rhos))]


def run_name(run: dict) -> str:
    control = "free" if run["rho"] is None else f"alpha0 {run['alpha_init']:g} rho {run['rho']:g}"
    return f"{run['size']} lr {run['critic_lr']:g} {run['episodes']}ep {run['steps']} steps {control}"


def load_sampler(task, episodes: int, data_dir: str, device, say) -> ReplaySampler:
    data = provide_task_data(task, data_dir, "generated", expected_size(task, episodes, 1001), True, say,
                             progress=False)
    return ReplaySampler(data.train, device)


def train_run(args, run: dict) -> dict:
    """One run: its logged rows (every entropy, temperature and target, the TD loss)."""
    torch.set_num_threads(1)
    task, device = get_task(args.task), resolve_device(args.device)
    sampler = load_sampler(task, run["episodes"], args.data_dir, device, say=lambda text: None)
    config = AgentConfig.for_task(task, size=run["size"], batch_size=args.batch_size,
                                  actor_hidden=tuple(int(w) for w in args.actor_hidden.split(",")),
                                  critic_lr=run["critic_lr"], alpha_init=run["alpha_init"],
                                  entropy_control=run["rho"] is not None)
    depth = critic_depth(config)
    table = rho_table(run["rho"] if run["rho"] is not None else 1.0, depth, task.max_entropy)
    torch.manual_seed(args.seed)
    agent = TQLAgent(task.obs_dim, task.act_dim, config, device, total_steps=run["steps"])
    generator = torch.Generator(device=device).manual_seed(args.seed)  # the same batches for every run
    target = torch.tensor(table, device=device)
    every = max(1, run["steps"] // args.log_points)
    logs, start = [], time.perf_counter()
    for step in range(1, run["steps"] + 1):
        metrics = agent.update(sampler.sample(args.batch_size, generator), target)
        if step % every == 0 or step == 1:
            logs.append({"step": step, **flat_metrics(metrics)})
    return {**run, "name": run_name(run), "depth": depth, "log_n": task.max_entropy, "targets": table,
            "logs": logs, "seconds": round(time.perf_counter() - start, 1)}


def entropies(row: dict, depth: int) -> list[list[float]]:
    return [[row[f"entropy/l{layer}_{group}"] for group in GROUP_NAMES] for layer in range(depth)]


def first_step(logs: list[dict], condition) -> int | None:
    """The first logged update at which ``condition(row)`` holds (None: never in the run)."""
    return next((row["step"] for row in logs if condition(row)), None)


def free_summary(run: dict, rhos: list[float]) -> dict:
    """When attention leaves uniform, and when it first falls below each H̄ = rho log n."""
    depth, log_n, logs = run["depth"], run["log_n"], run["logs"]
    lowest = lambda row: min(min(layer) for layer in entropies(row, depth))  # noqa: E731
    return {"leaves_uniform": first_step(logs, lambda row: lowest(row) < log_n - UNIFORM_MARGIN),
            "below": {f"{rho:g}": first_step(logs, lambda row, rho=rho: lowest(row) < rho * log_n) for rho in rhos},
            "lowest_entropy": min(lowest(row) for row in logs), "final_td_loss": logs[-1]["critic/td_loss"]}


def control_summary(run: dict) -> dict:
    """Per layer, the first update at which an entropy of the layer comes within
    ``ENGAGE_MARGIN`` of its target; the run's first and last such update."""
    depth, logs, table = run["depth"], run["logs"], run["targets"]
    per_layer = [first_step(logs, lambda row, layer=layer: any(
        entropies(row, depth)[layer][g] <= table[layer][g] + ENGAGE_MARGIN for g in range(len(GROUP_NAMES))))
        for layer in range(depth)]
    engaged = [s for s in per_layer if s is not None]
    return {"engaged_per_layer": per_layer, "first_engaged": min(engaged) if engaged else None,
            "all_engaged": max(engaged) if len(engaged) == depth else None,
            "final_alpha": {k: v for k, v in logs[-1].items() if k.startswith("alpha/")},
            "final_td_loss": logs[-1]["critic/td_loss"]}


MATERIAL = 0.05  # nats: an entropy difference between two runs that is more than rounding's echo


def first_difference(a: dict, b: dict, tolerance: float = 1e-6) -> int | None:
    """The first logged update at which two runs' TD loss or entropies differ at all (any
    difference then grows: the runs are chaotic in their numbers)."""
    keys = [k for k in a["logs"][0] if k.startswith("entropy/")] + ["critic/td_loss"]
    for row_a, row_b in zip(a["logs"], b["logs"]):
        if any(abs(row_a[k] - row_b[k]) > tolerance * max(1.0, abs(row_a[k])) for k in keys):
            return row_a["step"]
    return None


def first_material_difference(a: dict, b: dict, nats: float = MATERIAL) -> int | None:
    """The first logged update at which some layer's entropy differs by more than ``nats``."""
    keys = [k for k in a["logs"][0] if k.startswith("entropy/")]
    return next((row_a["step"] for row_a, row_b in zip(a["logs"], b["logs"])
                 if any(abs(row_a[k] - row_b[k]) > nats for k in keys)), None)


def differences(runs: list[dict]) -> list[dict]:
    """For each pair of control runs that differ only in rho: when they first differ at all,
    and when an entropy first differs by more than ``MATERIAL`` nats."""
    found = []
    for a, b in itertools.combinations([r for r in runs if r["rho"] is not None], 2):
        same = all(a[k] == b[k] for k in ("size", "critic_lr", "episodes", "alpha_init", "steps"))
        if same and a["rho"] != b["rho"]:
            found.append({"runs": [a["name"], b["name"]], "differ": first_difference(a, b),
                          "differ_material": first_material_difference(a, b),
                          "final_td_loss": [a["logs"][-1]["critic/td_loss"], b["logs"][-1]["critic/td_loss"]]})
    return found


def run_all(args, runs: list[dict]) -> list[dict]:
    return side_by_side(args, train_run, [(run,) for run in runs])


def never(value) -> str:
    return "never" if value is None else f"{value:,}"


def print_free(runs: list[dict], rhos: list[float], console: Console) -> None:
    table = Table(title=f"control off: the update at which attention leaves uniform (> {UNIFORM_MARGIN} nats below "
                        "log n) and first falls below H̄ = rho log n")
    for column in ("preset", "critic lr", "episodes", "steps", "leaves uniform",
                   *(f"below rho {rho:g}" for rho in rhos), "lowest H / log n", "final TD loss", "s"):
        table.add_column(column, justify="right")
    for run in runs:
        s = run["summary"]
        table.add_row(run["size"], f"{run['critic_lr']:g}", str(run["episodes"]), f"{run['steps']:,}",
                      never(s["leaves_uniform"]), *(never(s["below"][f"{rho:g}"]) for rho in rhos),
                      f"{s['lowest_entropy'] / run['log_n']:.3f}", f"{s['final_td_loss']:.4f}", f"{run['seconds']:.0f}")
    console.print(table)


def print_control(runs: list[dict], pairs: list[dict], console: Console) -> None:
    table = Table(title=f"published control: the update at which each layer's entropy comes within {ENGAGE_MARGIN} "
                        "nats of its target (engagement)")
    for column in ("steps", "alpha_init", "rho", "engaged per layer", "first", "all", "final alpha (mean)",
                   "final TD loss", "s"):
        table.add_column(column, justify="right")
    for run in runs:
        s = run["summary"]
        alphas = list(s["final_alpha"].values())
        table.add_row(f"{run['steps']:,}", f"{run['alpha_init']:g}", f"{run['rho']:g}",
                      ", ".join(never(x) for x in s["engaged_per_layer"]), never(s["first_engaged"]),
                      never(s["all_engaged"]), f"{sum(alphas) / len(alphas):.3g}", f"{s['final_td_loss']:.4f}",
                      f"{run['seconds']:.0f}")
    console.print(table)
    for pair in pairs:
        console.print(f"{pair['runs'][0]}  vs  {pair['runs'][1]}: first differ at update {never(pair['differ'])}, "
                      f"an entropy by > {MATERIAL} nats at {never(pair['differ_material'])}; final TD loss "
                      f"{pair['final_td_loss'][0]:.4f} vs {pair['final_td_loss'][1]:.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task, device = get_task(args.task), resolve_device(args.device)
    runs = grid_runs(args)
    console = Console(width=200)
    try:
        args.jobs = resolve_workers(args.jobs, str(device), len(runs), option="--jobs")
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        return 2
    header = common.print_header(__file__, argv)
    for episodes in sorted({run["episodes"] for run in runs} if not args.from_json else ()):
        load_sampler(task, episodes, args.data_dir, device, say=console.print)  # the data once, before the workers
    console.print(f"{task.name} (log n = {task.max_entropy:.3f}): {len(runs)} run(s), batch {args.batch_size}, "
                  f"device {device}, {args.jobs} at once, 1 thread each")
    start = time.perf_counter()
    finished = json.loads(Path(args.from_json).read_text())["runs"] if args.from_json else run_all(args, runs)
    rhos = floats(args.rhos)
    for run in finished:
        run["summary"] = free_summary(run, rhos) if run["rho"] is None else control_summary(run)
    pairs = differences(finished)
    if args.grid == "free":
        print_free(finished, rhos, console)
    else:
        print_control(finished, pairs, console)
    console.print(f"{time.perf_counter() - start:.0f} s in all")
    common.write_json(args.json, {"task": task.name, "log_n": task.max_entropy, "args": vars(args),
                                  "uniform_margin": UNIFORM_MARGIN, "engage_margin": ENGAGE_MARGIN,
                                  "runs": finished, "pairs": pairs}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
