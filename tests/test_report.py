"""``autotune.report.summary.summarize_study`` on studies built in memory (no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autotune.cli import study_commands as cli_studies
from autotune.report.summary import summarize_study

RHO = {"rho": FloatDistribution(0.1, 1.0)}


def _study(values: list[float | None]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="tql:cube-double-play-singletask-task1-v0")
    for i, value in enumerate(values):
        state = TrialState.FAIL if value is None else TrialState.COMPLETE
        study.add_trial(create_trial(params={"rho": 0.1 + 0.1 * i}, distributions=RHO, value=value, state=state,
                                     user_attrs={"successes": [value] if value is not None else []}))
    return study


@pytest.mark.parametrize("values", [[0.0, 0.0, 0.0], [0.2, 0.5, 0.5, None, 0.1], [0.3, 0.1], [None, 0.4]])
def test_best_reports_how_many_complete_trials_share_its_value(values):
    best = summarize_study(_study(values))["best"]
    finished = [(v, i) for i, v in enumerate(values) if v is not None]
    top = max(v for v, _ in finished)
    assert best["success_mean"] == top
    assert best["number"] == min(i for v, i in finished if v == top)  # the earliest of equals
    assert best["tied"] == sum(1 for v, _ in finished if v == top)


def test_show_marks_a_tied_best_and_explains_it(capsys):
    tied, clear = summarize_study(_study([0.0, 0.0])), summarize_study(_study([0.0, 0.5]))
    cli_studies._print_summary({"study": "tql", "storage": "memory", "tasks": [tied]})
    out = capsys.readouterr().out
    assert "0.100 (tie x2)" in out and "K complete trials share the best success" in out
    cli_studies._print_summary({"study": "tql", "storage": "memory", "tasks": [clear]})
    out = capsys.readouterr().out
    assert "0.200" in out and "tie" not in out


def test_show_names_a_progress_study_by_its_objective_not_success(capsys):
    from autotune.report.summary import objective_vs_rho_plot

    study = _study([0.4, 0.4, 0.2])
    study.set_user_attr("tql:objective", "progress")
    summary = summarize_study(study)
    cli_studies._print_summary({"study": "tql", "storage": "memory", "tasks": [summary]})
    out = capsys.readouterr().out
    assert "best by progress" in out and "share the best progress" in out and "best success" not in out
    plot = objective_vs_rho_plot(summary)
    assert plot.startswith("cube-double-play-singletask-task1-v0: progress % of complete trials vs rho")
    assert "success" not in plot


def test_entropy_series_shows_per_layer_targets_only_when_they_differ(tmp_path):
    from autotune.report.summary import entropy_series
    from tql.io import append_jsonl

    flat, table = tmp_path / "flat.jsonl", tmp_path / "table.jsonl"
    for step in (10, 20):
        common = {"step": step, "type": "train", "entropy/l0_value": 3.5, "entropy/l1_other": 3.0}
        append_jsonl(flat, {**common, "target_entropy": 2.0, "target_entropy/l0_value": 2.0,
                            "target_entropy/l1_other": 2.0})
        append_jsonl(table, {**common, "target_entropy": 2.75, "target_entropy/l0_value": 3.0,
                             "target_entropy/l1_other": 2.5})
    assert set(entropy_series(flat)) == {"l0_value", "l1_other", "target_entropy"}
    series = entropy_series(table)
    assert set(series) == {"l0_value", "l1_other", "H̄ l0_value", "H̄ l1_other"}
    assert series["H̄ l1_other"] == [(10, 2.5), (20, 2.5)] and series["l0_value"] == [(10, 3.5), (20, 3.5)]
