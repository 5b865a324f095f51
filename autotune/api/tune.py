"""Studies over H̄: `tql-tune run` (``study_plan``, ``run_studies``), `show`
(``study_summary``) and `export` (``export_schedule``)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from autotune.api.options import Say, agent_options, quiet
from autotune.tuning.defaults import GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR
from autotune.tuning.trials import DEFAULT_STUDY
from tql.errors import TQLError


def study_plan(tasks: str = "all", *, study: str = DEFAULT_STUDY, storage: str | None = None,
               trials: int | None = None, seeds: int | None = None, profile: str = "smoke",
               sampler: str | None = None, objective: str | None = None, workers: int | str = "auto",
               batch: str | int = "auto",
               spec: str | Path | None = None, steps: int | None = None, eval_every: int | None = None,
               eval_episodes: int | None = None, data_dir: str | Path = "data", data_kind: str = "auto",
               make_data: bool = True, runs_dir: str | Path = RUNS_DIR, device: str = "auto",
               threads: int | None = None, precision: str = "fp32", cuda_graph: str = "auto",
               compile: bool | None = None, tf32: bool = True, heartbeat_interval: float = HEARTBEAT_INTERVAL,
               grace_period: float = GRACE_PERIOD, agent: Sequence[str] | dict[str, Any] = (),
               temperature_sharing: str | None = None, collapse_alarm: float | None = None,
               log: Sequence[str] = (), wandb_project: str | None = None, wandb_entity: str | None = None):
    """The ``RunPlan`` of `tql-tune run` with these options, checked (a bad override fails here,
    before any study or file is written). The keywords are the command's options; ``agent``
    (``KEY=VALUE`` strings or a dict) changes every trial's agent, e.g. ``alpha_init=0.01``;
    ``temperature_sharing`` too (``layer_group``, ``layer``, ``global``). ``log``: ``wandb``
    and/or ``tensorboard`` mirror every seed's run and each finished trial there."""
    from autotune.tuning.study_spec import load_spec
    from autotune.tuning.trials import RunPlan
    from tql.tasks import resolve_tasks

    study_spec = load_spec(spec)
    if sampler is not None:
        study_spec = study_spec.replace(sampler=sampler)
    if objective is not None:
        study_spec = study_spec.replace(objective=objective)
    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                                       collapse_alarm=collapse_alarm).items() if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    plan = RunPlan(tasks=resolve_tasks(tasks), spec=study_spec, study=study, storage=storage, profile=profile,
                   trials=trials, seeds=seeds, workers=workers, runs_dir=Path(runs_dir), data_dir=Path(data_dir),
                   data_kind=data_kind, make_data=make_data, device=device, threads=threads, precision=precision,
                   compile=compile, train_overrides=overrides, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period, batch=str(batch), agent=agent_options(agent, temperature_sharing),
                   log=tuple(log) or study_spec.loggers, wandb_project=wandb_project or study_spec.wandb_project,
                   wandb_entity=wandb_entity or study_spec.wandb_entity)
    plan.train_config(plan.tasks[0], study_spec.rho_low, 0)
    return plan


def run_studies(tasks: str = "all", *, say: Say | None = None, progress: Callable | None = None,
                **options: Any) -> dict:
    """`tql-tune run`: one Optuna study over H̄ per task, trials run here (``workers`` processes);
    calling it again continues the studies. ``options`` are ``study_plan``'s. ``progress``,
    given ``(plan, storage)``, returns a context manager whose value receives ``task_started``,
    ``step``, ``trial_done`` and ``refresh`` calls (``autotune.tuning.progress.StudyProgress``).
    Returns ``study_summary`` of these tasks, in the order asked."""
    from autotune.forecast import forecast, studies_line
    from autotune.tuning.storage import describe, open_storage
    from autotune.tuning.studies import check_studies, create_studies, data_signals, ensure_data, record_signals

    say = say or quiet
    plan = study_plan(tasks, **options)
    opened = open_storage(plan.storage)
    check_studies(plan, opened)
    kinds = ensure_data(plan, say=say)
    signals = data_signals(plan)
    silent = [name for name, signal in signals.items() if not signal.has_signal]
    if silent:
        say(f"[yellow]no signal in the data of {len(silent)} of {len(signals)} task(s) (a constant reward once "
            "relabelled): their trials can only tie; the table at the end names them")
    configs = {t.name: plan.train_config(t, plan.spec.rho_high, 0) for t in plan.tasks}
    warning = studies_line(configs, plan.spec.rho_high)
    if warning:
        say(f"[yellow]{warning}")
    record_signals(create_studies(plan, opened), signals,
                   {name: forecast(config, plan.spec.rho_high) for name, config in configs.items()})
    say(f"study {plan.study}: {len(plan.tasks)} task(s) x {plan.trials} trials x {plan.seeds} seed(s), "
        f"profile {plan.profile} ({plan.precision}), sampler {plan.spec.sampler}, "
        f"{'' if plan.spec.objective == 'success' else f'objective {plan.spec.objective}, '}{plan.workers} worker(s)"
        f"{f' x batches of {plan.batch} trials' if plan.batch > 1 else ''}; storage {describe(plan.storage)}; "
        f"data: {', '.join(f'{d} {k}' for d, k in kinds.items())}")
    with (progress(plan, opened) if progress else nullcontext(None)) as watch:
        _work(plan, watch, say)
    return study_summary(plan.study, plan.storage, tasks=[t.name for t in plan.tasks])


def _work(plan, watch: Any, say: Say) -> None:
    """This process's trials (``workers`` 1) or ``workers`` worker processes', to the end."""
    from autotune.tuning.studies import work_all

    hooks = {} if watch is None else dict(on_trial=watch.trial_done, on_step=watch.step, on_task=watch.task_started)
    report = work_all(plan, poll=None if watch is None else watch.refresh, **hooks)
    if report is not None and report.retried_stale:
        say(f"re-queued {report.retried_stale} trial(s) whose workers were lost")


def study_summary(study: str = DEFAULT_STUDY, storage: str | None = None, task: str | None = None,
                  tasks: Sequence[str] | None = None) -> dict:
    """`tql-tune show --json`: per task, the best rho and H̄, success over seeds, trial counts
    and the trials; ``tasks`` keeps those tasks only, in that order."""
    from autotune.report.summary import summarize

    summary = summarize(storage, study, task)
    if tasks is not None:
        order = {name: i for i, name in enumerate(tasks)}
        summary["tasks"] = sorted((t for t in summary["tasks"] if t["task"] in order), key=lambda t: order[t["task"]])
    return summary


def export_schedule(out: str | Path, *, study: str | None = None, storage: str | None = None,
                    task: str | None = None, exclude_domain: str | None = None, runs: Sequence[str | Path] = ()):
    """`tql-tune export`: the best schedule of a study (one task's, or pooled over its tasks,
    optionally leaving a domain out) or of controller runs, written to ``out``. Returns the
    ``Schedule``; its ``meta["ties"]`` names the tasks whose best trial was a tie."""
    from autotune.transfer import pooled, schedule_from_run, study_schedules

    if (study is None) == (not runs):
        raise TQLError("give either --study (with --task or pooling) or --run DIR (one or more)")
    if runs:
        schedules = [schedule_from_run(Path(d)) for d in runs]
    else:
        schedules = study_schedules(study_summary(study, storage), exclude_domain=exclude_domain, only_task=task)
    schedule = schedules[0] if len(schedules) == 1 else pooled(schedules, excluded_domain=exclude_domain)
    schedule.save(Path(out))
    return schedule
