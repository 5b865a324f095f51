"""`tql-tune experiment`: data, studies and every approach's runs in one command, sized to a budget."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autotune.cli.common import DATA_DIR_HELP, WORKERS_HELP, app, console
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
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (of each worker)"),
    workers: str = typer.Option("auto", help="processes training a study's or the comparison's runs side by "
                                             "side: " + WORKERS_HELP),
    reps: int = typer.Option(2000, help="bootstrap resamples of the report"),
) -> None:
    """Run the experiment of studies/experiment.toml: every approach to H̄ on the same tasks,
    seeds and steps per run; re-running the command with the same OUT resumes it."""
    from autotune.experiment import plan as ex
    from autotune.approaches import batch_runs as compare_batch
    from autotune.experiment.spec import load_experiment
    from autotune.tuning.trials import trials_per_batch as study_batch

    experiment_spec = load_experiment(spec)
    if dry_run:
        experiment_spec = experiment_spec.for_dry_run()
    if tasks is not None:
        experiment_spec = experiment_spec.replace(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()))
    if seeds is not None:
        experiment_spec = experiment_spec.replace(seeds=seeds)
    if dry_run and budget_minutes is None:
        budget_minutes = experiment_spec.minutes
    out = out or Path("runs/experiment-dry-run" if dry_run else "runs/experiment")
    settings = ex.Settings(out=out, data_dir=data_dir or (out / "data" if dry_run else Path("data")), device=device,
                           threads=threads, workers=workers)
    side_by_side = settings.compare_workers(experiment_spec)  # a bad --workers fails here, before any work
    inputs = ex.plan_inputs(experiment_spec, budget_minutes, dry_run, device)
    saved = None if plan_only else ex.saved_plan(out, inputs)
    n_missing = len(ex.missing_domains(experiment_spec, settings.data_dir))
    batching = dict(study_batch=study_batch("auto", device), compare_batched=compare_batch("auto", device))
    if saved is not None:
        plan = ex.replan(experiment_spec, saved, n_missing, **batching)
        console.print(f"resuming the experiment planned in {out / ex.PLAN_FILE}: {plan.steps} steps per run")
    else:
        here = None
        if budget_minutes is not None:
            from autotune.experiment.probe import probe_machine

            console.print("measuring this machine (a few seconds"
                          f"{f', {side_by_side} runs side by side' if side_by_side > 1 else ''}) ...")
            here = probe_machine(experiment_spec.task_specs()[0], experiment_spec.profile, device, threads,
                                 workers=side_by_side)
        plan = ex.plan_experiment(experiment_spec, here, budget_minutes, n_missing, **batching)
    console.print(plan_table(plan))
    for note in plan.notes:
        console.print(note, markup=False)
    if plan_only:
        return
    record = plan.to_dict(inputs)
    if saved is not None:
        record["measured_minutes"] = saved.get("measured_minutes", {})
    ex.save_plan(out, record)

    def measured(phase: str, minutes: float) -> None:
        record["measured_minutes"][phase] = round(record["measured_minutes"].get(phase, 0.0) + minutes, 2)
        ex.save_plan(out, record)

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    data = ex.run_experiment(plan, settings, measured, say=console.print, on_run=said)
    _write_report(data, out, reps, inputs)


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


def _write_report(data, out: Path, reps: int, inputs: dict) -> None:
    """Compare's outputs (``autotune.api.write_comparison``), plus what planned the experiment."""
    from autotune.api import write_comparison
    from autotune.cli.compare import print_comparison

    data.meta["command"] = "tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data.meta["experiment"] = inputs
    print_comparison(write_comparison(data, out, reps), reps)
    console.print(f"the plan, its estimates and each phase's measured minutes: {out / 'plan.json'}")
