"""Wall time of `tql-tune compare` with its runs in one process (`--workers 1`) vs one worker
process per core (`--workers W`), side by side in one run.

Both settings compare the same approaches on the same task, seeds and budget, each round in
fresh folders (nothing reused); rounds alternate which setting goes first, so drift in the
machine's load hits both alike. Printed: the median wall time per setting, the ratio

    speedup = t(--workers 1) / t(--workers W)

and whether the two settings' scores are equal (the same runs, trained in other processes).

    python -m benchmarks.speed.compare_workers --approaches default,feedback --seeds 2 \\
        --steps 500 --rounds 2 --json benchmarks/speed/results/compare_workers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-single-play-singletask-task1-v0")
    p.add_argument("--approaches", default="default,feedback")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--eval-episodes", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="W of the side-by-side setting")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data-dir", default="data")
    common.add_json_option(p)
    args = p.parse_args(argv)
    if args.workers < 2 or args.rounds < 1:
        p.error(f"--workers {args.workers} must be >= 2 and --rounds {args.rounds} >= 1")
    return args


def compare_once(args: argparse.Namespace, workers: int, out: Path) -> tuple[float, dict]:
    """Seconds of one comparison in ``out`` and its scores."""
    from autotune import api

    start = time.perf_counter()
    api.compare(args.task, approaches=args.approaches, seeds=args.seeds, profile=args.profile, steps=args.steps,
                eval_every=args.steps, eval_episodes=args.eval_episodes, out=out, data_dir=args.data_dir,
                workers=workers, reps=100)
    return time.perf_counter() - start, json.loads((out / "data.json").read_text())["scores"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    walls: dict[int, list[float]] = {1: [], args.workers: []}
    scores: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for workers in (list(walls) if r % 2 == 0 else list(reversed(walls))):
                wall, scores[workers] = compare_once(args, workers, Path(tmp) / f"w{workers}-r{r}")
                walls[workers].append(wall)
                print(f"round {r}: --workers {workers}: {wall:.1f} s", flush=True)
    median = {w: statistics.median(v) for w, v in walls.items()}
    runs = len(args.approaches.split(",")) * args.seeds
    print(f"task {args.task}, approaches {args.approaches}, {args.seeds} seeds ({runs} runs), profile "
          f"{args.profile} at {args.steps} steps, {args.eval_episodes} evaluation episodes at the end; median of "
          f"{args.rounds} round(s)")
    for workers, value in median.items():
        print(f"--workers {workers}: {value:7.1f} s  {median[1] / value:5.2f}x")
    same = scores[1] == scores[args.workers]
    print(f"scores equal: {same}")
    common.write_json(args.json, {"args": vars(args), "walls": walls, "median": median,
                                  "speedup": median[1] / median[args.workers], "scores_equal": same},
                      __file__, argv, header=header)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
