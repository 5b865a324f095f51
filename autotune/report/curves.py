"""Sample-efficiency curves and performance profiles over ``ComparisonData`` (as ``rliable``).

Both follow Agarwal et al. 2021 and use the same stratified bootstrap as the aggregate IQM
(``autotune.report.stats.stratified_bootstrap_ci``: seeds resampled within each task, percentile CI).

Sample-efficiency curve
    For each approach, at each evaluation step that every one of its runs (task x seed) has
    evaluated at, the IQM of the runs' success at that step with its CI. Steps are per run
    (tuning excluded) and each approach keeps its own grid: approaches evaluated at other
    steps are drawn on the same step axis without being forced onto one grid. Every step uses
    the same bootstrap seed, so a replicate resamples the same runs at every step, as
    ``rliable`` resamples whole runs.
Performance profile
    For each threshold tau in [0, 1], the fraction of all runs (pooled over tasks) whose final
    success is strictly above tau (``rliable``'s ``>``), with its CI. With success rates in
    [0, 1] the profile is 0 at tau = 1 by construction.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from autotune.report.data import ComparisonData
from autotune.report.stats import CI, iqm, stratified_bootstrap_ci

#: Thresholds of the performance profile: 0, 0.01, ..., 1.
PROFILE_THRESHOLDS = tuple(i / 100 for i in range(101))


def common_steps(runs: list[list[tuple[int, float]]]) -> list[int]:
    """The evaluation steps present in every run, ascending."""
    shared = set.intersection(*(set(step for step, _ in run) for run in runs)) if runs else set()
    return sorted(shared)


def _success_at(run: list[tuple[int, float]], step: int) -> float:
    """The run's success at ``step`` (the last record of that step, if it was logged twice)."""
    return dict(run)[step]


def sample_efficiency(data: ComparisonData, approach: str, reps: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, list[float]]:
    """``{"steps", "iqm", "ci_low", "ci_high"}`` of one approach (see the module docstring)."""
    if not data.curves:
        raise ValueError("the comparison data holds no evaluation curves")
    by_task = data.curves[approach]
    steps = common_steps([run for t in data.tasks for run in by_task[t]])
    cis = [stratified_bootstrap_ci({t: [_success_at(run, s) for run in by_task[t]] for t in data.tasks}, iqm,
                                   reps=reps, confidence=confidence, seed=seed) for s in steps]
    return _columns({"steps": steps}, cis, "iqm")


def fraction_above(tau: float) -> Callable[..., Any]:
    """The statistic "fraction of scores strictly above ``tau``", vectorisable over an axis."""
    def statistic(values: Any, axis: int | None = None) -> Any:
        return (np.asarray(values, dtype=float) > tau).mean(axis=axis)

    return statistic


def performance_profile(data: ComparisonData, approach: str, thresholds: tuple[float, ...] = PROFILE_THRESHOLDS,
                        reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """``{"thresholds", "fraction", "ci_low", "ci_high"}`` of one approach's final scores."""
    bad = [tau for tau in thresholds if not 0.0 <= tau <= 1.0]
    if bad or not thresholds:
        raise ValueError(f"profile thresholds must be success rates in [0, 1], got {bad or 'none'}")
    cis = [stratified_bootstrap_ci(data.scores[approach], fraction_above(tau), reps=reps, confidence=confidence,
                                   seed=seed) for tau in thresholds]
    return _columns({"thresholds": [float(t) for t in thresholds]}, cis, "fraction")


def _columns(head: dict[str, list], cis: list[CI], point: str) -> dict[str, list[float]]:
    return {**head, point: [c.point for c in cis], "ci_low": [c.low for c in cis], "ci_high": [c.high for c in cis]}


def rliable_summary(data: ComparisonData, reps: int = 2000, confidence: float = 0.95,
                    seed: int = 0) -> dict[str, Any]:
    """Both statistics for every approach, JSON-ready (``data.json``'s ``"derived"``).

    ``sample_efficiency`` is ``{}`` when the data holds no evaluation curves.
    """
    curves = {a: sample_efficiency(data, a, reps, confidence, seed) for a in data.approaches} if data.curves else {}
    return {"confidence": confidence, "reps": reps, "bootstrap_seed": seed,
            "sample_efficiency": curves,
            "performance_profile": {a: performance_profile(data, a, reps=reps, confidence=confidence, seed=seed)
                                    for a in data.approaches}}
