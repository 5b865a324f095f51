"""The engagement model (``tql.engagement.EngagementModel``) beside every measured point.

Reads the JSON files of ``engagement.py`` (free and control grids) and run folders of
`tql-tune train` (their metrics.jsonl), and prints, per run, the measured update and the
model's prediction: for free runs, when attention leaves uniform and falls below each rho;
for controlled runs, when the control first engages.

    python benchmarks/learning/engagement_model.py \\
        benchmarks/learning/results/engagement_free.json benchmarks/learning/results/engagement_control.json \\
        --runs benchmarks/learning/results/engaged_pair/rho0.5 benchmarks/learning/results/engaged_pair/rho0.9
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tql.agent import AgentConfig  # noqa: E402
from tql.engagement import (MODEL, UNIFORM_MARGIN, first_engagement, learning_distance,  # noqa: E402
                            predict_engagement)
from tql.io import read_jsonl  # noqa: E402
from tql.tasks import get_task  # noqa: E402
from tql.trainer import TrainConfig  # noqa: E402

EPISODE_LENGTH = 1001  # engagement.py's generated episodes


def free_prediction(config: AgentConfig, steps: int, transitions: int, rho: float, log_n: float) -> int | None:
    need = MODEL.free_distance(config.critic_lr, transitions, rho, log_n)
    reached = np.flatnonzero(learning_distance(config, steps)[1:] >= need)
    return int(reached[0]) + 1 if reached.size else None


def text(step: int | None) -> str:
    return "never" if step is None else f"{step:,}"


def free_rows(data: dict) -> list[tuple]:
    task, log_n, rows = get_task(data["task"]), data["log_n"], []
    for run in data["runs"]:
        config = AgentConfig.for_task(task, size=run["size"], critic_lr=run["critic_lr"])
        transitions = run["episodes"] * EPISODE_LENGTH
        points = [("leaves uniform", 1.0 - UNIFORM_MARGIN / log_n, run["summary"]["leaves_uniform"])]
        points += [(f"below rho {rho}", float(rho), step) for rho, step in run["summary"]["below"].items()]
        for what, rho, measured in points:
            predicted = free_prediction(config, run["steps"], transitions, rho, log_n)
            rows.append((run["name"], "free: " + what, text(measured), text(predicted)))
    return rows


def control_rows(data: dict) -> list[tuple]:
    task, rows = get_task(data["task"]), []
    for run in data["runs"]:
        config = AgentConfig.for_task(task, size=run["size"], critic_lr=run["critic_lr"], alpha_init=run["alpha_init"])
        predicted = predict_engagement(config, run["steps"], run["rho"], data["log_n"],
                                       run["episodes"] * EPISODE_LENGTH)
        rows.append((run["name"], "control engages", text(run["summary"]["first_engaged"]), text(predicted.engaged)))
    return rows


def run_rows(run_dir: Path) -> list[tuple]:
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["train"])
    logged = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "train"]
    predicted = config.engagement()
    return [(str(run_dir), "control engages", text(first_engagement(logged)), text(predicted.engaged))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="*", help="JSON files written by engagement.py --json")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders of tql-tune train")
    args = parser.parse_args(argv)
    table = Table(title=f"engagement: measured vs predicted (tql.engagement.EngagementModel: {MODEL})")
    for column in ("run", "event", "measured", "predicted"):
        table.add_column(column, justify="left" if column in ("run", "event") else "right")
    for path in args.grids:
        data = json.loads(Path(path).read_text())
        rows = free_rows(data) if data["args"]["grid"] == "free" else control_rows(data)
        for row in rows:
            table.add_row(*row)
    for run_dir in args.runs:
        for row in run_rows(Path(run_dir)):
            table.add_row(*row)
    Console(width=200).print(table)
    print("measured: the first logged update (every 50 in engagement.py, every 100 in a cpu-profile run); "
          "never: not within the run")


if __name__ == "__main__":
    main()
