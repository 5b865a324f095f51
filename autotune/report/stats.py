"""Statistics for ``tql-tune compare``: IQM, stratified bootstrap CIs, paired tests.

Pure functions over one input structure, ``ComparisonData`` (``autotune.report.data``);
nothing here trains or reads studies. The recommended aggregate follows Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice": the interquartile mean (IQM) of all task x seed scores with a
stratified (per-task) percentile bootstrap confidence interval, plus the probability of
improvement P(X > Y).

IQM convention
--------------
``iqm`` is ``scipy.stats.trim_mean(x, 0.25)`` on the flattened scores, as in Agarwal et al.'s
``rliable``: it drops ``floor(n / 4)`` values from each end and averages the rest (no
fractional weights when ``n`` is not divisible by 4; for ``n < 4`` it is the plain mean).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

from autotune.report.data import ComparisonData
from tql.errors import ConfigError

#: Per-task mean differences at most this far from zero count as ties (float noise).
TIE_TOL = 1e-9


# --------------------------------------------------------------------------------------
# Point statistics


def iqm(values: Any, axis: int | None = None) -> Any:
    """Interquartile mean: ``scipy.stats.trim_mean(values, 0.25)``.

    With ``axis=None`` the values are flattened (task x seed scores pooled) and a float is
    returned; with an axis, the IQM along it (used to vectorise the bootstrap).
    """
    x = np.asarray(values, dtype=float)
    if axis is None:
        x = x.ravel()
        if x.size == 0:
            raise ValueError("iqm of an empty set of scores")
        return float(sps.trim_mean(x, 0.25))
    if x.shape[axis] == 0:
        raise ValueError("iqm of an empty set of scores")
    return sps.trim_mean(x, 0.25, axis=axis)


def mean(values: Any, axis: int | None = None) -> Any:
    """Plain mean with the same calling convention as ``iqm``."""
    x = np.asarray(values, dtype=float)
    if axis is None:
        if x.size == 0:
            raise ValueError("mean of an empty set of scores")
        return float(x.mean())
    return x.mean(axis=axis)


class CI(NamedTuple):
    """A point estimate with a percentile bootstrap confidence interval."""

    point: float
    low: float
    high: float


def _accepts_axis(statistic: Callable) -> bool:
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):
        return False


def _apply_rows(statistic: Callable, samples: np.ndarray) -> np.ndarray:
    """``statistic`` of each row of ``samples``; vectorised when it takes ``axis``."""
    if _accepts_axis(statistic):
        out = np.asarray(statistic(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    return np.array([statistic(row) for row in samples], dtype=float)


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r} must be strictly between 0 and 1")
    return 1.0 - confidence


def _percentile_ci(point: float, boot: np.ndarray, confidence: float) -> CI:
    alpha = _alpha(confidence)
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return CI(float(point), float(low), float(high))


def stratified_bootstrap_ci(scores_by_task: dict[str, Sequence[float]], statistic: Callable = iqm,
                            reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> CI:
    """Percentile CI of ``statistic`` on the pooled scores, resampling seeds within each task.

    Each of ``reps`` replicates draws, for every task (stratum), as many seeds as it has with
    replacement, pools all tasks and recomputes ``statistic``. The statistic is applied to all
    replicates at once when it accepts an ``axis`` keyword (``iqm``, ``mean``, ``np.mean``);
    otherwise once per replicate. Returns ``CI(point, low, high)``; ``point`` is the
    statistic on the original pooled scores. Deterministic for a given ``seed``.
    """
    if not scores_by_task:
        raise ValueError("stratified bootstrap needs at least one task")
    if reps < 1:
        raise ValueError(f"reps {reps!r} must be at least 1")
    _alpha(confidence)
    arrays = []
    for task, values in scores_by_task.items():
        x = np.asarray(values, dtype=float).ravel()
        if x.size == 0:
            raise ValueError(f"task {task!r} has no scores")
        arrays.append(x)
    point = float(statistic(np.concatenate(arrays)))
    rng = np.random.default_rng(seed)
    samples = np.concatenate([x[rng.integers(0, x.size, size=(reps, x.size))] for x in arrays], axis=1)
    return _percentile_ci(point, _apply_rows(statistic, samples), confidence)


def _poi_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) with ties counted 1/2, over all seed pairs, for each row: x (R, n), y (R, m)."""
    diff = x[:, :, None] - y[:, None, :]
    return (diff > 0).mean(axis=(1, 2)) + 0.5 * (diff == 0).mean(axis=(1, 2))


