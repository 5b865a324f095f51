"""`tql-tune experiment` sized to one budget with its runs in one process (`--workers 1`) vs
one worker process per core (`--workers W`), side by side in one run: the updates the budget
buys, and how close the cost model's estimate of each phase came to its measured minutes.

Each setting runs the whole experiment (the spec's `[dry_run]` size unless `--full`) with
`--budget-minutes B`: its probe measures this machine as the runs will go (W runs at once for
`--workers W`), the plan fits its steps per run to B, then data, studies and comparison run.
The data is generated once before the rounds, so no setting pays for it. Rounds alternate
which setting goes first. Printed per setting (medians over rounds): the steps per run the plan
chose, the member updates trained, the wall time, updates per wall minute and its ratio

    speedup = (updates / minute with --workers W) / (updates / minute with --workers 1)

and per phase the estimated and measured minutes.

    python -m benchmarks.speed.experiment_workers --budget-minutes 4 --rounds 1 \\
        --json benchmarks/speed/results/experiment_workers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(common.ROOT / "studies" / "experiment.toml"))
    p.add_argument("--full", action="store_true", help="the spec's full size, not its [dry_run]")
    p.add_argument("--budget-minutes", type=float, default=4.0)
    p.add_argument("--workers", type=int, default=2, help="W of the side-by-side setting")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--data-dir", help="datasets (default: a temporary folder, generated first)")
    common.add_json_option(p)
    args = p.parse_args(argv)
    if args.workers < 2 or args.rounds < 1 or not args.budget_minutes > 0:
        p.error(f"--workers {args.workers} must be >= 2, --rounds {args.rounds} >= 1, --budget-minutes > 0")
    return args


def make_data(args: argparse.Namespace, data_dir: Path) -> None:
    """Every domain's dataset at the experiment's size, before any setting is timed."""
    from autotune.experiment.plan import data_size, missing_domains
    from autotune.experiment.spec import load_experiment
    from tql.data import available_cpus
    from tql.data.provision import provide_task_data

    spec = load_experiment(args.spec)
    spec = spec if args.full else spec.for_dry_run()
    for task in missing_domains(spec, data_dir):
        provide_task_data(task, data_dir, "auto", data_size(spec), make_data=True, say=print, profile=spec.profile,
                          progress=False, workers=available_cpus())


def experiment_once(args: argparse.Namespace, workers: int, out: Path, data_dir: Path) -> dict:
    """One whole experiment in ``out``: its wall seconds and what its plan.json says."""
    command = [sys.executable, "-m", "autotune.cli", "experiment", "--spec", args.spec, "--budget-minutes",
               str(args.budget_minutes), "--workers", str(workers), "--out", str(out), "--data-dir", str(data_dir),
               "--device", "cpu", "--reps", "100"] + ([] if args.full else ["--dry-run"])
    start = time.perf_counter()
    done = subprocess.run(command, cwd=common.ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    plan = json.loads((out / "plan.json").read_text())
    return {"wall": wall, "steps": plan["steps"], "machine": plan["machine_here"],
            "updates": sum(p["member_updates"] for p in plan["phases"]),
            "estimated": {p["phase"]: p["minutes_here"] for p in plan["phases"]},
            "measured": plan["measured_minutes"]}


def measured_name(phase: str) -> str:
    """plan.json measures the comparison as one phase; the cost model has two rows for it."""
    return "compare" if phase.startswith("compare") else phase


def estimated_minutes(run: dict, name: str) -> float:
    return sum(minutes for phase, minutes in run["estimated"].items() if measured_name(phase) == name)


def summarize(runs: list[dict]) -> dict:
    median = {key: statistics.median(run[key] for run in runs) for key in ("wall", "steps", "updates")}
    median["updates_per_minute"] = statistics.median(run["updates"] / (run["wall"] / 60) for run in runs)
    names = dict.fromkeys(measured_name(phase) for phase in runs[0]["estimated"])
    median["phases"] = {name: {"estimated": statistics.median(estimated_minutes(run, name) for run in runs),
                               "measured": statistics.median(run["measured"].get(name, 0.0) for run in runs)}
                        for name in names}
    return median


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    settings = [1, args.workers]
    runs: dict[int, list[dict]] = {w: [] for w in settings}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or Path(tmp) / "data")
        make_data(args, data_dir)
        for r in range(args.rounds):
            for workers in (settings if r % 2 == 0 else list(reversed(settings))):
                run = experiment_once(args, workers, Path(tmp) / f"w{workers}-r{r}", data_dir)
                runs[workers].append(run)
                print(f"round {r}: --workers {workers}: {run['wall']:.1f} s, {run['steps']} steps per run, "
                      f"{run['updates']:,} member updates; probe {run['machine']['updates_per_second']} updates/s "
                      "per run", flush=True)
    result = {w: summarize(v) for w, v in runs.items()}
    size = "full" if args.full else "[dry_run]"
    print(f"experiment {args.spec} ({size}), --budget-minutes {args.budget_minutes:g}; median of "
          f"{args.rounds} round(s)")
    print("| setting | steps per run | member updates | wall s | updates per wall minute | vs --workers 1 |")
    print("|---|---|---|---|---|---|")
    for workers, value in result.items():
        print(f"| --workers {workers} | {value['steps']:.0f} | {value['updates']:,.0f} | {value['wall']:.1f} | "
              f"{value['updates_per_minute']:,.0f} | "
              f"{value['updates_per_minute'] / result[1]['updates_per_minute']:.2f}x |")
    print("| setting | phase | estimated min | measured min | measured / estimated |")
    print("|---|---|---|---|---|")
    for workers, value in result.items():
        for phase, minutes in value["phases"].items():
            ratio = minutes["measured"] / minutes["estimated"] if minutes["estimated"] else float("nan")
            print(f"| --workers {workers} | {phase} | {minutes['estimated']:.2f} | {minutes['measured']:.2f} | "
                  f"{ratio:.2f} |")
    common.write_json(args.json, {"args": vars(args), "runs": runs, "median": result}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
