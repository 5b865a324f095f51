"""Learning-curve sweep: where does success leave zero first, and after how many updates?

For each task, the published TQL configuration (``targets='published'``, docs/published.md) and
FQL's MLP critic each train ``--seeds`` seeds as one batched population
(``tql.batched.batch_runs``), evaluated ``--evals`` times along the way. All populations train the
same number of updates, so the curves of one task compare at equal steps.

Budgeted by wall time: a probe times each population's update and one evaluation on this
machine, then the step budget is the largest (multiple of ``--evals``) that fits
``--minutes`` in total, probe and data generation included. The populations train side by side
in ``--jobs`` processes of one thread each (default ``auto``: one per core, at most one per
population; 1 on a GPU), as ``tql-tune run --workers auto`` trains trials: then the probes run
side by side too, and the budget prices each process's share of the populations. The curves are learning curves
of runs of that length (the learning-rate schedule spans the whole run), not of shorter runs.

Prints, per task and critic, mean success (and its spread over seeds) at each evaluation and
the first step at which the mean leaves zero; writes the numbers (``--json``) and a plot of
success vs steps with a 95% band over seeds (``--png``)::

    python -m benchmarks.learning.learning_curves --tasks cube-single-play-singletask-task1-v0,scene-play-singletask-task1-v0 \\
        --minutes 60 --json benchmarks/learning/results/learning_curves.json --png benchmarks/learning/results/learning_curves.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

from autotune.tuning.trials import resolve_workers
from benchmarks import common
from benchmarks.learning.side_by_side import side_by_side
from tql.batched.batch_runs import BatchMember, BatchTrainer
from tql.data import available_cpus, generate_dataset, load_task_data
from tql.errors import ConfigError, MissingDatasetError
from tql.model import get_preset
from tql.targets import PUBLISHED_TARGETS, published_targets
from tql.tasks import get_task
from tql.trainer import TrainConfig

CRITICS = {"tql": "published TQL (per-layer published targets)", "mlp": "FQL MLP critic"}
PROBE_UPDATES = 12  # timed updates per population, after WARMUP untimed ones
WARMUP = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="cube-single-play-singletask-task1-v0,scene-play-singletask-task1-v0")
    parser.add_argument("--critics", default="tql,mlp", help=f"comma list of: {', '.join(CRITICS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (task, critic): one population")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of the whole sweep")
    parser.add_argument("--steps", type=int, default=None, help="fixed step budget (skips the sizing)")
    parser.add_argument("--evals", type=int, default=8, help="evaluations along each run")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--profile", default="cpu", help="training profile of the agent (batch, sizes)")
    parser.add_argument("--data-episodes", type=int, default=None, help="episodes to generate when data is missing")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of one population")
    parser.add_argument("--jobs", default="auto",
                        help="populations trained at once, processes of one thread (auto: one per core; 1 on a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/learning_curves")
    common.add_json_option(parser, "the curves, probes and budget")
    parser.add_argument("--png", default=None)
    parser.add_argument("--merge", default=None,
                        help="comma list of --json files of earlier sweeps (e.g. run side by side, one task each): "
                             "print and plot them together instead of training")
    args = parser.parse_args(argv)
    bad = [c for c in args.critics.split(",") if c not in CRITICS]
    if bad:
        parser.error(f"--critics {bad[0]!r} is not one of: {', '.join(CRITICS)}")
    if args.seeds < 1 or args.evals < 1 or args.minutes <= 0:
        parser.error("--seeds, --evals and --minutes must be positive")
    return args


def published_h_bar(task: str, profile: str) -> dict:
    """The published targets of the task's domain; a domain without any (cube-single) takes
    cube-double's as fractions of log n (the nearest published domain: one cube fewer)."""
    spec = get_task(task)
    if any(spec.env_base == env for env in PUBLISHED_TARGETS):
        return {"targets": "published"}
    depth = get_preset(TrainConfig.from_profile(task, profile).agent.size).depth
    donor = get_task("cube-double-play-singletask-task1-v0").max_entropy
    return {"rho": [[h / donor for h in row] for row in published_targets("cube-double", depth, donor)]}


def member_config(args, task: str, critic: str, seed: int, steps: int, eval_every: int) -> TrainConfig:
    agent = {"critic": critic}
    h_bar = published_h_bar(task, args.profile) if critic == "tql" else {}
    return TrainConfig.from_profile(task, args.profile, agent, steps=steps, seed=seed, **h_bar,
                                    eval_every=eval_every, eval_episodes=args.eval_episodes,
                                    checkpoint_every=max(eval_every, 1), data_dir=args.data_dir,
                                    threads=args.threads, device=args.device, make_data=False,
                                    eval_workers=1 if args.jobs > 1 else "auto")


