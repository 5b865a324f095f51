"""Statistics and reports of ``tql-tune compare`` (autotune.report.stats, autotune.report.comparison)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from scipy import stats as sps

from autotune.report.data import ComparisonData
from autotune.report.stats import (
    CI, aggregate, difference_ci, iqm, mean, paired_tests, per_task_means, per_task_summary,
    probability_of_improvement, stratified_bootstrap_ci, wins_ties_losses,
)

APPROACHES = ["default", "tuned", "feedback"]
TASKS = ["cube-double-play-singletask-task1-v0", "scene-play-singletask-task2-v0", "puzzle-3x3-play-singletask-task4-v0"]


def make_data(n_seeds: int = 4, data_kind: str = "generated", seed: int = 0) -> ComparisonData:
    rng = np.random.default_rng(seed)
    scores = {a: {t: list(np.clip(rng.normal(0.3 + 0.2 * k, 0.1, n_seeds), 0, 1)) for t in TASKS}
              for k, a in enumerate(APPROACHES)}
    return ComparisonData(approaches=list(APPROACHES), tasks=list(TASKS), scores=scores,
                          steps={"default": 30_000, "tuned": 1_530_000, "feedback": 45_000},
                          meta={"command": "tql-tune compare --profile smoke", "profile": "smoke",
                                "seeds": list(range(n_seeds)), "data_kind": data_kind})


def manual_trimmed_iqm(values) -> float:
    """Independent IQM: sort, drop floor(n/4) from each end, average the rest (trim_mean's rule)."""
    x = sorted(float(v) for v in np.ravel(values))
    k = len(x) // 4
    middle = x[k:len(x) - k]
    return sum(middle) / len(middle)


# ---------------------------------------------------------------------------------- IQM

def test_iqm_hand_examples():
    assert iqm([0, 1, 2, 3, 4, 5, 6, 7]) == pytest.approx(3.5)            # middle 2,3,4,5
    assert iqm([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0]) == pytest.approx(0.35)  # outliers dropped
    assert iqm([[0.0, 1.0], [0.5, 0.5]]) == pytest.approx(0.5)             # flattened task x seed
    assert iqm([0.2, 0.9, 0.4]) == pytest.approx(0.5)                     # n < 4: plain mean


@pytest.mark.parametrize("n", [4, 8, 12, 20])
def test_iqm_matches_middle_half_when_n_divisible_by_4(n):
    x = np.random.default_rng(n).random(n)
    s = np.sort(x)
    assert iqm(x) == pytest.approx(s[n // 4: 3 * n // 4].mean())
    assert iqm(x) == pytest.approx(sps.trim_mean(x, 0.25))


@pytest.mark.parametrize("n", [5, 7, 10, 15])
def test_iqm_matches_independent_trim_when_n_not_divisible_by_4(n):
    x = np.random.default_rng(100 + n).random(n)
    assert iqm(x) == pytest.approx(manual_trimmed_iqm(x))


def test_iqm_axis_is_rowwise_and_empty_raises():
    x = np.random.default_rng(0).random((6, 9))
    np.testing.assert_allclose(iqm(x, axis=1), [manual_trimmed_iqm(row) for row in x])
    with pytest.raises(ValueError):
        iqm([])


# ---------------------------------------------------------------------------------- bootstrap

def test_bootstrap_ci_contains_point_and_is_deterministic():
    data = make_data(n_seeds=5)
    ci = stratified_bootstrap_ci(data.scores["tuned"], seed=3)
    assert isinstance(ci, CI)
    assert ci.point == pytest.approx(iqm(data.flat("tuned")))
    assert ci.low <= ci.point <= ci.high and ci.low < ci.high
    assert stratified_bootstrap_ci(data.scores["tuned"], seed=3) == ci
    assert stratified_bootstrap_ci(data.scores["tuned"], seed=4) != ci


def test_bootstrap_ci_shrinks_with_more_seeds():
    rng = np.random.default_rng(7)
    few = {t: list(rng.random(3)) for t in TASKS}
    many = {t: list(rng.random(60)) for t in TASKS}
    ci_few, ci_many = stratified_bootstrap_ci(few, seed=0), stratified_bootstrap_ci(many, seed=0)
    w_few, w_many = ci_few.high - ci_few.low, ci_many.high - ci_many.low
    assert 0 < w_many < w_few / 2


def test_bootstrap_ci_degenerate_and_stratified():
    ci = stratified_bootstrap_ci({"a": [0.4] * 5, "b": [0.4] * 3})
    assert ci.low == ci.point == ci.high == pytest.approx(0.4)
    # Strata are kept: every resample has three 0s (task a) and three 1s (task b), so the mean never moves.
    ci = stratified_bootstrap_ci({"a": [0.0] * 3, "b": [1.0] * 3}, statistic=mean)
    assert ci == (0.5, 0.5, 0.5)


def test_bootstrap_vectorised_and_loop_paths_agree():
    scores = make_data(n_seeds=4).scores["default"]
    fast = stratified_bootstrap_ci(scores, statistic=mean, reps=300, seed=1)
    slow = stratified_bootstrap_ci(scores, statistic=lambda x: float(np.mean(x)), reps=300, seed=1)
    assert fast == pytest.approx(slow)
    with pytest.raises(ValueError):
        stratified_bootstrap_ci(scores, confidence=1.5)


def test_probability_of_improvement_hand_values():
    # Task t: pairs (1,0),(1,0) win, (0,0),(0,0) tie -> (2 + 0.5 * 2) / 4 = 0.75; task u: X always wins -> 1.
    poi = probability_of_improvement({"t": [1.0, 0.0], "u": [1.0, 1.0]}, {"t": [0.0, 0.0], "u": [0.0, 0.0]})
    assert poi.point == pytest.approx((0.75 + 1.0) / 2)
    assert poi.low <= poi.point <= poi.high
    same = probability_of_improvement({"t": [0.2, 0.4, 0.6]}, {"t": [0.2, 0.4, 0.6]})
    assert same.point == pytest.approx(0.5) and same.low <= 0.5 <= same.high
    assert probability_of_improvement({"t": [1.0, 0.9]}, {"t": [0.0, 0.1]}) == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------- summaries & tests

def test_aggregate_and_per_task():
    data = make_data(n_seeds=4)
    agg = aggregate(data, reps=500)
    assert list(agg) == APPROACHES
    for a in APPROACHES:
        g = agg[a]
        assert set(g) >= {"iqm", "ci_low", "ci_high", "mean", "steps"}
        assert g["ci_low"] <= g["iqm"] <= g["ci_high"]
        assert g["mean"] == pytest.approx(np.mean(data.flat(a)))
        assert g["steps"] == data.steps[a] and g["n_runs"] == 12
    means = per_task_means(data)
    summary = per_task_summary(data)
    t = TASKS[1]
    assert means["tuned"][t] == pytest.approx(np.mean(data.scores["tuned"][t]))
    assert summary["tuned"][t]["std"] == pytest.approx(np.std(data.scores["tuned"][t], ddof=1))


def paired_hand_data() -> ComparisonData:
    # Per-task means: default .2 .4 .5 .6 .3 .1 ; tuned .5 .4 .7 .5 .6 .2 -> diffs +.3 0 +.2 -.1 +.3 +.1
    default = [[0.1, 0.3], [0.4, 0.4], [0.5, 0.5], [0.6, 0.6], [0.2, 0.4], [0.0, 0.2]]
    tuned = [[0.5, 0.5], [0.3, 0.5], [0.6, 0.8], [0.5, 0.5], [0.6, 0.6], [0.2, 0.2]]
    tasks = [f"task{i}" for i in range(6)]
    return ComparisonData(["default", "tuned", "same"], tasks,
                          {"default": dict(zip(tasks, default)), "tuned": dict(zip(tasks, tuned)),
                           "same": dict(zip(tasks, default))},
                          {"default": 1, "tuned": 2, "same": 3})


def test_paired_tests_match_direct_scipy_calls():
    data = paired_hand_data()
    res = paired_tests(data, baseline="default", reps=300)
    assert list(res) == ["tuned", "same"]
    r = res["tuned"]
    base = np.array([np.mean(v) for v in data.scores["default"].values()])
    cur = np.array([np.mean(v) for v in data.scores["tuned"].values()])
    diffs = cur - base
    diffs[np.abs(diffs) < 1e-9] = 0.0
    assert r["mean_diff"] == pytest.approx(diffs.mean())
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(diffs, zero_method="zsplit").pvalue)
    assert r["ttest_p"] == pytest.approx(sps.ttest_rel(cur, base).pvalue)
    assert (r["wins"], r["ties"], r["losses"]) == (4, 1, 1)
    assert r["n_tasks"] == 6 and r["baseline"] == "default"
    assert r["poi_ci_low"] <= r["prob_improvement"] <= r["poi_ci_high"]
    assert r["prob_improvement"] > 0.5


def test_paired_tests_degenerate_cases():
    res = paired_tests(paired_hand_data(), reps=100)["same"]
    assert res["wilcoxon_p"] == 1.0 and res["ttest_p"] == 1.0
    assert (res["wins"], res["ties"], res["losses"]) == (0, 6, 0)
    assert any("zero" in n for n in res["notes"])
    assert res["prob_improvement"] == pytest.approx(0.5)
    # Every task up by the same amount: the t-test is undefined, Wilcoxon is not.
    shifted = ComparisonData(["default", "up"], ["a", "b", "c"],
                             {"default": {"a": [0.1], "b": [0.2], "c": [0.3]}, "up": {"a": [0.35], "b": [0.45], "c": [0.55]}},
                             {"default": 0, "up": 0})
    r = paired_tests(shifted, reps=100)["up"]
    assert r["ttest_p"] is None and r["wilcoxon_p"] == pytest.approx(0.25)
    one = ComparisonData(["default", "x"], ["a"], {"default": {"a": [0.1, 0.2]}, "x": {"a": [0.5, 0.6]}}, {"default": 0, "x": 0})
    r = paired_tests(one, reps=100)["x"]
    assert r["wilcoxon_p"] is None and r["ttest_p"] is None and (r["wins"], r["ties"], r["losses"]) == (1, 0, 0)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        paired_tests(one, baseline="nope")


def test_wins_ties_losses_tolerance():
    assert wins_ties_losses([0.1, 0.0, 1e-12, -0.2, -1e-12, 0.3]) == (2, 3, 1)


# ---------------------------------------------------------------------------------- ComparisonData

def test_comparison_data_round_trip(tmp_path):
    data = make_data()
    again = ComparisonData.from_dict(json.loads(json.dumps(data.to_dict())))
    assert again == data
    data.save(tmp_path / "cmp.json")
    assert ComparisonData.load(tmp_path / "cmp.json") == data
    assert data.generated and not make_data(data_kind="official").generated


def test_comparison_data_does_not_mutate_input():
    scores = {"default": {"a": [1, 0]}}
    ComparisonData(["default"], ["a"], scores, {"default": 5})
    assert scores == {"default": {"a": [1, 0]}} and isinstance(scores["default"]["a"][0], int)


@pytest.mark.parametrize("change, words", [
    (lambda d: d["scores"].pop("tuned"), ["tuned"]),
    (lambda d: d["scores"]["tuned"].pop(TASKS[1]), ["tuned", TASKS[1]]),
    (lambda d: d["scores"]["feedback"][TASKS[2]].pop(), ["feedback", TASKS[2], "seeds"]),
    (lambda d: d["scores"]["tuned"][TASKS[0]].__setitem__(0, 1.5), ["tuned", TASKS[0], "1.5"]),
    (lambda d: d["scores"]["tuned"].__setitem__("other-task", [0.1] * 4), ["tuned", "other-task"]),
    (lambda d: d["scores"].__setitem__("ghost", {}), ["ghost"]),
    (lambda d: d["steps"].pop("feedback"), ["feedback", "step"]),
    (lambda d: d["steps"].__setitem__("tuned", -3), ["tuned", "-3"]),
    (lambda d: d["approaches"].append("default"), ["default", "twice"]),
    (lambda d: d.pop("scores"), ["scores"]),
])
def test_comparison_data_validation_errors(change, words):
    d = json.loads(json.dumps(make_data().to_dict()))
    change(d)
    with pytest.raises(ValueError) as err:
        ComparisonData.from_dict(d)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message


# ---------------------------------------------------------------------------------- reports

def test_markdown_report(tmp_path):
    from autotune.report.comparison import write_markdown

    data = make_data()
    path = write_markdown(data, tmp_path / "out" / "compare.md", reps=200)
    text = path.read_text()
    for name in APPROACHES + TASKS:
        assert name in text
    for section in ("Aggregate", "Per task", "Paired tests", "How to read this", "tql-tune compare --profile smoke"):
        assert section in text
    assert "1,530,000" in text and "Generated data" in text
    official = write_markdown(make_data(data_kind="official"), tmp_path / "official.md", reps=200).read_text()
    assert "Generated data" not in official and "official" in official
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official.md", "out"]  # no temp files left


def test_png_and_rich_tables(tmp_path):
    pytest.importorskip("matplotlib")
    from rich.console import Console

    from autotune.report.comparison import rich_tables, write_png

    data = make_data()
    path = write_png(data, tmp_path / "compare.png", reps=200, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]

    tables = rich_tables(data, reps=200)
    assert len(tables) == 3
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system=None)
    for table in tables:
        console.print(table)
    out = buf.getvalue()
    for name in APPROACHES + TASKS:
        assert name in out
    assert "GENERATED" in out


def test_progress_data_is_the_same_comparison_scored_by_progress():
    scores = {"a": {"t1": [0.0, 0.0], "t2": [0.0, 1.0]}, "b": {"t1": [0.0, 0.0], "t2": [0.0, 0.0]}}
    progress = {"a": {"t1": [0.5, 0.5], "t2": [0.2, 1.0]}, "b": {"t1": [0.5, 0.0], "t2": [0.4, 0.6]}}
    bare = ComparisonData(approaches=["a", "b"], tasks=["t1", "t2"], scores=scores, steps={"a": 10, "b": 10})
    assert bare.progress_data() is None
    graded = ComparisonData(approaches=["a", "b"], tasks=["t1", "t2"], scores=scores, steps={"a": 10, "b": 10},
                            meta={"progress": progress, "profile": "smoke"})
    by_progress = graded.progress_data()
    assert by_progress.scores == progress and by_progress.meta == {"profile": "smoke"}
    # IQM of a's four runs [0.2, 0.5, 0.5, 1.0]: the middle two, 0.5 and 0.5.
    assert aggregate(by_progress, reps=50)["a"]["iqm"] == pytest.approx(0.5)


def test_gained_data_is_the_comparison_scored_by_progress_from_the_start_state(tmp_path):
    from autotune.report.comparison import rich_tables, write_markdown

    scores = {"a": {"t1": [0.0, 0.0]}, "b": {"t1": [0.0, 0.0]}}
    progress = {"a": {"t1": [0.5, 0.75]}, "b": {"t1": [0.5, 0.5]}}
    gained = {"a": {"t1": [0.0, 0.25]}, "b": {"t1": [0.0, 0.0]}}  # both start with half the subtasks done
    data = ComparisonData(approaches=["b", "a"], tasks=["t1"], scores=scores, steps={"a": 1, "b": 1},
                          meta={"progress": progress, "gained": gained, "progress_curves": {}, "profile": "smoke"})
    by_gain = data.graded_data("gained")
    assert by_gain.scores == gained and by_gain.meta == {"profile": "smoke"}
    assert data.graded_data("progress").scores == progress
    with pytest.raises(ValueError, match="graded measure 'gain' is not one of: progress, gained"):
        data.graded_data("gain")
    text = write_markdown(data, tmp_path / "r.md", baseline="b", reps=200).read_text()
    section = text.split("## Aggregate gained progress")[1].split("##")[0]
    row_a = next(line for line in section.splitlines() if line.startswith("| a |"))
    assert "| 12.5 |" in row_a and "+12.5 [" in row_a  # mean of 0 and 25%, and its gap to b's 0
    assert "## Aggregate progress over" in text.split("## Aggregate gained")[0]  # progress first
    titles = [t.title for t in rich_tables(data, reps=50)]
    assert titles.index(next(t for t in titles if "gained" in t)) == titles.index(
        next(t for t in titles if t.startswith("Aggregate progress"))) + 1


def test_difference_ci_has_the_exact_bootstrap_distributions_percentiles():
    # One task: X = [0, 0, 0, 1] against a constant Y. A resampled mean of X is k/4 with k ~ Bin(4, 1/4):
    # P(k = 0) = 0.32 > 2.5%, P(k <= 2) = 0.949 < 97.5% <= P(k <= 3) = 0.996, so the 95% CI is [0, 0.75].
    ci = difference_ci({"t": [0, 0, 0, 1]}, {"t": [0.0, 0.0]}, reps=20_000)
    assert ci == CI(0.25, 0.0, 0.75)
    # A second task whose difference is 0.4 whatever the resample: the mean over tasks halves the first.
    two = difference_ci({"t": [0, 0, 0, 1], "u": [0.5, 0.5]}, {"t": [0.0, 0.0], "u": [0.1, 0.1]}, reps=20_000)
    assert two.point == pytest.approx(0.325) and two.low == pytest.approx(0.2) and two.high == pytest.approx(0.575)
    with pytest.raises(ValueError, match="same non-empty set of tasks"):
        difference_ci({"t": [1.0]}, {"u": [1.0]})


def test_paired_tests_and_reports_bound_the_difference_with_its_ci(tmp_path):
    from autotune.report.comparison import write_markdown

    shifted = ComparisonData(["default", "up"], ["a", "b"], {"default": {"a": [0.1], "b": [0.2]},
                                                             "up": {"a": [0.35], "b": [0.45]}}, {"default": 0, "up": 0})
    r = paired_tests(shifted, reps=100)["up"]
    assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((0.25, 0.25))  # one seed: nothing to resample
    scores = {"a": {"t1": [0.0, 0.0], "t2": [0.0, 0.0]}, "b": {"t1": [0.0, 0.0], "t2": [0.0, 0.0]}}
    # Progress means per task: a 0.5, 0.6; b 0.25, 0.5; so a - b = (0.25 + 0.1) / 2 = +17.5 points.
    progress = {"a": {"t1": [0.5, 0.5], "t2": [0.2, 1.0]}, "b": {"t1": [0.5, 0.0], "t2": [0.4, 0.6]}}
    graded = ComparisonData(approaches=["b", "a"], tasks=["t1", "t2"], scores=scores, steps={"a": 10, "b": 10},
                            meta={"progress": progress})
    text = write_markdown(graded, tmp_path / "r.md", baseline="b", reps=500).read_text()
    section = text.split("## Aggregate progress")[1].split("##")[0]
    row_a = next(line for line in section.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in section.splitlines() if line.startswith("| b |"))
    expected = difference_ci(progress["a"], progress["b"], reps=500)
    assert row_a.endswith(f"| +17.5 [{100 * expected.low:+.1f}, {100 * expected.high:+.1f}] |") and row_b.endswith("| - |")
    assert "| +0.0 [+0.0, +0.0] |" in text.split("## Paired tests")[1]  # success: every run 0

