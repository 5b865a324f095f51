"""autotune.report.power: the smallest difference a comparison could detect, against closed
forms worked out by hand and a simulation of the test it stands for."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from autotune.report.power import detectable_difference, difference_ci, variance_parts

Z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)  # 1.960 + 0.842


def coins(hits_per_seed: list[int], episodes: int) -> list[list[float]]:
    return [[1.0] * h + [0.0] * (episodes - h) for h in hits_per_seed]


def test_two_arms_at_zero_can_only_see_the_difference_their_episodes_allow():
    """Both arms score 0 on every episode: no seed variance, and the second arm's coin variance
    at p = d gives d = z^2 (1 - d) / (k E), i.e. d = z^2 / (k E + z^2)."""
    k, episodes = 5, 50
    zero = coins([0] * k, episodes)
    assert detectable_difference(zero, zero) == pytest.approx(Z ** 2 / (k * episodes + Z ** 2), rel=1e-6)


def test_between_seed_spread_counts_beyond_what_the_episodes_explain():
    """Progress-like values (not coins) with no within-run spread: the seed means alone vary,
    so d = z sqrt(2 s_b^2 / k) with s_b^2 their sample variance."""
    a = [[0.2] * 10, [0.4] * 10, [0.6] * 10]
    b = [[0.3] * 10, [0.5] * 10, [0.7] * 10]
    between = np.var([0.2, 0.4, 0.6], ddof=1)  # both arms' seed means spread alike
    assert variance_parts(a) == pytest.approx((between, 0.0, 10.0))
    # no within-run variance observed: the coin's p(1-p) bounds it (p the pooled mean 0.45)
    def total(d):
        return sum((between + p * (1 - p) / 10) / 3 for p in (0.45, 0.45 + d))
    d = detectable_difference(a, b)
    assert d == pytest.approx(Z * math.sqrt(total(d)), rel=1e-6)


def test_more_seeds_and_episodes_detect_smaller_differences():
    few = detectable_difference(coins([1, 2], 20), coins([2, 1], 20))
    more_seeds = detectable_difference(coins([1, 2] * 4, 20), coins([2, 1] * 4, 20))
    more_episodes = detectable_difference(coins([5, 10], 100), coins([10, 5], 100))
    assert more_seeds < few and more_episodes < few


def test_a_difference_of_that_size_is_found_about_80_percent_of_the_time():
    """Simulate the design: arms of k seeds x E coin episodes at p and p + d (d the detectable
    difference at p), and a two-sided z test on the seed means; it rejects about 80% of the time."""
    k, episodes, p = 5, 50, 0.1
    rng = np.random.default_rng(0)
    base = coins([round(p * episodes)] * k, episodes)
    d = detectable_difference(base, base)
    rejections, trials = 0, 4000
    for _ in range(trials):
        x = rng.binomial(episodes, p, size=k) / episodes
        y = rng.binomial(episodes, p + d, size=k) / episodes
        se = math.sqrt(p * (1 - p) / (k * episodes) + (p + d) * (1 - p - d) / (k * episodes))
        rejections += abs(y.mean() - x.mean()) / se > NormalDist().inv_cdf(0.975)
    assert rejections / trials == pytest.approx(0.8, abs=0.03)


def test_difference_ci_is_the_mean_gap_and_collapses_when_nothing_varies():
    assert difference_ci(coins([0, 0], 10), coins([0, 0], 10), reps=200) == (0.0, 0.0, 0.0)
    point, low, high = difference_ci(coins([2, 4, 3], 10), coins([6, 7, 5], 10), reps=2000)
    assert point == pytest.approx(0.3 - 0.6)
    assert low < point < high < 0.0


def test_an_arm_without_runs_or_episodes_is_refused():
    with pytest.raises(ValueError, match="every arm needs"):
        detectable_difference([], coins([1], 4))
    with pytest.raises(ValueError, match="every arm needs"):
        detectable_difference([[]], coins([1], 4))