def members(args, task: str, critic: str, steps: int, eval_every: int, root: Path) -> list[BatchMember]:
    return [BatchMember(member_config(args, task, critic, seed, steps, eval_every),
                        root / task / critic / f"seed-{seed}") for seed in range(args.seeds)]


def ensure_data(args, task: str) -> dict:
    """The task's dataset (generated with the profile's size when missing): kind and size."""
    spec = get_task(task)
    try:
        data = load_task_data(spec, args.data_dir)
    except MissingDatasetError:
        episodes = args.data_episodes or TrainConfig.from_profile(task, args.profile).data_episodes
        print(f"generating {episodes} episodes for {spec.domain} (generated data)", flush=True)
        generate_dataset(spec, args.data_dir, episodes=episodes, seed=0, workers=available_cpus())
        data = load_task_data(spec, args.data_dir)
    return {"kind": data.kind, "transitions": data.transitions, "episodes": data.episodes}


def probe(args, task: str, critic: str, root: Path) -> dict:
    """Seconds per population update and per member evaluation (its share of all members evaluated together)."""
    trainer = BatchTrainer(members(args, task, critic, 1000, 1000, root / "_probe"), root / "_probe" / task / critic,
                           fresh=True, progress=False)
    for _ in range(WARMUP):
        trainer.update(trainer.targets_at(0))
    start = time.perf_counter()
    for _ in range(PROBE_UPDATES):
        trainer.update(trainer.targets_at(0))
    update = (time.perf_counter() - start) / PROBE_UPDATES
    times, everyone = [], list(range(len(trainer.members)))
    for _ in range(2):  # the first also builds the environments (once per population)
        start = time.perf_counter()
        trainer.evaluate_members(everyone)  # untrained policies run full-length episodes: an upper bound
        times.append(time.perf_counter() - start)
    trainer.close_evaluator()
    return {"update_seconds": update, "eval_seconds_per_member": times[1] / len(everyone),
            "env_setup_seconds": times[0] - times[1]}


