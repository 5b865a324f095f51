"""How large a difference could a comparison have seen? Power from seeds and episodes.

A tie means little without the smallest difference its runs could have detected. Each arm's
result is a mean over seeds of a mean over evaluation episodes, so its variance has two
parts: between seeds (runs differ) and between episodes (within a run, each episode is one
draw). With ``k`` seeds of ``E`` episodes, the arm's mean has variance

    (s_b^2 + w(p) / E) / k,

``s_b^2`` the between-seed variance (the spread of the seed means less what their episodes
explain, at least 0) and ``w(p)`` the episode variance at the arm's true mean ``p``. For
success, an episode is a coin: ``w(p) = p (1 - p)``, so an arm that scores 0 everywhere still
has variance under the alternative. For values in [0, 1] that are not coins (progress), the
observed within-run variance is used, and the coin's ``p (1 - p)`` (their largest possible)
where none was observed.

The minimum detectable difference ``d`` (two-sided test at level ``alpha`` with power ``power``,
normal approximation) solves ``d = (z_{1-alpha/2} + z_{power}) sqrt(V_a(p) + V_b(p + d))`` with
``p`` the two arms' pooled mean: the variance is taken where the alternative puts the second
arm. Seeds and episodes both count, as in the bootstrap CIs beside it (``difference_ci``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

Runs = Sequence[Sequence[float]]  # per seed, its episodes' values


def coin_episodes(rate: float, episodes: int) -> list[float]:
    """A run's episodes rebuilt from its success rate: ``round(rate * episodes)`` ones, the rest
    zeros (their order does not matter to the statistics here)."""
    hits = round(rate * episodes)
    return [1.0] * hits + [0.0] * (episodes - hits)


def seed_mean_draws(per_seed: Runs, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, seeds): each resample's per-seed means, drawing seeds with replacement and, within
    each drawn seed, its values (the hierarchical bootstrap: seeds and episodes both vary)."""
    arrays = [np.asarray(v, dtype=float) for v in per_seed]
    draws = np.empty((reps, len(arrays)))
    for rep in range(reps):
        drawn = [arrays[i] for i in rng.integers(len(arrays), size=len(arrays))]
        draws[rep] = [rng.choice(v, size=len(v)).mean() for v in drawn]
    return draws


def difference_ci(a: Runs, b: Runs, reps: int = 2000, confidence: float = 0.95,
                  seed: int = 1) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` (each a mean over seeds of the seed's episode mean) and
    its percentile CI from resampling both arms hierarchically (seeds, then episodes)."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([np.mean(v) for v in a]) - np.mean([np.mean(v) for v in b]))
    gaps = seed_mean_draws(a, reps, rng).mean(axis=1) - seed_mean_draws(b, reps, rng).mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return point, float(np.quantile(gaps, tail)), float(np.quantile(gaps, 1.0 - tail))


def _is_coin(runs: Runs) -> bool:
    return all(x in (0.0, 1.0) for v in runs for x in v)


def variance_parts(runs: Runs) -> tuple[float, float | None, float]:
    """(between-seed variance s_b^2, observed within-run episode variance or None where no run
    had two episodes, mean episodes per seed)."""
    means = np.array([np.mean(v) for v in runs])
    episodes = np.array([len(v) for v in runs], dtype=float)
    within = [np.var(v, ddof=1) for v in runs if len(v) > 1]
    w = float(np.mean(within)) if within else None
    if len(runs) < 2:
        return 0.0, w, float(episodes.mean())
    between = float(np.var(means, ddof=1)) - (w or 0.0) * float(np.mean(1.0 / episodes))
    return max(0.0, between), w, float(episodes.mean())


def detectable_difference(a: Runs, b: Runs, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference between the arms' means that a two-sided test at level
    ``alpha`` would find with probability ``power``, given these arms' seeds, episodes and
    measured variances (see the module text). Values are expected in [0, 1]."""
    if not a or not b or any(len(v) == 0 for v in (*a, *b)):
        raise ValueError("every arm needs >= 1 seed and every seed >= 1 episode")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0) + NormalDist().inv_cdf(power)
    coin = _is_coin(a) and _is_coin(b)
    parts = [variance_parts(a), variance_parts(b)]
    between = float(np.mean([p[0] for p in parts]))  # pooled: the arms share seeds and settings
    observed = [p[1] for p in parts if p[1] is not None]
    within_observed = float(np.mean(observed)) if observed else 0.0
    pooled = float(np.mean([np.mean(v) for v in (*a, *b)]))

    def arm_variance(p: float, seeds: int, episodes: float) -> float:
        p = min(1.0, max(0.0, p))
        w = p * (1.0 - p) if coin or within_observed < 1e-12 else within_observed
        return (between + w / episodes) / seeds

    def gap(d: float) -> float:  # < 0 while d is below what the arms' variance allows
        return d - z * math.sqrt(arm_variance(pooled, len(a), parts[0][2]) + arm_variance(pooled + d, len(b), parts[1][2]))

    if gap(1.0) <= 0.0:
        return 1.0  # not even the largest possible difference
    low, high = 0.0, 1.0  # gap(0) < 0 < gap(1): bisect (the variance at p + d need not shrink with d)
    for _ in range(60):
        middle = (low + high) / 2.0
        low, high = (middle, high) if gap(middle) < 0.0 else (low, middle)
    return (low + high) / 2.0
