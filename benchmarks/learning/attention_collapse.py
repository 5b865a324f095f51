"""Attention collapse: per-layer attention entropies with and without TQL's entropy control.

Trains a small and a larger TQL critic on one generated task, each without entropy control
(penalty off, temperatures frozen) and with it (target H̄ = rho * log n), and prints the final
per-layer entropies of the [VALUE] row and of the other rows side by side, as fractions of
log n (1 = uniform attention, 0 = one-hot: collapsed).

    python -m benchmarks.learning.attention_collapse --sizes 0.03M,0.4M --steps 1500
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import common
from tql.data import generate_dataset, load_task_data
from tql.errors import MissingDatasetError
from tql.io import read_jsonl
from tql.tasks import get_task
from tql.trainer import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    parser.add_argument("--sizes", default="0.03M,0.4M", help="comma list of critic presets")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rho", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-episodes", type=int, default=40)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="runs/attention_collapse")
    common.add_json_option(parser, "every run's entropies")
    return parser.parse_args(argv)


def final_entropies(metrics_path: Path, depth: int, tail: int = 3) -> dict[str, list[float]]:
    """Mean over the last ``tail`` log rows of each layer's [VALUE] and other-row entropy."""
    rows = [r for r in read_jsonl(metrics_path) if r["type"] == "train"][-tail:]
    return {group: [statistics.mean(r[f"entropy/l{layer}_{group}"] for r in rows) for layer in range(depth)]
            for group in ("value", "other")}


def run_one(args, task, size: str, control: bool) -> dict:
    out = Path(args.out) / f"{size}-{'control' if control else 'free'}"
    agent = {"size": size, "entropy_control": control, "batch_size": args.batch_size}
    config = TrainConfig.from_profile(task.name, "cpu", agent, steps=args.steps, rho=args.rho, seed=args.seed,
                                      eval_every=args.steps, eval_episodes=1, eval_max_steps=5,
                                      log_every=max(1, args.steps // 30), data_dir=args.data_dir,
                                      threads=args.threads)
    result = train(config, out, fresh=True, progress=sys.stdout.isatty())
    from tql.model import get_preset

    depth = get_preset(size).depth
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    return {"size": size, "control": control, "depth": depth, "seconds": result.wall_seconds,
            "entropies": final_entropies(out / "metrics.jsonl", depth), "td_loss": rows[-1]["critic/td_loss"]}


def print_table(runs: list[dict], log_n: float, target: float) -> None:
    table = Table(title=f"attention entropy / log n after training (target H̄/log n = {target / log_n:.2f})")
    table.add_column("layer, rows")
    for run in runs:
        table.add_column(f"{run['size']} {'control' if run['control'] else 'no control'}", justify="right")
    depth = max(run["depth"] for run in runs)
    for layer in range(depth):
        for group in ("value", "other"):
            cells = [f"{run['entropies'][group][layer] / log_n:.3f}" if layer < run["depth"] else "" for run in runs]
            table.add_row(f"l{layer} {'[VALUE]' if group == 'value' else 'others'}", *cells)
    table.add_row("min over layers", *[f"{min(min(v) for v in run['entropies'].values()) / log_n:.3f}" for run in runs])
    table.add_row("TD loss (last log)", *[f"{run['td_loss']:.4f}" for run in runs])
    table.add_row("seconds", *[f"{run['seconds']:.0f}" for run in runs])
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    task = get_task(args.task)
    try:
        load_task_data(task, args.data_dir)
    except MissingDatasetError:
        generate_dataset(task, args.data_dir, episodes=args.data_episodes, seed=0)
    runs = [run_one(args, task, size, control) for size in args.sizes.split(",") for control in (False, True)]
    print_table(runs, task.max_entropy, task.target_entropy(args.rho))
    common.write_json(args.json, {"task": task.name, "log_n": task.max_entropy, "rho": args.rho, "steps": args.steps,
                                  "runs": runs}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
