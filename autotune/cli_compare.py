"""`tql-tune compare`, `lodo`: approaches side by side, and leave-one-domain-out transfer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from autotune.cli_common import (COMPILE_OPTION, CUDA_GRAPH_OPTION, DATA_DIR_HELP, PRECISION_HELP, STORAGE_HELP,
                                 TF32_OPTION, app, console)


@app.command()
def compare(
    tasks: str = typer.Option(..., "--tasks", help="all, a domain, or a comma list of tasks"),
    approaches: str = typer.Option("default,tuned,feedback,population,transfer",
                                   help="comma list: default, published, tuned, knots, layers, feedback, population, "
                                        "transfer, file:NAME=PATH"),
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
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
    reps: int = typer.Option(2000, help="bootstrap resamples"),
    batch: str = typer.Option("auto", help="train a task's runs (every approach but population, every seed) as "
                                           "one population: on, off, auto (on for CUDA)"),
) -> None:
    """Compare ways of setting H̄ on the same tasks, seeds and budget; writes a report and a plot."""
    import shlex

    from autotune.compare import ComparePlan, resolve_batch, run_comparison
    from tql.tasks import resolve_tasks

    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes).items()
                 if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    plan = ComparePlan(tasks=resolve_tasks(tasks), approaches=[a.strip() for a in approaches.split(",") if a.strip()],
                       seeds=[100 + i for i in range(seeds)], out_dir=out, profile=profile, study=study,
                       knots_study=knots_study, layers_study=layers_study, storage=storage, train_overrides=overrides,
                       data_dir=data_dir, device=device, threads=threads, precision=precision, compile=compile_loss,
                       batch=resolve_batch(batch, device))
    plan.config(plan.tasks[0], plan.seeds[0])  # bad budgets fail before any run

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    data = run_comparison(plan, on_run=said)
    data.meta["command"] = "tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_comparison(data, out, reps)


def write_comparison(data, out: Path, reps: int) -> list[Path]:
    """A comparison's outputs: data.json (with the rliable statistics), the terminal tables,
    the sample-efficiency plot and tie warnings, report.md, report.png, report_curves.png."""
    from autotune.curves import rliable_summary
    from autotune.report_compare import rich_tables, write_markdown, write_png
    from autotune.report_curves import efficiency_text, write_curves_png
    from autotune.ties import say_ties

    out.mkdir(parents=True, exist_ok=True)
    curves = rliable_summary(data, reps=reps)
    data.save(out / "data.json", derived=curves)
    for table in rich_tables(data, reps=reps):
        console.print(table)
    print(efficiency_text(curves, plot=sys.stdout.isatty()))
    for approach, tasks in data.meta.get("ties", {}).items():
        say_ties(console, tasks, context=approach)
    written = [write_markdown(data, out / "report.md", reps=reps), write_png(data, out / "report.png", reps=reps),
               write_curves_png(curves, out / "report_curves.png", generated=data.generated), out / "data.json"]
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    return written


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
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    batch: str = typer.Option("auto", help="train each held-out task's runs (both approaches, every seed) as one "
                                           "population: on, off, auto (on for CUDA)"),
) -> None:
    """Leave one domain out: pool the study's schedules of four domains, evaluate on the fifth
    against the default constant (no tuning on the held-out domain)."""
    from autotune.report import summarize
    from autotune.ties import say_ties, tied_tasks
    from autotune.transfer import leave_one_domain_out
    from tql.agent import AgentConfig

    AgentConfig().replace(precision=precision)  # a bad value fails before the schedule is written
    summary = summarize(storage, study)
    schedule = leave_one_domain_out(summary, holdout)
    path = schedule.save(out / f"schedule-without-{holdout}.json")
    console.print(f"learned without {holdout}: {schedule.describe()} from {', '.join(schedule.meta['pooled_from'])} "
                  f"-> {path}")
    say_ties(console, tied_tasks(summary, schedule.meta.get("ties", [])))
    compare(tasks=holdout, approaches="default,transfer", seeds=seeds, profile=profile, study=study, knots_study=None,
            layers_study=None, storage=storage, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes, out=out,
            data_dir=data_dir, threads=threads, device="auto", precision=precision, cuda_graph="auto",
            compile_loss=None, tf32=True, reps=2000, batch=batch)
