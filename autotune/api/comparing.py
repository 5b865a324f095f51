"""Approaches side by side: `tql-tune compare` (``compare``), `lodo` (``lodo``) and
`experiment` (``experiment``), which all write a comparison's files (``write_comparison``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.api.options import Say, agent_options, quiet
from autotune.tuning.shipped import DEFAULT_EXPERIMENT


@dataclass
class Comparison:
    """What ``compare`` made: the scores (``ComparisonData``), the rliable statistics derived
    from them (curves, profiles, IQM CIs) and the files written."""

    data: Any
    curves: dict
    files: list[Path]


def compare(tasks: str, *, approaches: str | Sequence[str] = "default,tuned,feedback,population,transfer",
            seeds: int = 3, profile: str = "smoke", study: str | None = None, knots_study: str | None = None,
            layers_study: str | None = None, storage: str | None = None, steps: int | None = None,
            eval_every: int | None = None, eval_episodes: int | None = None, out: str | Path = "runs/compare",
            data_dir: str | Path = "data", threads: int | None = None, device: str = "auto",
            precision: str = "fp32", cuda_graph: str = "auto", compile: bool | None = None, tf32: bool = True,
            reps: int = 2000, batch: str = "auto", workers: int | str = "auto",
            on_run: Callable[[str, str, int, float], None] | None = None,
            command: str | None = None, agent: Sequence[str] | dict[str, Any] = (),
            temperature_sharing: str | None = None, collapse_alarm: float | None = None,
            log: Sequence[str] = (), wandb_project: str | None = None, wandb_entity: str | None = None,
            say: Say | None = None) -> Comparison:
    """`tql-tune compare`: every approach to H̄ on the same tasks, unseen seeds (100, 101, ...)
    and budget; finished runs in ``out`` are reused. Writes data.json (scores and the rliable
    statistics), report.md, report.png and report_curves.png to ``out``. ``on_run(approach,
    task, seed, success)`` hears each finished run; ``command`` is recorded in the data.
    ``workers``: processes training the runs side by side (``auto``: one per core on a CPU).
    ``log``: ``wandb`` and/or ``tensorboard`` mirror every run there (approach / task / seed)."""
    from autotune.approaches import ComparePlan, batch_runs, run_comparison
    from autotune.forecast import studies_line
    from autotune.tuning.trials import resolve_workers
    from tql.tasks import resolve_tasks

    names = [a.strip() for a in approaches.split(",")] if isinstance(approaches, str) else list(approaches)
    task_specs = resolve_tasks(tasks)
    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                                       collapse_alarm=collapse_alarm).items() if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    out = Path(out)
    plan = ComparePlan(tasks=task_specs, approaches=[a for a in names if a], out_dir=out,
                       seeds=[100 + i for i in range(seeds)], profile=profile, study=study,
                       knots_study=knots_study, layers_study=layers_study, storage=storage, train_overrides=overrides,
                       data_dir=Path(data_dir), device=device, threads=threads, precision=precision, compile=compile,
                       batch=batch_runs(batch, device), agent=agent_options(agent, temperature_sharing),
                       workers=resolve_workers(workers, device, len(names) * len(task_specs) * seeds, threads),
                       log=tuple(log), wandb_project=wandb_project, wandb_entity=wandb_entity)
    plan.config(plan.tasks[0], plan.seeds[0])  # bad budgets fail before any run
    warning = studies_line({t.name: plan.config(t, plan.seeds[0]) for t in plan.tasks}, 1.0, runs="runs", end="")
    if warning and say is not None:
        say(f"[yellow]{warning}")
    data = run_comparison(plan, on_run=on_run)
    if command is not None:
        data.meta["command"] = command
    return write_comparison(data, out, reps)


@dataclass
class LeaveOneOut:
    """What ``lodo`` made: the schedule pooled without the held-out domain, its file, the study's
    tasks that tied (H̄ did not change their trials), and the comparison on the held-out tasks."""

    schedule: Any
    schedule_path: Path
    ties: list
    comparison: Comparison


def lodo(holdout: str, *, study: str, storage: str | None = None, seeds: int = 3, profile: str = "smoke",
         steps: int | None = None, eval_every: int | None = None, eval_episodes: int | None = None,
         out: str | Path = "runs/lodo", data_dir: str | Path = "data", threads: int | None = None,
         device: str = "auto", precision: str = "fp32", batch: str = "auto", workers: int | str = "auto",
         reps: int = 2000, on_run: Callable[[str, str, int, float], None] | None = None,
         command: str | None = None, say: Say | None = None) -> LeaveOneOut:
    """`tql-tune lodo`: pool the constant-rho ``study``'s schedules of the other domains (no
    tuning on ``holdout``), save it to ``out/schedule-without-HOLDOUT.json``, then ``compare``
    it (``transfer``) with ``default`` on the held-out domain's tasks."""
    from rich.markup import escape

    from autotune.report.summary import summarize
    from autotune.transfer import leave_one_domain_out
    from autotune.tuning.ties import tie_warning, tied_tasks
    from tql.agent import AgentConfig

    AgentConfig().replace(precision=precision)  # a bad value fails before the schedule is written
    summary = summarize(storage, study)
    schedule = leave_one_domain_out(summary, holdout)
    path = schedule.save(Path(out) / f"schedule-without-{holdout}.json")
    (say or quiet)(f"learned without {holdout}: {schedule.describe()} from "
                    f"{', '.join(schedule.meta['pooled_from'])} -> {path}")
    ties = tied_tasks(summary, schedule.meta.get("ties", []))
    warning = tie_warning(ties)
    if warning and say is not None:
        say(f"[yellow]{escape(warning)}")
    comparison = compare(holdout, approaches="default,transfer", seeds=seeds, profile=profile, study=study,
                         storage=storage, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes, out=out,
                         data_dir=data_dir, threads=threads, device=device, precision=precision, reps=reps,
                         batch=batch, workers=workers, on_run=on_run, command=command, say=say)
    return LeaveOneOut(schedule, path, ties, comparison)