def _two_sample_ci(x_by_task: dict[str, Sequence[float]], y_by_task: dict[str, Sequence[float]],
                   rows: Callable[[np.ndarray, np.ndarray], np.ndarray], what: str, reps: int, confidence: float,
                   seed: int) -> CI:
    """``rows(x, y)`` (a statistic of each row of x (R, n) against y (R, m)) averaged over tasks,
    with a CI from resampling each approach's seeds within each task independently."""
    if set(x_by_task) != set(y_by_task) or not x_by_task:
        raise ValueError(f"{what} needs the same non-empty set of tasks for both approaches")
    if reps < 1:
        raise ValueError(f"reps {reps!r} must be at least 1")
    _alpha(confidence)
    rng = np.random.default_rng(seed)
    point_parts, boot_parts = [], []
    for task in x_by_task:
        x = np.asarray(x_by_task[task], float).ravel()
        y = np.asarray(y_by_task[task], float).ravel()
        if x.size == 0 or y.size == 0:
            raise ValueError(f"task {task!r} has no scores")
        point_parts.append(rows(x[None], y[None])[0])
        xb = x[rng.integers(0, x.size, size=(reps, x.size))]
        yb = y[rng.integers(0, y.size, size=(reps, y.size))]
        boot_parts.append(rows(xb, yb))
    return _percentile_ci(float(np.mean(point_parts)), np.mean(boot_parts, axis=0), confidence)


