"""Learning check: on one generated task, the TD loss falls and TQL beats the random policy.

Slow (minutes), so it lives here and not in the unit suite. It generates the dataset if it is
missing, trains with the given profile, and prints the numbers side by side:

    python benchmarks/learning_check.py --task cube-single-play-singletask-task1-v0 --steps 5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

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
    return parser.parse_args()


def ensure_data(task, data_dir: str, episodes: int) -> str:
    try:
        return load_task_data(task, data_dir).kind
    except MissingDatasetError:
        generate_dataset(task, data_dir, episodes=episodes, seed=0)
        return "generated"


def td_loss_trend(metrics_path: Path) -> tuple[float, float]:
    """Mean TD loss over the first and the last fifth of the logged steps."""
    losses = [r["critic/td_loss"] for r in read_jsonl(metrics_path) if r["type"] == "train"]
    k = max(1, len(losses) // 5)
    return statistics.mean(losses[:k]), statistics.mean(losses[-k:])


def main() -> int:
    args = parse_args()
    task = get_task(args.task)
    kind = ensure_data(task, args.data_dir, args.data_episodes)
    agent = {"critic": args.critic, **({"size": args.size} if args.size else {})}
    config = TrainConfig.from_profile(task.name, args.profile, agent, steps=args.steps, seed=args.seed,
                                      eval_every=max(1, args.steps // 5), eval_episodes=args.eval_episodes,
                                      data_dir=args.data_dir, threads=args.threads)
    started = time.perf_counter()
    result = train(config, args.out, fresh=True, progress=sys.stdout.isatty())
    first, last = td_loss_trend(Path(args.out) / "metrics.jsonl")
    rand = evaluate(random_policy(task.act_dim, args.seed), task, args.eval_episodes, seed=args.seed)
    numbers = {
        "task": task.name, "data_kind": kind, "critic": args.critic, "size": config.agent.size,
        "steps": result.steps, "td_loss_first_fifth": first, "td_loss_last_fifth": last,
        "success_tql": result.final_success, "success_random": rand.success_rate,
        "evals": result.evals, "seconds": time.perf_counter() - started, "threads": torch.get_num_threads(),
    }
    checks = {"td loss falls": last < first, "success > random": result.final_success > rand.success_rate}
    print(f"task {task.name} ({kind} data), critic {args.critic} {config.agent.size}, {result.steps} steps, "
          f"{numbers['seconds']:.0f}s")
    print(f"TD loss: first fifth {first:.5f} -> last fifth {last:.5f}  (ratio {last / first:.3f})")
    print("success by step: " + ", ".join(f"{e['step']}: {100 * e['success_rate']:.0f}%" for e in result.evals))
    print(f"final success {100 * result.final_success:.1f}% vs random policy {100 * rand.success_rate:.1f}% "
          f"over {args.eval_episodes} episodes")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({**numbers, "checks": checks}, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
