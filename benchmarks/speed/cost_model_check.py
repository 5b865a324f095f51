"""The experiment cost model's estimate of one run against the runs an experiment trained.

Reads a finished experiment's folder (its plan.json and every run's summary.json) and prints,
per phase, the estimated seconds of one run at the plan's steps, as the model prices it now
(compiled runs from ``Machine.compile_min_steps``, ``autotune.experiment.probe.update_rates``)
and without the compiled rates (every run at the probe's eager rate, as plan.json's machine
says when it predates them), beside the median and quartiles of the runs' measured
``wall_seconds``. The machine's speeds are the ones the experiment's probe measured.

    python -m benchmarks.speed.cost_model_check --out runs/experiment-engaged \\
        --spec studies/experiment_engaged.toml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the experiment's --out folder")
    p.add_argument("--spec", required=True, help="the experiment spec it ran")
    return p.parse_args(argv)


def measured_walls(out: Path) -> dict[str, list[float]]:
    """Every run's wall seconds by the cost model's phase names."""
    def walls(pattern: str) -> list[float]:
        return [json.loads(path.read_text())["wall_seconds"] for path in sorted(out.glob(pattern))]

    return {"study tuned": walls("studies/tuned/*/*/*/summary.json"),
            "study layers": walls("studies/layers/*/*/*/summary.json"),
            "compare": [w for path in sorted((out / "runs").iterdir()) if path.name not in ("population", "_batches")
                        for w in walls(f"runs/{path.name}/*/*/summary.json")],
            "compare population": walls("runs/population/*/*/summary.json")}


def main(argv: list[str] | None = None) -> int:
    import torch

    from autotune.experiment.plan import phase_work
    from autotune.experiment.probe import update_rates
    from autotune.experiment.spec import Machine, load_experiment

    args = parse_args(argv)
    common.print_header(__file__, argv)
    out = Path(args.out)
    saved = json.loads((out / "plan.json").read_text())
    fields = {f.name for f in dataclasses.fields(Machine)}
    # workers=1: one run's seconds, not its share of a phase's wall time
    probed = dataclasses.replace(Machine(**{k: v for k, v in saved["machine_here"].items() if k in fields}), workers=1)
    eager_only = dataclasses.replace(probed, compile_min_steps=0)
    now = dataclasses.replace(probed, **update_rates(probed.updates_per_second, torch.device("cpu")))
    spec = load_experiment(args.spec)
    _, _, _, phases, _ = phase_work(spec, probed, 0, 1, False)
    steps = saved["steps"]
    walls = measured_walls(out)
    print(f"{out}: {steps} steps per run; probe {probed.updates_per_second} eager updates/s, priced compiled at "
          f"{now.compiled_updates_per_second} from {now.compile_min_steps} steps, +{now.compile_seconds} s per run")
    print("| phase | runs measured | estimate, eager rates | estimate, now | measured median [quartiles] |")
    print("|---|---|---|---|---|")
    for phase in phases:
        runs = walls.get(phase.name, [])
        if len(runs) < 2:
            continue
        q = statistics.quantiles(runs, n=4)
        print(f"| {phase.name} | {len(runs)} | {phase.seconds(eager_only, steps) / phase.jobs:.0f} s | "
              f"{phase.seconds(now, steps) / phase.jobs:.0f} s | {statistics.median(runs):.0f} s "
              f"[{q[0]:.0f}, {q[2]:.0f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
