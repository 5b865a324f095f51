"""`tql-tune run`, `show`, `export`: Optuna studies over H̄ and what they found."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autotune.cli.common import (AGENT_OPTION_HELP, COLLAPSE_ALARM_OPTION, COMPILE_OPTION, CUDA_GRAPH_OPTION,
                                 DATA_DIR_HELP, DEVICE_OPTION, LOG_OPTION, WANDB_ENTITY_OPTION, WANDB_PROJECT_OPTION,
                                 PRECISION_HELP, SHARING_HELP, STORAGE_HELP,
                                 TF32_OPTION, WORKERS_HELP, app, console)
from autotune.tuning.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR


@app.command()
def run(
    tasks: str = typer.Option("all", "--tasks", help="all (the paper's 25), a domain, or a comma list of tasks"),
    study: str = typer.Option("tql", help="study name; each task's Optuna study is named STUDY:TASK"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    trials: Optional[int] = typer.Option(None, help="trials per task (default: the spec's budget for the profile)"),
    seeds: Optional[int] = typer.Option(None, help="seeds per trial (default: the spec's budget)"),
    profile: str = typer.Option("smoke", help="training profile of each trial: smoke, cpu, paper"),
    sampler: Optional[str] = typer.Option(None, help="tpe, gp, cmaes, grid, random (default: the spec's)"),
    objective: Optional[str] = typer.Option(None, help="what a trial maximises: success, progress (the fraction "
                                                       "of the task's subtasks done at the end) or gained (progress "
                                                       "counted from the episode's start state; default: the "
                                                       "spec's, success)"),
    workers: str = typer.Option("auto", help="local worker processes on the same studies: " + WORKERS_HELP),
    batch: str = typer.Option("auto", help="trials of a task trained together as one population (K trials x "
                                           "seeds members): a number >= 1, or auto (1 on a CPU, 8 on CUDA)"),
    spec: Optional[str] = typer.Option(None, help="study spec: a built-in's name (default, gained, progress, knots, "
                                       "layers, sharing) or a TOML file (default: the built-in default)"),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate (and report to the pruner) every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    data_kind: str = typer.Option("auto", help="auto (official first), official, generated"),
    make_data: bool = typer.Option(True, "--make-data/--no-make-data", help="generate missing datasets"),
    runs_dir: Path = typer.Option(RUNS_DIR, help="where trial runs (metrics, checkpoints) go"),
    device: str = DEVICE_OPTION,
    threads: Optional[int] = typer.Option(None, help="torch CPU threads per worker (default: cores / workers)"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP + " (a study keeps the precision it began with)"),
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
    heartbeat_interval: float = typer.Option(HEARTBEAT_INTERVAL,
                                             help="seconds between a running trial's heartbeats"),
    grace_period: float = typer.Option(GRACE_PERIOD, help="a running trial with no heartbeat for this long is retried"),
    agent: list[str] = typer.Option([], "--agent", help=AGENT_OPTION_HELP + " (every trial; a study keeps the "
                                    "options it began with)"),
    temperature_sharing: Optional[str] = typer.Option(None, "--temperature-sharing", help=SHARING_HELP + " (every "
                                                      "trial; search it with search.sharing in --spec)"),
    collapse_alarm: Optional[float] = COLLAPSE_ALARM_OPTION,
    log: list[str] = LOG_OPTION,
    wandb_project: Optional[str] = WANDB_PROJECT_OPTION,
    wandb_entity: Optional[str] = WANDB_ENTITY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Tune H̄ with one Optuna study per task; re-running the command continues the studies."""
    from autotune import api
    from autotune.tuning.progress import StudyProgress

    summary = api.run_studies(
        tasks, study=study, storage=storage, trials=trials, seeds=seeds, profile=profile, sampler=sampler,
        objective=objective,
        workers=workers, batch=batch, spec=spec, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
        data_dir=data_dir, data_kind=data_kind, make_data=make_data, runs_dir=runs_dir, device=device,
        threads=threads, precision=precision, cuda_graph=cuda_graph, compile=compile_loss, tf32=tf32,
        heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        agent=agent, temperature_sharing=temperature_sharing, collapse_alarm=collapse_alarm,
        log=log, wandb_project=wandb_project, wandb_entity=wandb_entity, say=console.print, progress=lambda plan, opened: StudyProgress(plan, opened, console, enabled=not quiet))
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from autotune.report.summary import counts_text, fmt_success

    objectives = sorted({t.get("objective", "success") for t in summary["tasks"]}) or ["success"]
    table = Table(title=f"study {summary['study']}  ({summary['storage']}), best by {' and '.join(objectives)}")
    table.caption = "success and progress: mean ± std over the best trial's seeds"
    options = sorted({f"{k}={v}" for t in summary["tasks"] for k, v in (t.get("agent") or {}).items()})
    if options:
        table.caption += f"; agent options of every trial: {' '.join(options)}"
    sharing = any((t.get("search") or {}).get("sharing") for t in summary["tasks"])  # a searched parameter
    for column in ("task", "n", "best rho", "best H̄", *(["temperatures"] if sharing else []), "success %",
                   "progress %", "seeds", "done/pruned/failed", "steps", "data"):
        table.add_column(column, justify="left" if column in ("task", "data") else "right")
    for t in summary["tasks"]:
        best = t["best"] or {}
        rho, tied = best.get("rho"), best.get("tied", 1)
        idle = " †" if best.get("tied_idle") else ""
        rho_text = "-" if rho is None else _rho_text(best) + (f" (tie x{tied}{idle})" if tied > 1 else "")
        rho_text += " ‼" if best.get("collapsed_at") is not None else ""
        table.add_row(t["task"], str(t["n_tokens"] or "-"), rho_text, _target_text(best, t["n_tokens"]),
                      *([best.get("temperature_sharing") or "-"] if sharing else []),
                      fmt_success(best.get("success_mean"), best.get("success_std")),
                      fmt_success(best.get("progress_mean"), best.get("progress_std")),
                      str(len(best.get("successes", []))) if best else "-", counts_text(t["counts"]),
                      f"{t['steps_total']:,}", t["data_kind"] or "-")
    console.print(table)
    if _layered(summary):
        console.print("a -> b: the first and the last attention layer's rho (and H̄) of a layers study; layers "
                      "between are linear")
    if any((t["best"] or {}).get("tied", 1) > 1 for t in summary["tasks"]):
        console.print(f"tie xK: K complete trials share the best {' and '.join(objectives)}; the earliest is shown, "
                      "and its rho is no better than the others' (more steps, seeds or evaluation episodes can "
                      "separate them)")
    if any((t["best"] or {}).get("tied_idle") for t in summary["tasks"]):
        from tql.engagement import ENGAGE_MARGIN

        console.print(f"†: tied because H̄ never acted: in no tied trial did any layer's attention come within "
                      f"{ENGAGE_MARGIN} nats of its target (see `tql-tune attention` on a trial's run), not tied by "
                      "result")
    collapsed = [(t["task"], t["best"]["collapsed_at"]) for t in summary["tasks"]
                 if (t["best"] or {}).get("collapsed_at") is not None]
    if collapsed:
        console.print("‼: attention collapsed in the best trial (below its collapse alarm, 0.2 log n by default): "
                      + "; ".join(f"{task} at update {step:,}" for task, step in collapsed), soft_wrap=True)
    _print_verdicts(summary)


