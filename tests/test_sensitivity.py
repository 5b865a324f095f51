"""The pure parts of benchmarks/learning/sensitivity.py: Monte-Carlo returns of the data and
the hierarchical bootstrap, against computations written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.learning.sensitivity import bootstrap_ci, mc_returns


def test_mc_returns_restart_at_each_trajectory_and_stop_at_a_zero_mask():
    rewards = np.array([-1.0, -1.0, 0.0, -1.0, -1.0, -1.0])
    masks = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])  # the first trajectory succeeds at its third step
    terminals = np.array([0, 0, 1, 0, 0, 1])
    returns, usable = mc_returns(rewards, masks, terminals, gamma=0.5, horizon=3)
    assert returns == pytest.approx([-1 - 0.5, -1.0, 0.0, -1 - 0.5 - 0.25, -1 - 0.5, -1.0])
    # the first trajectory reaches its zero mask: every transition counts; the second is cut
    # off by the data, so only its first transition has 3 steps left
    assert usable.tolist() == [True, True, True, True, False, False]


def test_bootstrap_ci_covers_the_mean_and_shrinks_to_it_when_nothing_varies():
    rng = np.random.default_rng(0)
    same = [np.ones(10), np.ones(10)]
    assert bootstrap_ci(same, 200, rng) == (1.0, 1.0)
    mixed = [np.array([1.0] * 5 + [0.0] * 15), np.array([1.0] * 15 + [0.0] * 5)]
    low, high = bootstrap_ci(mixed, 2000, rng)
    assert low < 0.5 < high and 0.0 <= low and high <= 1.0
