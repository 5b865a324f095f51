"""Which PBT fitness signal ranks population members like their final success does?

For each task and seed, trains a population of K members with fixed, spread rho (no exploit,
so each member's final success is its own), records at every measurement both candidate
signals - minus the held-out TD error on the ``-val`` data (``val_td``) and success on a few
evaluation episodes with their own env seeds (``success``) - and at the end evaluates every
member on ``--eval-episodes`` episodes. Prints, per measurement step and signal:

- Spearman rank correlation between the signal and the final success (over members; undefined
  when every member ends with the same success: counted, not averaged);
- regret of selection: best final success minus the final success of the member the signal
  picks (always defined; 0 is a perfect pick).

    python -m benchmarks.learning.pbt_fitness --tasks scene-play-singletask-task1-v0 --seeds 0,1,2 \\
        --profile cpu --steps 2000 --members 4 --json benchmarks/learning/results/pbt_fitness.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks import common
from tql.batched.pbt import PopulationTrainer
from tql.io import read_jsonl
from tql.tasks import get_task
from tql.trainer import TrainConfig, TrainHooks


class FixedRhos(TrainHooks):
    def __init__(self, rhos: list[float], n_tokens: int):
        self.targets = [r * math.log(n_tokens) for r in rhos]

    def target_entropy(self, step, progress):
        return self.targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="scene-play-singletask-task1-v0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=None, help="measurement interval (default: profile's)")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--rho-low", type=float, default=0.2)
    parser.add_argument("--rho-high", type=float, default=1.0)
    parser.add_argument("--fitness-episodes", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--eval-max-steps", type=int, default=None)
    parser.add_argument("--data-episodes", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="runs/pbt_fitness")
    common.add_json_option(parser, "the runs, the scores and their summary")
    return parser.parse_args(argv)


def run_one(args, task: str, seed: int) -> dict:
    overrides = dict(steps=args.steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                     eval_max_steps=args.eval_max_steps, data_episodes=args.data_episodes)
    config = TrainConfig.from_profile(task, args.profile, seed=seed, data_dir=args.data_dir, make_data=True,
                                      threads=args.threads, **overrides)
    k = args.members
    rhos = [args.rho_low + (args.rho_high - args.rho_low) * i / (k - 1) for i in range(k)]
    out = Path(args.out) / task / f"seed-{seed}"
    trainer = PopulationTrainer(config, out, k, FixedRhos(rhos, get_task(task).n_tokens), fitness="success",
                                fitness_episodes=args.fitness_episodes, final_eval_all=True, progress=False)
    result = trainer.run()
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "fitness"]
    return {"task": task, "seed": seed, "rhos": rhos, "final_success": result.extra["members_success"],
            "measurements": [{"step": r["step"], "val_td": r["val_td"], "success": r["success"]} for r in rows],
            "wall_seconds": result.wall_seconds}


def scores(run: dict) -> list[dict]:
    final = np.array(run["final_success"])
    out = []
    for m in run["measurements"]:
        for signal, values in (("val_td", [-v for v in m["val_td"]]), ("success", m["success"])):
            values = np.array(values, dtype=float)
            defined = final.std() > 0 and values.std() > 0
            corr = float(spearmanr(values, final).statistic) if defined else None
            regret = float(final.max() - final[int(np.argmax(values))])
            out.append({"task": run["task"], "seed": run["seed"], "step": m["step"], "signal": signal,
                        "spearman": corr, "regret": regret})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    started = time.time()
    runs = [run_one(args, task, int(seed)) for task in args.tasks.split(",") for seed in args.seeds.split(",")]
    rows = [row for run in runs for row in scores(run)]
    print(f"\n{'task':40s} {'seed':>4s} {'step':>6s} {'signal':>8s} {'spearman':>9s} {'regret':>7s}")
    for r in rows:
        corr = "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}"
        print(f"{r['task']:40s} {r['seed']:4d} {r['step']:6d} {r['signal']:>8s} {corr:>9s} {r['regret']:7.3f}")
    for run in runs:
        print(f"final success {run['task']} seed {run['seed']}: "
              + ", ".join(f"rho {r:.2f}: {100 * s:.0f}%" for r, s in zip(run["rhos"], run["final_success"])))
    summary = {}
    for signal in ("val_td", "success"):
        mine = [r for r in rows if r["signal"] == signal]
        corrs = [r["spearman"] for r in mine if r["spearman"] is not None]
        summary[signal] = {"mean_spearman": statistics.fmean(corrs) if corrs else None,
                           "defined": len(corrs), "measurements": len(mine),
                           "mean_regret": statistics.fmean(r["regret"] for r in mine)}
        s = summary[signal]
        mean = "n/a" if s["mean_spearman"] is None else f"{s['mean_spearman']:+.2f}"
        print(f"{signal:>8s}: mean Spearman vs final success {mean} over {s['defined']}/{s['measurements']} "
              f"measurements where it is defined; mean regret of its pick {s['mean_regret']:.3f}")
    print(f"total wall time {time.time() - started:.0f}s")
    common.write_json(args.json, {"args": vars(args), "runs": runs, "rows": rows, "summary": summary}, __file__, argv,
                      header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
