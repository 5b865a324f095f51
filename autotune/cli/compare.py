"""`tql-tune compare`, `lodo`: approaches side by side, and leave-one-domain-out transfer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from autotune.cli.common import (AGENT_OPTION_HELP, COLLAPSE_ALARM_OPTION, COMPILE_OPTION, CUDA_GRAPH_OPTION,
                                 DATA_DIR_HELP, DEVICE_OPTION, LOG_OPTION, WANDB_ENTITY_OPTION, WANDB_PROJECT_OPTION,
                                 PRECISION_HELP, SHARING_HELP, STORAGE_HELP,
                                 TF32_OPTION, WORKERS_HELP, app, console)


@app.command()
def compare(
    tasks: str = typer.Option(..., "--tasks", help="all, a domain, or a comma list of tasks"),
    approaches: str = typer.Option("default,tuned,feedback,population,transfer",
                                   help="comma list: default, published, tuned, knots, layers, feedback, population, "
                                        "transfer, off (entropy control off), fql (FQL's MLP critic), "
                                        "file:NAME=PATH"),
    seeds: int = typer.Option(3, help="seeds per task and approach (seeds 100, 101, ... unseen by tuning)"),
    profile: str = typer.Option("smoke", help="training profile of every run: smoke, cpu, paper"),
    study: Optional[str] = typer.Option(None, help="constant-rho study for 'tuned' and 'transfer'"),
    knots_study: Optional[str] = typer.Option(None, help="knots study for 'knots'"),
    layers_study: Optional[str] = typer.Option(None, help="layers (depth-profile) study for 'layers'"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    out: Path = typer.Option(Path("runs/compare"), help="folder for runs, report.md, report.png, data.json"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    device: str = DEVICE_OPTION,
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
    reps: int = typer.Option(2000, help="bootstrap resamples"),
    batch: str = typer.Option("auto", help="train a task's runs (every approach but population, every seed) as "
                                           "one population: on, off, auto (on for CUDA)"),
    workers: str = typer.Option("auto", help="processes training the runs side by side: " + WORKERS_HELP),
    agent: list[str] = typer.Option([], "--agent", help=AGENT_OPTION_HELP + " (every run)"),
    temperature_sharing: Optional[str] = typer.Option(None, "--temperature-sharing",
                                                      help=SHARING_HELP + " (every run)"),
    collapse_alarm: Optional[float] = COLLAPSE_ALARM_OPTION,
    log: list[str] = LOG_OPTION,
    wandb_project: Optional[str] = WANDB_PROJECT_OPTION,
    wandb_entity: Optional[str] = WANDB_ENTITY_OPTION,
) -> None:
    """Compare ways of setting H̄ on the same tasks, seeds and budget; writes a report and a plot."""
    import shlex

    from autotune import api

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    result = api.compare(tasks, approaches=approaches, seeds=seeds, profile=profile, study=study,
                         knots_study=knots_study, layers_study=layers_study, storage=storage, steps=steps,
                         eval_every=eval_every, eval_episodes=eval_episodes, out=out, data_dir=data_dir,
                         threads=threads, device=device, precision=precision, cuda_graph=cuda_graph,
                         compile=compile_loss, tf32=tf32, reps=reps, batch=batch, workers=workers, on_run=said,
                         command="tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                         agent=agent, temperature_sharing=temperature_sharing, collapse_alarm=collapse_alarm,
                         log=log, wandb_project=wandb_project, wandb_entity=wandb_entity, say=console.print)
    print_comparison(result, reps)


def print_comparison(result, reps: int) -> None:
    """A comparison in the terminal: the tables, the sample-efficiency plot, tie warnings and
    the files written."""
    from autotune.report.comparison import rich_tables
    from autotune.report.curve_plots import efficiency_text
    from autotune.tuning.ties import say_ties

    for table in rich_tables(result.data, reps=reps):
        console.print(table)
    print(efficiency_text(result.curves, plot=sys.stdout.isatty()))
    if "progress" in result.curves:
        print(efficiency_text(result.curves["progress"], plot=sys.stdout.isatty(), score="progress"))
    for approach, tasks in result.data.meta.get("ties", {}).items():
        say_ties(console, tasks, context=approach)
    console.print(f"wrote {', '.join(str(p) for p in result.files)}")


@app.command()
def lodo(
    holdout: str = typer.Option(..., "--holdout", help="domain to hold out, e.g. scene-play"),
    study: str = typer.Option(..., help="constant-rho study run on the other domains"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    seeds: int = typer.Option(3, help="seeds per held-out task and approach"),
    profile: str = typer.Option("smoke", help="training profile: smoke, cpu, paper"),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    out: Path = typer.Option(Path("runs/lodo"), help="folder for the schedule, runs and report"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    device: str = DEVICE_OPTION,
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    reps: int = typer.Option(2000, help="bootstrap resamples"),
    batch: str = typer.Option("auto", help="train each held-out task's runs (both approaches, every seed) as one "
                                           "population: on, off, auto (on for CUDA)"),
    workers: str = typer.Option("auto", help="processes training the runs side by side: " + WORKERS_HELP),
) -> None:
    """Leave one domain out: pool the study's schedules of four domains, evaluate on the fifth
    against the default constant (no tuning on the held-out domain)."""
    import shlex

    from autotune import api

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    result = api.lodo(holdout, study=study, storage=storage, seeds=seeds, profile=profile, steps=steps,
                      eval_every=eval_every, eval_episodes=eval_episodes, out=out, data_dir=data_dir,
                      threads=threads, device=device, precision=precision, batch=batch, workers=workers, reps=reps,
                      on_run=said, command="tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                      say=console.print)
    print_comparison(result.comparison, reps)
