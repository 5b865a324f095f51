"""The engagement model (``tql.engagement.EngagementModel``) beside every measured point.

Reads the JSON files of ``engagement.py`` (free and control grids) and run folders of
`tql-tune train` (their metrics.jsonl), and prints, per run, the measured update and the
model's prediction: for free runs, when attention leaves uniform and falls below each rho;
for controlled runs, when the control first engages. ``--fit`` also fits the model's
constants to the points given (least squares on log updates; a point measured "never"
within its run counts only when predicted inside it) and prints the refit's predictions
beside the shipped model's.

    python -m benchmarks.learning.engagement_model --fit \\
        benchmarks/learning/results/engagement_free.json benchmarks/learning/results/engagement_control.json \\
        --runs benchmarks/learning/results/engaged_pair/rho0.5 benchmarks/learning/results/engaged_pair/rho0.9
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks import common
from tql.agent import AgentConfig
from tql.engagement import (MODEL, UNIFORM_MARGIN, EngagementModel, first_engagement,
                            learning_distance, predict_engagement)
from tql.io import read_jsonl
from tql.model import get_preset
from tql.tasks import get_task
from tql.trainer import TrainConfig

EPISODE_LENGTH = 1001  # engagement.py's generated episodes


@dataclasses.dataclass
class Point:
    """One measured event: a free run reaching ``rho`` log n, or a controlled run engaging."""

    run: str
    event: str
    config: AgentConfig
    steps: int
    rho: float
    log_n: float
    transitions: int
    measured: int | None

    def predict(self, model: EngagementModel) -> int | None:
        if self.event.startswith("free"):
            need = model.free_distance(self.config.critic_lr, self.transitions, self.rho, self.log_n,
                                       get_preset(self.config.size).dim)
            reached = np.flatnonzero(learning_distance(self.config, self.steps)[1:] >= need)
            return int(reached[0]) + 1 if reached.size else None
        return predict_engagement(self.config, self.steps, self.rho, self.log_n, self.transitions, model).engaged

    def loss(self, model: EngagementModel) -> float:
        predicted = self.predict(model)
        if self.measured is None:
            return 0.0 if predicted is None else max(0.0, math.log(self.steps / predicted)) ** 2
        if predicted is None:
            return math.log(1.2 * self.steps / self.measured) ** 2
        return math.log(predicted / self.measured) ** 2


def text(step: int | None) -> str:
    return "never" if step is None else f"{step:,}"


def free_points(data: dict) -> list[Point]:
    task, log_n, points = get_task(data["task"]), data["log_n"], []
    for run in data["runs"]:
        config = AgentConfig.for_task(task, size=run["size"], critic_lr=run["critic_lr"])
        events = [("free: leaves uniform", 1.0 - UNIFORM_MARGIN / log_n, run["summary"]["leaves_uniform"])]
        events += [(f"free: below rho {rho}", float(rho), step) for rho, step in run["summary"]["below"].items()]
        points += [Point(run["name"], event, config, run["steps"], rho, log_n, run["episodes"] * EPISODE_LENGTH,
                         measured) for event, rho, measured in events]
    return points


def control_points(data: dict) -> list[Point]:
    task, points = get_task(data["task"]), []
    for run in data["runs"]:
        config = AgentConfig.for_task(task, size=run["size"], critic_lr=run["critic_lr"], alpha_init=run["alpha_init"])
        name = run["name"] + ("" if "cube-double" in data["task"] else f" ({data['task'].split('-singletask')[0]})")
        points.append(Point(name, "control engages", config, run["steps"], run["rho"], data["log_n"],
                            run["episodes"] * EPISODE_LENGTH, run["summary"]["first_engaged"]))
    return points


def run_points(run_dir: Path) -> list[Point]:
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["train"])
    logged = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "train"]
    return [Point(str(run_dir), "control engages", config.agent, config.steps, config.highest_rho(),
                  config.spec.max_entropy, config.transitions, first_engagement(logged))]


FREE = ("leave_distance", "rate_exponent", "data_exponent", "width_exponent", "depth_rate")
PULL = ("pull", "pull_exponent", "pull_rate_exponent")
FITTED = FREE + PULL
POSITIVE = {"leave_distance", "pull"}  # fitted in log space


def fit_some(points: list[Point], start: EngagementModel, names: tuple[str, ...]) -> EngagementModel:
    """``names`` refitted to minimise the summed squared log error over ``points`` (Nelder-Mead)."""
    from scipy.optimize import minimize

    def model_of(x: np.ndarray) -> EngagementModel:
        return dataclasses.replace(start, **{n: math.exp(v) if n in POSITIVE else v for n, v in zip(names, x)})

    # Nelder-Mead's first steps are 5% of each start value: a constant at 0 starts at 0.5 instead.
    x0 = np.array([math.log(getattr(start, n)) if n in POSITIVE else getattr(start, n) or 0.5 for n in names])
    result = minimize(lambda x: sum(p.loss(model_of(x)) for p in points), x0, method="Nelder-Mead",
                      options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-6})
    return model_of(result.x)


def fit(points: list[Point], start: EngagementModel = MODEL) -> EngagementModel:
    """In two stages, so that neither half hides the other's errors: the free half's constants
    to the free runs, then the pull's to the controlled runs, the free half held."""
    free = fit_some([p for p in points if p.event.startswith("free")], start, FREE)
    return fit_some([p for p in points if not p.event.startswith("free")], free, PULL)


def constants(model: EngagementModel) -> str:
    return ", ".join(f"{name} {getattr(model, name):.4g}" for name in FITTED)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="*", help="JSON files written by engagement.py --json")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders of tql-tune train")
    parser.add_argument("--fit", action="store_true", help="also refit the constants to these points")
    args = parser.parse_args(argv)
    common.print_header(__file__, argv)
    points = []
    for path in args.grids:
        data = json.loads(Path(path).read_text())
        points += free_points(data) if data["args"]["grid"] == "free" else control_points(data)
    points += [p for run_dir in args.runs for p in run_points(Path(run_dir))]
    models = {"shipped": MODEL, **({"refit": fit(points)} if args.fit else {})}
    table = Table(title="engagement: measured vs predicted (tql.engagement.EngagementModel)")
    for column in ("run", "event", "measured", *(f"{name} model" for name in models)):
        table.add_column(column, justify="left" if column in ("run", "event") else "right")
    for point in points:
        table.add_row(point.run, point.event, text(point.measured), *(text(point.predict(m)) for m in models.values()))
    console = Console(width=200)
    console.print(table)
    for name, model in models.items():
        loss = sum(p.loss(model) for p in points)
        console.print(f"{name} model: {constants(model)}; summed squared log error {loss:.3f} over {len(points)} "
                      "points")
    print("measured: the first logged update (every 50 in engagement.py, every 100 in a cpu-profile run); "
          "never: not within the run")


if __name__ == "__main__":
    main()
