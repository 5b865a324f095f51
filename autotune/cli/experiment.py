"""`tql-tune experiment`: data, studies and every approach's runs in one command, sized to a budget."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autotune.cli.common import (DATA_DIR_HELP, DEVICE_OPTION, LOG_OPTION, WANDB_ENTITY_OPTION, WANDB_PROJECT_OPTION,
                                 WORKERS_HELP, app, console)
from autotune.tuning.shipped import DEFAULT_EXPERIMENT


@app.command()
def experiment(
    spec: str = typer.Option(DEFAULT_EXPERIMENT, help="experiment spec: a built-in's name (experiment, "
                             "experiment_engaged) or a TOML file"),
    budget_minutes: Optional[float] = typer.Option(None, help="size the steps per run to finish in this many "
                                                              "minutes on this machine (a few seconds' speed "
                                                              "probe); default: the spec's reference machine"),
    dry_run: bool = typer.Option(False, "--dry-run", help="a real run at toy size (the spec's [dry_run]: smoke "
                                                          "profile, ~2 minutes on a CPU), end to end"),
    plan_only: bool = typer.Option(False, "--plan-only", help="print the sized plan and its estimates; train "
                                                              "nothing"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma list of tasks instead of the spec's"),
    seeds: Optional[int] = typer.Option(None, help="seeds per task and approach instead of the spec's"),
    out: Optional[Path] = typer.Option(None, help="folder for plan.json, studies, runs and the report "
                                                  "(default runs/experiment, or runs/experiment-dry-run)"),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP + " (default data; a dry run's: OUT/data)"),
    device: str = DEVICE_OPTION,
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (of each worker)"),
    workers: str = typer.Option("auto", help="processes training a study's or the comparison's runs side by "
                                             "side: " + WORKERS_HELP),
    reps: int = typer.Option(2000, help="bootstrap resamples of the report"),
    log: list[str] = LOG_OPTION,
    wandb_project: Optional[str] = WANDB_PROJECT_OPTION,
    wandb_entity: Optional[str] = WANDB_ENTITY_OPTION,
) -> None:
    """Run an experiment (the built-in spec `experiment` by default): every approach to H̄ on the
    same tasks, seeds and steps per run; re-running the command with the same OUT resumes it."""
    from autotune import api
    from autotune.cli.compare import print_comparison

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    result = api.experiment(spec, budget_minutes=budget_minutes, dry_run=dry_run, plan_only=plan_only, tasks=tasks,
                            seeds=seeds, out=out, data_dir=data_dir, device=device, threads=threads,
                            workers=workers, reps=reps, on_plan=lambda plan: console.print(plan_table(plan)),
                            on_run=said, command="tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                            log=log, wandb_project=wandb_project, wandb_entity=wandb_entity, say=console.print)
    if result.comparison is not None:
        print_comparison(result.comparison, reps)
        out_dir = result.comparison.files[-1].parent
        console.print(f"the plan, its estimates and each phase's measured minutes: {out_dir / 'plan.json'}")


def plan_table(plan) -> Table:
    """Per phase: runs, steps each, member updates, and the estimated minutes here and on the
    reference machine for the same plan."""
    here, reference = plan.minutes_here(), plan.minutes_reference()
    machine = plan.spec.reference.name
    sized_for = machine if plan.here is None else "this machine" + (
        f", {plan.here.workers} runs side by side" if plan.here.workers > 1 else "")
    table = Table(title=f"experiment: {len(plan.tasks)} task(s) x {plan.spec.seeds} seed(s) x "
                        f"{len(plan.approaches)} approaches, profile {plan.spec.profile}, {plan.steps:,} steps per "
                        f"run (sized for {plan.budget_minutes:g} minutes on {sized_for})")
    for column in ("phase", "runs", "steps each", "member updates", "est. min here", f"est. min on {machine}"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for i, phase in enumerate(plan.phases):
        table.add_row(phase.name, str(phase.runs) if phase.runs else "-",
                      f"{plan.steps:,}" if phase.runs else "-", f"{phase.member_updates_per_step * plan.steps:,}",
                      "-" if here is None else f"{here[i]:.1f}", f"{reference[i]:.1f}")
    table.add_row("total", "", "", "", "-" if here is None else f"{sum(here):.1f}", f"{sum(reference):.1f}",
                  style="bold")
    return table