def probability_of_improvement(x_by_task: dict[str, Sequence[float]], y_by_task: dict[str, Sequence[float]],
                               reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> CI:
    """P(X > Y) (Agarwal et al. 2021) with a stratified bootstrap CI.

    For each task, the probability that a run of X scores higher than a run of Y, over all
    pairs of their seeds, ties counting 1/2 (the Mann-Whitney U statistic / (n m)); averaged
    over tasks. The bootstrap resamples each approach's seeds within each task independently,
    as ``rliable`` does. 0.5 means no difference; above 0.5 favours X.
    """
    return _two_sample_ci(x_by_task, y_by_task, _poi_rows, "probability of improvement", reps, confidence, seed)


def _mean_difference_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x.mean(axis=1) - y.mean(axis=1)


def difference_ci(x_by_task: dict[str, Sequence[float]], y_by_task: dict[str, Sequence[float]],
                  reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> CI:
    """Mean over tasks of (X's mean - Y's mean), with a stratified bootstrap CI.

    The bootstrap resamples each approach's seeds within each task independently, as for
    ``probability_of_improvement``. The interval bounds the difference that these runs allow:
    one that holds 0 says "no difference found", and its ends say how large a difference the
    runs could still hide, which a p-value does not.
    """
    return _two_sample_ci(x_by_task, y_by_task, _mean_difference_rows, "a difference", reps, confidence, seed)


# --------------------------------------------------------------------------------------
# Summaries over ComparisonData


def per_task_means(data: ComparisonData) -> dict[str, dict[str, float]]:
    """``approach -> task -> mean success over seeds``."""
    return {a: {t: float(np.mean(data.scores[a][t])) for t in data.tasks} for a in data.approaches}


def per_task_summary(data: ComparisonData) -> dict[str, dict[str, dict[str, float]]]:
    """``approach -> task -> {"mean", "std", "n"}``; std is the sample std (ddof=1), 0 for one seed."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for a in data.approaches:
        out[a] = {}
        for t in data.tasks:
            x = np.asarray(data.scores[a][t], float)
            out[a][t] = {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0, "n": int(x.size)}
    return out


def aggregate(data: ComparisonData, reps: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """``approach -> {"iqm", "ci_low", "ci_high", "mean", "steps", "n_runs"}``.

    IQM over all task x seed runs with a stratified bootstrap CI (strata = tasks); ``mean``
    is the plain mean over the same runs; ``steps`` the approach's total training steps.
    Every approach uses the same bootstrap ``seed``.
    """
    out: dict[str, dict[str, float]] = {}
    for a in data.approaches:
        ci = stratified_bootstrap_ci(data.scores[a], iqm, reps=reps, confidence=confidence, seed=seed)
        flat = data.flat(a)
        out[a] = {"iqm": ci.point, "ci_low": ci.low, "ci_high": ci.high, "mean": float(flat.mean()),
                  "steps": int(data.steps[a]), "n_runs": int(flat.size)}
    return out


def wins_ties_losses(diffs: Sequence[float], tol: float = TIE_TOL) -> tuple[int, int, int]:
    """Count differences above ``tol`` (won), within it (tied), below ``-tol`` (lost)."""
    d = np.asarray(diffs, float)
    return int((d > tol).sum()), int((np.abs(d) <= tol).sum()), int((d < -tol).sum())


def default_baseline(data: ComparisonData) -> str:
    """``"default"`` when it is an approach, else the first approach."""
    return "default" if "default" in data.approaches else data.approaches[0]


def paired_tests(data: ComparisonData, baseline: str = "default", reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0, tol: float = TIE_TOL) -> dict[str, dict[str, Any]]:
    """Each other approach vs ``baseline``, paired by task on per-task mean success.

    Returns ``approach -> {...}`` in approach order (baseline excluded) with keys:
    ``baseline``, ``n_tasks``, ``mean_diff`` (mean over tasks of approach - baseline),
    ``wins``, ``ties``, ``losses`` (tasks where the approach's mean is higher / equal within
    ``tol`` / lower), ``wilcoxon_p`` (``scipy.stats.wilcoxon(diffs, zero_method="zsplit")``,
    two-sided), ``ttest_p`` (``scipy.stats.ttest_rel(approach, baseline)``, two-sided),
    ``diff_ci_low``, ``diff_ci_high`` (a stratified bootstrap CI of ``mean_diff``, see
    ``difference_ci``), ``prob_improvement``, ``poi_ci_low``, ``poi_ci_high`` (P(approach >
    baseline) over (task, seed) runs with a stratified bootstrap CI, see
    ``probability_of_improvement``),
    and ``notes`` (list of strings). Differences within ``tol`` of zero are set to zero. A
    p-value is ``None`` when the test is undefined (one task; constant non-zero differences
    for the t-test); with all differences zero both p-values are 1.0, with a note.
    """
    if baseline not in data.approaches:
        raise ConfigError(f"baseline {baseline!r} is not one of the approaches: {', '.join(data.approaches)}")
    means = per_task_means(data)
    base = np.array([means[baseline][t] for t in data.tasks])
    out: dict[str, dict[str, Any]] = {}
    for a in data.approaches:
        if a == baseline:
            continue
        cur = np.array([means[a][t] for t in data.tasks])
        diffs = cur - base
        diffs[np.abs(diffs) <= tol] = 0.0
        won, tied, lost = wins_ties_losses(diffs, tol)
        notes: list[str] = []
        wilcoxon_p: float | None
        ttest_p: float | None
        if not np.any(diffs):
            wilcoxon_p = ttest_p = 1.0
            notes.append("all per-task differences are zero: p set to 1.0")
        elif diffs.size < 2:
            wilcoxon_p = ttest_p = None
            notes.append("one task: paired tests need at least 2")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wilcoxon_p = _finite(sps.wilcoxon(diffs, zero_method="zsplit").pvalue)
                if np.ptp(diffs) <= tol:
                    ttest_p = None
                    notes.append("t-test undefined: every task changed by the same amount (zero variance)")
                else:
                    ttest_p = _finite(sps.ttest_rel(cur, base).pvalue)
            if diffs.size < 6:
                notes.append(f"only {diffs.size} tasks: the Wilcoxon test cannot reach p < 0.05")
        poi = probability_of_improvement(data.scores[a], data.scores[baseline], reps=reps,
                                         confidence=confidence, seed=seed)
        gap = difference_ci(data.scores[a], data.scores[baseline], reps=reps, confidence=confidence, seed=seed)
        out[a] = {"baseline": baseline, "n_tasks": int(diffs.size), "mean_diff": float(diffs.mean()),
                  "diff_ci_low": gap.low, "diff_ci_high": gap.high,
                  "wins": won, "ties": tied, "losses": lost, "wilcoxon_p": wilcoxon_p, "ttest_p": ttest_p,
                  "prob_improvement": poi.point, "poi_ci_low": poi.low, "poi_ci_high": poi.high, "notes": notes}
    return out


def _finite(p: Any) -> float | None:
    p = float(p)
    return p if math.isfinite(p) else None