@dataclass
class Experiment:
    """What ``experiment`` made: its plan (``autotune.experiment.plan.ExperimentPlan``: steps per
    run, phases, estimates), whether it resumed a saved plan, and the comparison (None with
    ``plan_only``)."""

    plan: Any
    resumed: bool
    comparison: Comparison | None


def experiment(spec: str | Path = DEFAULT_EXPERIMENT, *, budget_minutes: float | None = None, dry_run: bool = False,
               plan_only: bool = False, tasks: str | None = None, seeds: int | None = None,
               out: str | Path | None = None, data_dir: str | Path | None = None, device: str = "auto",
               threads: int | None = None, workers: int | str = "auto", reps: int = 2000,
               on_plan: Callable[[Any], None] | None = None,
               on_run: Callable[[str, str, int, float], None] | None = None,
               log: Sequence[str] = (), wandb_project: str | None = None, wandb_entity: str | None = None,
               command: str | None = None, say: Say | None = None) -> Experiment:
    """`tql-tune experiment`: data, the studies the approaches read, then every approach on the
    same tasks, seeds and steps per run, sized to ``budget_minutes`` on this machine (a few
    seconds' probe) or to the spec's reference machine; re-running with the same ``out``
    resumes. ``spec``: a built-in's name or a TOML file. ``on_plan(plan)`` hears the sized plan
    before any training (the CLI draws it); with ``plan_only`` nothing else happens. ``log``:
    ``wandb`` and/or ``tensorboard`` mirror the studies' and the comparison's runs there."""
    from rich.markup import escape

    from autotune.approaches import batch_runs
    from autotune.experiment import plan as ex
    from autotune.experiment.spec import load_experiment
    from autotune.tuning.trials import trials_per_batch
    from tql.trainer.config import resolve_device

    say = say or quiet
    spec_ = load_experiment(spec)
    if dry_run:
        spec_ = spec_.for_dry_run()
    if tasks is not None:
        spec_ = spec_.replace(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()))
    if seeds is not None:
        spec_ = spec_.replace(seeds=seeds)
    if dry_run and budget_minutes is None:
        budget_minutes = spec_.minutes
    ex.check_budget(budget_minutes)  # every option is checked before the machine is measured
    resolve_device(device)
    out = Path(out) if out is not None else Path("runs/experiment-dry-run" if dry_run else "runs/experiment")
    settings = ex.Settings(out=out, data_dir=Path(data_dir) if data_dir is not None else (
        out / "data" if dry_run else Path("data")), device=device, threads=threads, workers=workers,
        log=tuple(log) or spec_.loggers, wandb_project=wandb_project or spec_.wandb_project,
        wandb_entity=wandb_entity or spec_.wandb_entity)
    side_by_side = settings.compare_workers(spec_)  # a bad workers value fails here, before any work
    inputs = ex.plan_inputs(spec_, budget_minutes, dry_run, device)
    saved = None if plan_only else ex.saved_plan(out, inputs)
    n_missing = len(ex.missing_domains(spec_, settings.data_dir))
    batching = dict(study_batch=trials_per_batch("auto", device), compare_batched=batch_runs("auto", device))
    if saved is not None:
        plan = ex.replan(spec_, saved, n_missing, **batching)
        say(f"resuming the experiment planned in {out / ex.PLAN_FILE}: {plan.steps} steps per run")
    else:
        here = None
        if budget_minutes is not None:
            from autotune.experiment.probe import probe_machine

            say("measuring this machine (a few seconds"
                f"{f', {side_by_side} runs side by side' if side_by_side > 1 else ''}) ...")
            here = probe_machine(spec_.task_specs()[0], spec_.profile, device, threads, workers=side_by_side)
        plan = ex.plan_experiment(spec_, here, budget_minutes, n_missing, **batching)
    if on_plan is not None:
        on_plan(plan)
    for note in plan.notes:
        say(escape(note))
    if plan_only:
        return Experiment(plan, saved is not None, None)
    record = plan.to_dict(inputs)
    if saved is not None:
        record["measured_minutes"] = saved.get("measured_minutes", {})
    ex.save_plan(out, record)

    def measured(phase: str, minutes: float) -> None:
        record["measured_minutes"][phase] = round(record["measured_minutes"].get(phase, 0.0) + minutes, 2)
        ex.save_plan(out, record)

    data = ex.run_experiment(plan, settings, measured, say=say, on_run=on_run)
    if command is not None:
        data.meta["command"] = command
    data.meta["experiment"] = inputs
    return Experiment(plan, saved is not None, write_comparison(data, out, reps))


def write_comparison(data: Any, out: str | Path, reps: int = 2000) -> Comparison:
    """A comparison's files in ``out``: data.json with the rliable statistics, report.md,
    report.png and report_curves.png (`compare` and `experiment` write the same)."""
    from autotune.report.comparison import write_markdown, write_png
    from autotune.report.curve_plots import write_curves_png
    from autotune.report.curves import rliable_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = rliable_summary(data, reps=reps)
    progress = data.progress_data()
    if progress is not None and progress.curves:
        curves["progress"] = rliable_summary(progress, reps=reps)
    data.save(out / "data.json", derived=curves)
    files = [write_markdown(data, out / "report.md", reps=reps), write_png(data, out / "report.png", reps=reps),
             write_curves_png(curves, out / "report_curves.png", generated=data.generated)]
    if "progress" in curves:
        files.append(write_curves_png(curves["progress"], out / "report_progress_curves.png",
                                      generated=data.generated, score="progress"))
    return Comparison(data, curves, files + [out / "data.json"])