def worker_loads(costs: list[float], workers: int) -> list[list[int]]:
    """Which populations each of ``workers`` processes trains: the costliest first, each to the
    least loaded process (a pool hands the next population to the first process free)."""
    loads, assigned = [0.0] * workers, [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = loads.index(min(loads))
        loads[w] += costs[i]
        assigned[w].append(i)
    return assigned


def step_budget(args, probes: dict, seconds_left: float) -> int:
    """The largest multiple of ``--evals`` steps whose estimated time fits ``seconds_left``:
    the busiest of the ``--jobs`` processes, its populations' updates and evaluations."""
    per_step = [p["update_seconds"] for p in probes.values()]
    evals = [args.evals * args.seeds * p["eval_seconds_per_member"] + p["env_setup_seconds"] for p in probes.values()]
    assigned = worker_loads(per_step, args.jobs)
    slowest = max(sum(per_step[i] for i in group) for group in assigned)
    eval_time = max(sum(evals[i] for i in group) for group in assigned)
    steps = int(max(seconds_left - eval_time, 0.0) / slowest)
    return max(args.evals, steps - steps % args.evals)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean over seeds and its 95% t-interval (collapses to the mean with one seed or no spread)."""
    mean = statistics.fmean(values)
    if len(values) < 2 or statistics.pstdev(values) == 0.0:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(mean - half, 0.0), min(mean + half, 1.0)


def curve(outcomes) -> dict:
    """Success per evaluation step over the population's seeds."""
    runs = [o.result.evals for o in outcomes if o.result is not None]
    steps = [e["step"] for e in runs[0]]
    points = []
    for k, step in enumerate(steps):
        values = [run[k]["success_rate"] for run in runs if len(run) > k]
        mean, low, high = mean_ci(values)
        points.append({"step": step, "mean": mean, "low": low, "high": high, "per_seed": values})
    first = next((p["step"] for p in points if p["mean"] > 0), None)
    return {"points": points, "first_nonzero_step": first, "diverged": sum(o.result is None for o in outcomes)}


def train_population(args, task: str, critic: str, steps: int, root: Path) -> dict:
    eval_every = steps // args.evals
    root = root / f"{steps}-steps"  # a re-run with the same budget resumes; another budget starts afresh
    trainer = BatchTrainer(members(args, task, critic, steps, eval_every, root), root / "_batches" / task / critic,
                           progress=sys.stdout.isatty() and args.jobs == 1)
    start = time.perf_counter()
    result = curve(trainer.run())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def print_curve(task: str, critic: str, result: dict) -> None:
    cells = ", ".join(f"{p['step']}: {100 * p['mean']:.0f}%"
                      + (f" {[round(100 * v) for v in p['per_seed']]}" if max(p["per_seed"]) > 0 else "")
                      for p in result["points"])
    first = result["first_nonzero_step"]
    print(f"{task} {critic}: {cells}; leaves zero at {first if first else 'never'} "
          f"({result['wall_seconds']:.0f}s)", flush=True)


def first_to_leave_zero(results: dict) -> str:
    """The (task, critic) whose mean success left zero at the fewest steps, or that none did."""
    firsts = [(r["first_nonzero_step"], t, c) for t, by in results.items() for c, r in by.items()
              if r["first_nonzero_step"]]
    if firsts:
        step, task, critic = min(firsts)
        return f"first to leave zero: {task} ({critic}) at step {step}"
    budgets = ", ".join(f"{t}: {max(p['step'] for r in by.values() for p in r['points'])} steps"
                        for t, by in results.items())
    return f"no task left zero for any critic ({budgets})"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for critic, result in results[task].items():
            xs = [p["step"] for p in result["points"]]
            ax.plot(xs, [100 * p["mean"] for p in result["points"]], marker="o", label=CRITICS[critic])
            ax.fill_between(xs, [100 * p["low"] for p in result["points"]], [100 * p["high"] for p in result["points"]],
                            alpha=0.2)
        ax.set_title(task.replace("-singletask", ""), fontsize=9)
        ax.set_xlabel("training steps")
        ax.set_ylabel("success (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merge(args, argv: list[str] | None, header: dict[str, str]) -> None:
    """One table and one plot from sweeps that ran as separate processes (one task set each)."""
    saved = [json.loads(Path(path).read_text()) for path in args.merge.split(",")]
    records = [record for data in saved for record in data.get("merged", [data])]  # a merged file: its sweeps
    results = {task: by_critic for record in records for task, by_critic in record["results"].items()}
    for record in records:
        # each sweep's own header (older files: only the command)
        for line in common.header_lines(record["header"]) if "header" in record else [f"$ {record['command']}"]:
            print(line)
        print(f"  {record['steps']} steps per run, {record['wall_minutes']:.0f} min; data: {record['data']}")
        for name, p in record["probes"].items():
            print(f"  probe {name} x{record['seeds']}: {1000 * p['update_seconds']:.0f} ms/update, "
                  f"{p['eval_seconds_per_member']:.1f} s per member evaluation")
    for task, by_critic in results.items():
        for critic, result in by_critic.items():
            print_curve(task, critic, result)
    print(first_to_leave_zero(results))
    common.write_json(args.json, {"merged": records}, __file__, argv, header=header)
    if args.png:
        plot(results, args.png)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        merge(args, argv, common.print_header(__file__, argv))
        return 0
    start = time.perf_counter()
    tasks, critics = [t.strip() for t in args.tasks.split(",") if t.strip()], args.critics.split(",")
    pairs = [(t, c) for t in tasks for c in critics]
    try:  # a bad --jobs fails in one line, before any data or run
        args.jobs = resolve_workers(args.jobs, args.device, len(pairs), args.threads, option="--jobs")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    header = common.print_header(__file__, argv)
    if args.jobs > 1:
        args.threads = 1
    root = Path(args.out)
    data = {task: ensure_data(args, task) for task in tasks}
    probes = dict(zip(pairs, side_by_side(args, probe, [(t, c, root) for t, c in pairs])))
    for (task, critic), p in probes.items():
        print(f"probe {task} {critic} x{args.seeds}: {1000 * p['update_seconds']:.0f} ms/update, "
              f"{p['eval_seconds_per_member']:.1f} s per member evaluation", flush=True)
    steps = args.steps or step_budget(args, probes, 60 * args.minutes - (time.perf_counter() - start))
    print(f"step budget: {steps} updates per run, {args.evals} evaluations of {args.eval_episodes} episodes; "
          f"{args.jobs} population(s) at once", flush=True)
    results: dict = {task: {} for task in tasks}
    trained = side_by_side(args, train_population, [(t, c, steps, root) for t, c in pairs])
    for (task, critic), result in zip(pairs, trained):
        results[task][critic] = result
        print_curve(task, critic, result)
    print(first_to_leave_zero(results))
    record = {"steps": steps, "seeds": args.seeds, "profile": args.profile, "jobs": args.jobs,
              "eval_episodes": args.eval_episodes, "data": data, "wall_minutes": (time.perf_counter() - start) / 60,
              "probes": {f"{t} {c}": p for (t, c), p in probes.items()}, "results": results}
    common.write_json(args.json, record, __file__, argv, header=header)
    if args.png:
        plot(results, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
