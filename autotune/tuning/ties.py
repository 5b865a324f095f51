"""Best trials that are ties: no answer from no signal.

A study's "best" trial is the earliest complete trial with the highest success. When several
complete trials with different parameters share that success (typically every trial at 0%),
the best schedule is only the first of equals, not a measured optimum. ``export``, ``apply``,
``lodo`` and ``compare`` keep that deterministic choice but name such tasks: in one warning
line, in the schedule's ``meta["ties"]`` and in the comparison report.
"""

from __future__ import annotations

import json
from typing import Any, Iterable


def _params_key(trial: dict[str, Any]) -> str:
    """What a trial chose (rho, layer rhos, knots schedule), comparable across trials."""
    chosen = {k: trial.get(k) for k in ("rho", "rho_first", "rho_last", "schedule") if trial.get(k) is not None}
    return json.dumps(chosen, sort_keys=True)


def best_tie(task_summary: dict[str, Any]) -> dict[str, Any] | None:
    """``{"trials": n, "success": value}`` when the task's best success is shared by complete
    trials with at least two different parameter sets, else ``None``."""
    best = task_summary.get("best")
    if best is None:
        return None
    value = best.get("value", best["success_mean"])  # summaries before objectives held success only
    tied = [t for t in task_summary.get("trials", [])
            if t["state"] == "complete" and t["value"] is not None and t["value"] == value]
    if len({_params_key(t) for t in tied}) < 2:
        return None
    return {"trials": len(tied), "success": value}


def tied_tasks(summary: dict[str, Any], tasks: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``task -> best_tie`` for the study's tasks (or only ``tasks``) whose best is a tie."""
    wanted = None if tasks is None else set(tasks)
    ties = {t["task"]: best_tie(t) for t in summary["tasks"] if wanted is None or t["task"] in wanted}
    return {task: tie for task, tie in ties.items() if tie is not None}


def tie_warning(ties: Iterable[str] | dict[str, dict[str, Any]], context: str | None = None) -> str | None:
    """One line naming the tied tasks (with trial counts when known), ``context`` (e.g. the
    approach using them) in brackets; ``None`` when there are none."""
    details = ties if isinstance(ties, dict) else {task: None for task in ties}
    if not details:
        return None
    named = ", ".join(f"{task} ({tie['trials']} trials at {100 * tie['success']:.0f}% success)" if tie else task
                      for task, tie in sorted(details.items()))
    where = f" ({context})" if context else ""
    return (f"warning{where}: the best trial is a tie for {named}: their schedule is the earliest of the tied "
            "trials, not a measured optimum (more steps, seeds or evaluation episodes can separate them)")


def say_ties(console: Any, ties: Iterable[str] | dict[str, dict[str, Any]], context: str | None = None) -> None:
    """Print ``tie_warning`` on a rich console as one unwrapped yellow line (nothing without ties)."""
    line = tie_warning(ties, context)
    if line:
        console.print(line, style="yellow", soft_wrap=True, highlight=False, markup=False)
