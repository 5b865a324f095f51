"""Learning check: on one generated task, the TD error falls and TQL beats the random policy.

Slow (minutes), so it lives here and not in the unit suite. It generates the dataset if it is
missing, trains with the given profile, and prints the numbers side by side:

    python benchmarks/learning_check.py --task cube-single-play-singletask-task1-v0 --steps 30000

Which TD error: with rewards of -1 per step and gamma 0.99, the values start near 0 and move
toward about -100 while training propagates them, so the raw squared TD error grows with the
square of the value scale even while the critic fits better. The check therefore compares the
scale-free relative TD error, RMS TD error / |mean TD target| (per logged step), over the first
and last fifth of training; the raw TD loss is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from scipy.stats import fisher_exact

# Runnable as a plain script from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tql.data import generate_dataset, load_task_data  # noqa: E402
from tql.errors import MissingDatasetError  # noqa: E402
from tql.evaluation import evaluate, random_policy  # noqa: E402
from tql.io import read_jsonl  # noqa: E402
from tql.tasks import get_task  # noqa: E402
from tql.train import TrainConfig, train  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single-play-singletask-task1-v0")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--size", default=None, help="critic preset (default: the profile's)")
    parser.add_argument("--critic", default="tql", choices=["tql", "mlp"])
    parser.add_argument("--data-episodes", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="runs/learning_check")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--resume", action="store_true",
                        help="continue (or reuse, if finished) the run in --out instead of starting afresh")
    return parser.parse_args()


def ensure_data(task, data_dir: str, episodes: int) -> str:
    try:
        return load_task_data(task, data_dir).kind
    except MissingDatasetError:
        generate_dataset(task, data_dir, episodes=episodes, seed=0)
        return "generated"


def first_last_fifth(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 5)
    return statistics.mean(values[:k]), statistics.mean(values[-k:])


def td_trends(metrics_path: Path) -> dict[str, tuple[float, float]]:
    """First- and last-fifth means of the raw TD loss, the relative TD error and the mean target."""
    rows = [r for r in read_jsonl(metrics_path) if r["type"] == "train"]
    raw = [r["critic/td_loss"] for r in rows]
    targets = [r["critic/target_q"] for r in rows]
    relative = [math.sqrt(loss) / max(abs(target), 1e-6) for loss, target in zip(raw, targets)]
    return {"td_loss": first_last_fifth(raw), "relative_td_error": first_last_fifth(relative),
            "target_q": first_last_fifth(targets)}


def success_p_value(agent: float, random: float, episodes: int) -> float:
    """One-sided Fisher exact test: is the agent's success count larger than the random policy's?"""
    wins_agent, wins_random = round(agent * episodes), round(random * episodes)
    table = [[wins_agent, episodes - wins_agent], [wins_random, episodes - wins_random]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def main() -> int:
    args = parse_args()
    task = get_task(args.task)
    kind = ensure_data(task, args.data_dir, args.data_episodes)
    agent = {"critic": args.critic, **({"size": args.size} if args.size else {})}
    config = TrainConfig.from_profile(task.name, args.profile, agent, steps=args.steps, seed=args.seed,
                                      eval_every=max(1, args.steps // 5), eval_episodes=args.eval_episodes,
                                      data_dir=args.data_dir, threads=args.threads)
    result = train(config, args.out, fresh=not args.resume, progress=sys.stdout.isatty())
    trends = td_trends(Path(args.out) / "metrics.jsonl")
    (first, last), (rel_first, rel_last) = trends["td_loss"], trends["relative_td_error"]
    rand = evaluate(random_policy(task.act_dim, args.seed), task, args.eval_episodes, seed=args.seed)
    numbers = {
        "task": task.name, "data_kind": kind, "critic": args.critic, "size": config.agent.size,
        "steps": result.steps, "td_loss_first_fifth": first, "td_loss_last_fifth": last,
        "relative_td_error_first_fifth": rel_first, "relative_td_error_last_fifth": rel_last,
        "success_tql": result.final_success, "success_random": rand.success_rate,
        "fisher_p": success_p_value(result.final_success, rand.success_rate, args.eval_episodes),
        "evals": result.evals, "train_seconds": result.wall_seconds, "threads": torch.get_num_threads(),
    }
    checks = {"relative TD error falls": rel_last < rel_first,
              "success > random": result.final_success > rand.success_rate}
    print(f"task {task.name} ({kind} data), critic {args.critic} {config.agent.size}, {result.steps} steps, "
          f"{result.wall_seconds:.0f}s of training")
    print(f"relative TD error (RMS TD error / |mean target|): first fifth {rel_first:.4f} -> last fifth "
          f"{rel_last:.4f}  (ratio {rel_last / rel_first:.3f})")
    print(f"raw TD loss: first fifth {first:.5f} -> last fifth {last:.5f}  (ratio {last / first:.3f}; grows with "
          f"the value scale, mean target {trends['target_q'][0]:.1f} -> {trends['target_q'][1]:.1f})")
    print("success by step: " + ", ".join(f"{e['step']}: {100 * e['success_rate']:.0f}%" for e in result.evals))
    print(f"final success {100 * result.final_success:.1f}% vs random policy {100 * rand.success_rate:.1f}% "
          f"over {args.eval_episodes} episodes (one-sided Fisher exact p = {numbers['fisher_p']:.3f})")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({**numbers, "checks": checks}, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
