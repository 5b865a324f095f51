"""Sample-efficiency curves and performance profiles (autotune.report.curves) on hand-computed tables.

With two seeds per task every stratified resample is one of 4 x 4 = 16 equally likely
combinations (6.25% each), so with enough replicates the 2.5% and 97.5% percentiles are the
smallest and largest value of the statistic over those 16 combinations: computed by hand below.
"""

from __future__ import annotations

import json

import pytest

from autotune.report.curves import PROFILE_THRESHOLDS, common_steps, performance_profile, rliable_summary, sample_efficiency
from autotune.report.data import ComparisonData
from tql.errors import ConfigError

A, B = "cube-double-play-singletask-task1-v0", "scene-play-singletask-task2-v0"
REPS = 4000

# approach -> task -> per-seed curve [(step, success)]
CURVES = {
    "tuned": {A: [[(0, 0.0), (10, 0.5), (20, 1.0)], [(0, 0.0), (10, 0.25), (20, 0.5)]],
              B: [[(0, 0.0), (10, 0.0), (20, 0.75)], [(0, 0.0), (10, 1.0), (20, 1.0), (30, 1.0)]]},
    "zero": {A: [[(0, 0.0), (10, 0.0), (20, 0.0)]] * 2, B: [[(0, 0.0), (10, 0.0), (20, 0.0)]] * 2},
    "sparse": {A: [[(5, 0.5), (15, 1.0)]] * 2, B: [[(5, 0.0), (15, 1.0)]] * 2},
}


def table() -> ComparisonData:
    scores = {a: {t: [run[-1][1] for run in runs] for t, runs in by_task.items()} for a, by_task in CURVES.items()}
    return ComparisonData(approaches=list(CURVES), tasks=[A, B], scores=scores, steps={a: 80 for a in CURVES},
                          curves=CURVES)


def test_common_steps_keeps_only_steps_every_run_evaluated_at():
    assert common_steps(CURVES["tuned"][A] + CURVES["tuned"][B]) == [0, 10, 20]  # 30: one run only


def test_sample_efficiency_iqm_and_ci_by_hand():
    curve = sample_efficiency(table(), "tuned", reps=REPS)
    assert curve["steps"] == [0, 10, 20]
    # step 10: runs 0.5, 0.25 (A) and 0.0, 1.0 (B); IQM of 4 = mean of the middle two: (0.25 + 0.5) / 2.
    # Resamples: lowest A (0.25, 0.25) + B (0, 0) -> middle (0, 0.25) = 0.125; highest A (0.5, 0.5) + B (1, 1) = 0.75.
    # step 20: runs 1.0, 0.5, 0.75, 1.0 -> (0.75 + 1.0) / 2; lowest A (.5, .5) + B (.75, .75) -> 0.625; highest 1.0.
    assert curve["iqm"] == pytest.approx([0.0, 0.375, 0.875])
    assert curve["ci_low"] == pytest.approx([0.0, 0.125, 0.625])
    assert curve["ci_high"] == pytest.approx([0.0, 0.75, 1.0])


def test_each_approach_keeps_its_own_evaluation_steps():
    curve = sample_efficiency(table(), "sparse", reps=REPS)
    assert curve["steps"] == [5, 15] and curve["iqm"] == pytest.approx([0.25, 1.0])


def test_performance_profile_by_hand():
    thresholds = (0.0, 0.5, 0.75, 1.0)
    profile = performance_profile(table(), "tuned", thresholds, reps=REPS)
    # Final scores: A 1.0, 0.5; B 0.75, 1.0. Fraction strictly above tau: 4/4, 3/4, 2/4, 0/4.
    assert profile["fraction"] == pytest.approx([1.0, 0.75, 0.5, 0.0])
    # tau 0.5: lowest A (0.5, 0.5) -> 0 of 2 plus B 2 of 2 = 0.5; highest A (1, 1) -> 1.0.
    # tau 0.75: lowest A (0.5, 0.5), B (0.75, 0.75) -> 0; highest A (1, 1), B (1, 1) -> 1.
    assert profile["ci_low"] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert profile["ci_high"] == pytest.approx([1.0, 1.0, 1.0, 0.0])


def test_all_zero_runs_collapse_every_interval_to_zero():
    data = table()
    curve = sample_efficiency(data, "zero", reps=200)
    assert curve["iqm"] == curve["ci_low"] == curve["ci_high"] == [0.0, 0.0, 0.0]
    profile = performance_profile(data, "zero", reps=200)
    assert profile["thresholds"][0] == 0.0 and profile["thresholds"][-1] == 1.0
    assert profile["fraction"] == profile["ci_low"] == profile["ci_high"] == [0.0] * len(PROFILE_THRESHOLDS)


def test_summary_without_curves_still_has_profiles_and_goes_into_data_json(tmp_path):
    data = table()
    bare = ComparisonData(approaches=data.approaches, tasks=data.tasks, scores=data.scores, steps=data.steps)
    summary = rliable_summary(bare, reps=50)
    assert summary["sample_efficiency"] == {} and set(summary["performance_profile"]) == set(CURVES)
    data.save(tmp_path / "data.json", derived=rliable_summary(data, reps=50))
    saved = json.loads((tmp_path / "data.json").read_text())
    assert saved["derived"]["sample_efficiency"]["tuned"]["steps"] == [0, 10, 20]
    loaded = ComparisonData.load(tmp_path / "data.json")
    assert loaded.curves["tuned"][B][1][-1] == (30, 1.0) and loaded.to_dict() == data.to_dict()


@pytest.mark.parametrize("curves, words", [
    ({"tuned": {A: [[(0, 0.5)]], B: [[(0, 0.5)]] * 2}}, "one evaluation curve per seed (2)"),
    ({"tuned": {A: [[(0, 1.5)]] * 2, B: [[(0, 0.5)]] * 2}}, "outside [0, 1]"),
    ({"tuned": {A: [[(-1, 0.5)]] * 2, B: [[(0, 0.5)]] * 2}}, "not [non-negative step, success rate]"),
])
def test_bad_curves_are_refused_naming_the_run(curves, words):
    data = table()
    with pytest.raises(ConfigError, match="tuned") as info:
        ComparisonData(approaches=["tuned"], tasks=[A, B], scores={"tuned": data.scores["tuned"]},
                       steps={"tuned": 1}, curves=curves)
    assert words in str(info.value)


def test_profile_refuses_thresholds_outside_success_rates():
    with pytest.raises(ValueError, match="1.5"):
        performance_profile(table(), "tuned", (0.0, 1.5), reps=10)