def _print_verdicts(summary: dict) -> None:
    """Per task, whether its data can separate H̄ values at all (recorded by `run`)."""
    from tql.data.signal import DataSignal

    tasks = [t for t in summary["tasks"] if t.get("data_signal")]
    if not tasks:
        return
    table = Table(title="can H̄ change these runs? the data, relabelled for each task, and when the control engages")
    table.caption = ("control engages: predicted (tql.engagement) for the search range's highest target that can "
                     "act, in a trial's updates")
    for column in ("task", "transitions", "subtasks done (levels)", "success transitions", "data",
                   "control engages"):
        table.add_column(column, justify="left" if column in ("task", "data", "control engages") else "right")
    for task in tasks:
        signal, engagement = DataSignal(**task["data_signal"]), task.get("engagement")
        style = None if signal.has_signal and _engages(engagement) else "yellow"
        table.add_row(signal.task, f"{signal.transitions:,}", ", ".join(map(str, signal.reward_levels)),
                      f"{signal.success_transitions:,}", signal.verdict(), _engagement_text(engagement), style=style)
    console.print(table)


def _engages(engagement: dict | None) -> bool:
    return engagement is None or engagement["engaged"] is not None


def _engagement_text(engagement: dict | None) -> str:
    """A study's recorded forecast in a few words ("-": recorded before forecasts were)."""
    if engagement is None:
        return "-"
    if engagement["blocked"]:
        return f"never: {engagement['blocked']}"
    if engagement["engaged"] is None:
        return f"not within {engagement['steps']:,}"
    return f"~{engagement['engaged']:,} of {engagement['steps']:,}"


def _layered(summary: dict) -> bool:
    return any("rho_first" in (t["best"] or {}) for t in summary["tasks"])


def _rho_text(best: dict) -> str:
    """The best rho; a layers study's as first -> last layer (its "rho" is their mean)."""
    if "rho_first" in best:
        return f"{best['rho_first']:.3f} -> {best['rho_last']:.3f}"
    return f"{best['rho']:.3f}"


def _target_text(best: dict, n_tokens: Optional[int]) -> str:
    """The best H̄ in nats; a layers study's as first -> last layer."""
    import math

    if "rho_first" in best and n_tokens:
        return f"{best['rho_first'] * math.log(n_tokens):.3f} -> {best['rho_last'] * math.log(n_tokens):.3f}"
    target = best.get("target_entropy")
    return f"{target:.3f}" if target is not None else "-"


@app.command()
def show(
    study: str = typer.Option("tql", help="study name given to `tql-tune run`"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    task: Optional[str] = typer.Option(None, help="only this task"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="terminal plots of success vs rho and entropies"),
) -> None:
    """Summarise a study: best rho and H̄ per task, success over seeds, trial counts, plots."""
    import json

    from autotune import api
    from autotune.report.summary import entropy_plot, objective_vs_rho_plot

    summary = api.study_summary(study, storage, task)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _print_summary(summary)
    if plots:
        for t in summary["tasks"]:
            print(objective_vs_rho_plot(t))
            print(entropy_plot(t))


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="schedule JSON file to write"),
    study: Optional[str] = typer.Option(None, help="take the best schedule(s) of this study"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    task: Optional[str] = typer.Option(None, help="only this task's best (default: pool all the study's tasks)"),
    exclude_domain: Optional[str] = typer.Option(None, help="pool every domain but this one (leave-one-domain-out)"),
    run_dir: Optional[list[Path]] = typer.Option(None, "--run", help="controller run folder(s) with schedule.json"),
) -> None:
    """Export an H̄ schedule (rho over progress) from a study or controller runs, per task or pooled."""
    from autotune import api
    from autotune.tuning.ties import say_ties, tied_tasks

    schedule = api.export_schedule(out, study=study, storage=storage, task=task, exclude_domain=exclude_domain,
                                   runs=run_dir or ())
    console.print(f"wrote {out}: {schedule.describe()} ({schedule.meta.get('source')})")
    if schedule.meta.get("ties"):  # only a study's schedules record ties
        say_ties(console, tied_tasks(api.study_summary(study, storage), schedule.meta["ties"]))
