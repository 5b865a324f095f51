"""Schedules out of studies and controller runs, pooled across tasks, carried to new tasks.

A schedule is stored as rho(p) = H̄ / log n, so it applies unchanged to an environment with
another token count n: H̄ there is rho(p) * log n_new.

Pooling (several tasks' schedules -> one): the pointwise median of rho(p) on an even grid of
progress (11 points, linear in between); constant schedules pool to the median constant. The
median keeps one odd task from dragging the pooled schedule. When any schedule is a depth
profile, the first layers' curves and the last layers' curves are pooled apart into a profile
(a one-curve schedule gives both the same curve).

Ties: a schedule taken from a study records in ``meta["ties"]`` the tasks whose best trial is a
tie (``autotune.tuning.ties``): ``[task]`` or ``[]``, and in ``meta["ties_idle"]`` those tied
because H̄ never acted in any tied trial (the control never engaged), not by result; a pooled
schedule records its sources' ties.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from autotune.schedules import Schedule
from autotune.tuning.ties import best_tie
from tql.errors import ConfigError

POOL_POINTS = 11


def schedule_of_task(task_summary: dict[str, Any]) -> Schedule:
    """The best trial's schedule of one task's study summary (see ``report.summarize``)."""
    best = task_summary.get("best")
    if best is None:
        raise ConfigError(f"study {task_summary['study_name']!r} has no complete trial yet; run it first")
    meta = {"source": f"study {task_summary['study_name']} trial {best['number']}", "task": task_summary["task"],
            "n_tokens": task_summary["n_tokens"], "success_mean": best["success_mean"],
            "ties": [task_summary["task"]] if best_tie(task_summary) else [],
            "ties_idle": [task_summary["task"]] if best_tie(task_summary) and best.get("tied_idle") else []}
    if best.get("schedule"):
        return Schedule.from_dict({**best["schedule"], "meta": meta}, source=f"trial {best['number']}")
    return Schedule.constant(best["rho"], **meta)


def pooled(schedules: list[Schedule], **meta) -> Schedule:
    """One schedule for many tasks: pointwise median of rho(p) (see the module docstring)."""
    if not schedules:
        raise ConfigError("nothing to pool: no schedules given")
    sources = sorted({s.meta.get("task", "?") for s in schedules})
    meta = {"source": "pooled (pointwise median)", "pooled_from": sources, **meta}
    for key in ("ties", "ties_idle"):
        if any(key in s.meta for s in schedules):
            meta[key] = sorted({task for s in schedules for task in s.meta.get(key, [])})
    if any(s.is_profile for s in schedules):
        first, last = ([s.curves()[i] for s in schedules] for i in (0, 1))
        return Schedule.profile(_pooled_curve(first), _pooled_curve(last), **meta)
    return _pooled_curve(schedules, **meta)


def _pooled_curve(curves: list[Schedule], **meta) -> Schedule:
    """The pointwise median of one-curve schedules (constants: the median constant)."""
    if all(s.kind == "constant" for s in curves):
        return Schedule.constant(statistics.median(s.rho for s in curves), **meta)
    grid = [i / (POOL_POINTS - 1) for i in range(POOL_POINTS)]
    knots = [(p, statistics.median(s.rho_at(p) for s in curves)) for p in grid]
    return Schedule.piecewise(knots, **meta)


def schedule_from_run(run_dir: str | Path) -> Schedule:
    """The schedule a controller run followed (``schedule.json`` in its folder)."""
    path = Path(run_dir) / "schedule.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no schedule.json; train with --controller to record one")
    return Schedule.load(path)


def study_schedules(summary: dict[str, Any], exclude_domain: str | None = None,
                    only_task: str | None = None) -> list[Schedule]:
    """Best schedules of a study's tasks, optionally leaving out one domain or keeping one task."""
    from tql.tasks import get_task

    if exclude_domain is not None:
        _check_domain(summary, exclude_domain)
    if only_task is not None and only_task not in (names := [t["task"] for t in summary["tasks"]]):
        raise ConfigError(f"study {summary['study']!r} has no task {only_task!r}; its tasks: {', '.join(names)}")
    chosen = []
    for task_summary in summary["tasks"]:
        name = task_summary["task"]
        if only_task is not None and name != only_task:
            continue
        if exclude_domain is not None and get_task(name).domain == exclude_domain:
            continue
        if task_summary.get("best") is not None:
            chosen.append(schedule_of_task(task_summary))
    if not chosen:
        what = f"task {only_task}" if only_task else f"tasks outside {exclude_domain}" if exclude_domain else "tasks"
        raise ConfigError(f"study {summary['study']!r} has no complete trials for {what}")
    return chosen


def _check_domain(summary: dict[str, Any], domain: str) -> None:
    """A misspelt domain would silently leave nothing out: refuse it, naming the valid ones."""
    from tql.tasks import PAPER_DOMAINS, get_task

    domains = set(PAPER_DOMAINS) | {get_task(t["task"]).domain for t in summary["tasks"]}
    if domain not in domains:
        raise ConfigError(f"unknown domain {domain!r}; valid: {', '.join(sorted(domains))}")


def leave_one_domain_out(summary: dict[str, Any], holdout_domain: str) -> Schedule:
    """Pooled schedule learned on every domain of the study except ``holdout_domain``."""
    return pooled(study_schedules(summary, exclude_domain=holdout_domain), holdout_domain=holdout_domain)
