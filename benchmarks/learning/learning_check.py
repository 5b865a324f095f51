"""Learning check: on one generated task, the TD error falls and TQL beats the random policy.

Slow (minutes), so it lives here and not in the unit suite. It generates the dataset if it is
missing, trains with the given profile for every (agent settings, seed) pair - e.g. the
published settings beside tql-tune 0.1's, on the same data, steps and seeds - and prints the
numbers side by side:

    python -m benchmarks.learning.learning_check --task cube-single-play-singletask-task1-v0 --steps 30000
    python -m benchmarks.learning.learning_check --settings published,small-alpha --seeds 0,1 --jobs 2 --steps 10000

``small-alpha`` runs tql-tune 0.1 exactly: its settings and its critic preset (``0.03M-v1`` for
the CPU profiles' ``0.03M``).

Which TD error: with rewards of -1 per step and gamma 0.99, the values start near 0 and move
toward about -100 while training propagates them, so the raw squared TD error grows with the
square of the value scale even while the critic fits better. The check therefore compares the
scale-free relative TD error, RMS TD error / |mean TD target| (per logged step), over the first
and last fifth of training; the raw TD loss is printed beside it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from scipy.stats import fisher_exact

from autotune.tuning.trials import resolve_workers
from benchmarks import common
from benchmarks.learning.side_by_side import side_by_side
from tql.data import generate_dataset, load_task_data
from tql.errors import ConfigError, MissingDatasetError
from tql.evaluation import evaluate, random_policy
from tql.io import read_jsonl
from tql.tasks import get_task
from tql.trainer import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single-play-singletask-task1-v0")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--size", default=None, help="critic preset (default: the profile's)")
    parser.add_argument("--critic", default="tql", choices=["tql", "mlp"])
    parser.add_argument("--settings", default="published", help="comma list of: published, fql, small-alpha")
    parser.add_argument("--seeds", default="0", help="comma list of seeds (every settings runs each)")
    parser.add_argument("--jobs", default="auto",
                        help="runs trained at once, processes of one thread (auto: one per core, at most one per run)")
    parser.add_argument("--data-episodes", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (with --jobs 1)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="runs/learning_check")
    common.add_json_option(parser, "the numbers")
    parser.add_argument("--resume", action="store_true",
                        help="continue (or reuse, if finished) the runs in --out instead of starting afresh")
    return parser.parse_args(argv)


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


def agent_options(args, settings: str) -> dict:
    from autotune.agent_options import agent_overrides
    from tql.model import LEGACY_PRESETS
    from tql.trainer import PROFILES

    agent = {"critic": args.critic, **agent_overrides(settings)}
    size = args.size or PROFILES[args.profile]["agent"].get("size", "0.4M")
    agent["size"] = LEGACY_PRESETS.get(size, size) if settings == "small-alpha" else size
    return agent


def run_one(args, settings: str, seed: int) -> dict:
    """Train one (settings, seed) run and measure it against the random policy."""
    task = get_task(args.task)
    threads = args.threads if args.jobs == 1 else 1
    config = TrainConfig.from_profile(task.name, args.profile, agent_options(args, settings), steps=args.steps,
                                      seed=seed, eval_every=max(1, args.steps // 5), eval_episodes=args.eval_episodes,
                                      data_dir=args.data_dir, threads=threads)
    out = Path(args.out) / f"{settings}-seed{seed}"
    result = train(config, out, fresh=not args.resume, progress=sys.stdout.isatty() and args.jobs == 1)
    trends = td_trends(out / "metrics.jsonl")
    (first, last), (rel_first, rel_last) = trends["td_loss"], trends["relative_td_error"]
    rand = evaluate(random_policy(task.act_dim, seed), task, args.eval_episodes, seed=seed)
    return {
        "settings": settings, "seed": seed, "critic": args.critic, "size": config.agent.size,
        "steps": result.steps, "td_loss_first_fifth": first, "td_loss_last_fifth": last,
        "relative_td_error_first_fifth": rel_first, "relative_td_error_last_fifth": rel_last,
        "target_q_first_fifth": trends["target_q"][0], "target_q_last_fifth": trends["target_q"][1],
        "success_tql": result.final_success, "success_random": rand.success_rate,
        "fisher_p": success_p_value(result.final_success, rand.success_rate, args.eval_episodes),
        "evals": result.evals, "train_seconds": result.wall_seconds, "threads": threads,
    }


def run_pairs(args) -> list[tuple[str, int]]:
    return [(settings.strip(), int(seed)) for settings in args.settings.split(",") for seed in args.seeds.split(",")]


def run_all(args) -> list[dict]:
    return side_by_side(args, run_one, run_pairs(args))


def print_runs(task, kind: str, runs: list[dict], episodes: int) -> dict[str, bool]:
    print(f"task {task.name} ({kind} data), {runs[0]['steps']} steps, {episodes} evaluation episodes per run")
    checks = {}
    for run in runs:
        name = f"{run['settings']} seed {run['seed']} ({run['critic']} {run['size']})"
        print(f"{name}: {run['train_seconds']:.0f}s; relative TD error {run['relative_td_error_first_fifth']:.4f} -> "
              f"{run['relative_td_error_last_fifth']:.4f}; raw TD loss {run['td_loss_first_fifth']:.4f} -> "
              f"{run['td_loss_last_fifth']:.4f} (mean target {run['target_q_first_fifth']:.1f} -> "
              f"{run['target_q_last_fifth']:.1f}); success by step "
              + ", ".join(f"{e['step']}: {100 * e['success_rate']:.0f}%" for e in run["evals"])
              + f"; final {100 * run['success_tql']:.0f}% vs random {100 * run['success_random']:.0f}% "
                f"(one-sided Fisher p = {run['fisher_p']:.3f})")
        checks[f"{name}: relative TD error falls"] = run["relative_td_error_last_fifth"] < \
            run["relative_td_error_first_fifth"]
        checks[f"{name}: success > random"] = run["success_tql"] > run["success_random"]
    for settings in dict.fromkeys(r["settings"] for r in runs):
        mine = [r for r in runs if r["settings"] == settings]
        print(f"{settings}: mean final success {100 * statistics.fmean(r['success_tql'] for r in mine):.1f}% over "
              f"{len(mine)} seed(s)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # a bad --jobs fails in one line, before any data or run
        args.jobs = resolve_workers(args.jobs, "auto", len(run_pairs(args)), args.threads, option="--jobs")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    header = common.print_header(__file__, argv)
    task = get_task(args.task)
    kind = ensure_data(task, args.data_dir, args.data_episodes)
    runs = run_all(args)
    checks = print_runs(task, kind, runs, args.eval_episodes)
    common.write_json(args.json, {"task": task.name, "data_kind": kind, "runs": runs, "checks": checks}, __file__, argv,
                      header=header)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
