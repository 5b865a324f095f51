"""python -m benchmarks.learning.collapse: the collapse map's measures against hand-built logs, its
grid and its checks."""

from __future__ import annotations

import pytest

from benchmarks.learning import collapse


def rows(values: list[tuple[int, float, float]], log_n: float) -> list[dict]:
    """Logged train rows of a 1-layer critic: (step, [VALUE] entropy, other entropy) as fractions."""
    return [{"step": s, "entropy/l0_value": v * log_n, "entropy/l0_other": o * log_n} for s, v, o in values]


def test_crossings_find_the_first_logged_update_below_each_threshold_and_the_lowest_entropy():
    log_n = 3.5
    logs = rows([(100, 1.0, 1.0), (200, 0.6, 0.9), (300, 0.45, 0.8), (400, 0.3, 0.15), (500, 0.35, 0.4)], log_n)
    (layer,) = collapse.crossings(logs, 1, log_n)
    assert layer["below_0.5"] == 300 and layer["below_0.2"] == 400  # the other rows cross 0.2 first
    assert layer["lowest_value"] == pytest.approx(0.3) and layer["lowest_other"] == pytest.approx(0.15)


def test_crossings_say_never_for_attention_that_stays_high():
    (layer,) = collapse.crossings(rows([(100, 0.99, 1.0), (200, 0.7, 0.9)], 3.0), 1, 3.0)
    assert layer["below_0.5"] is None and layer["below_0.2"] is None


def test_the_grid_names_every_configuration_arm_and_seed(tmp_path):
    args = collapse.parse_args(["--shapes", "0.03M,w32-d4", "--rates", "1e-3,3e-4", "--seeds", "0,1",
                                "--out", str(tmp_path)])
    runs = collapse.grid(args)
    assert len(runs) == 2 * 2 * 2 * 2  # shapes x rates x arms x seeds
    first = runs[0]
    assert first["config"] == "0.03M-lr0.001-40ep" and first["control"] == "off"
    assert first["dir"].endswith("cube-double-play-singletask-task1-v0/0.03M-lr0.001-40ep/off/seed-0")
    # both arms of a seed come next to each other, so a grid cut short still pairs them
    assert [(run["control"], run["seed"]) for run in runs[:4]] == [("off", 0), ("on", 0), ("off", 1), ("on", 1)]


def test_an_off_run_has_its_control_off_and_an_on_run_the_default_target(tmp_path):
    args = collapse.parse_args(["--shapes", "w32-d4", "--out", str(tmp_path), "--data-dir", str(tmp_path)])
    off, on = (collapse.train_config(args, run) for run in collapse.grid(args)[:2])
    assert not off.agent.entropy_control and on.agent.entropy_control
    assert off.agent.size == "w32-d4" and off.agent.critic_lr == 1e-3
    table = on.constant_target()
    assert len(table) == 4 and all(value == pytest.approx(0.6 * on.spec.max_entropy) for row in table for value in row)


@pytest.mark.parametrize("flag, value, said", [
    ("--controls", "of", "--controls 'of' is not one of: off, on"),
    ("--shapes", "w3-d4-h2", "dim=3 is not divisible by heads=2"),
])
def test_bad_settings_fail_in_one_line_before_any_data(flag, value, said, tmp_path, capsys):
    code = collapse.main([flag, value, "--out", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out.strip()
    assert code == 2 and said in out and "\n" not in out
    assert not (tmp_path / "data").exists()


def test_the_makespan_hands_each_run_to_the_first_free_process():
    assert collapse._makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert collapse._makespan([1.0, 1.0, 1.0], 1) == 3.0


def test_the_td_ratio_is_the_geometric_mean_of_matched_seeds_with_its_bootstrap_ci():
    off, on = [0.4, 0.1, 0.3], [0.1, 0.1, 0.1]  # ratios 4, 1, 3
    found = collapse.td_ratio(off, on, reps=4000)
    assert found["ratio"] == pytest.approx((4 * 1 * 3) ** (1 / 3))
    assert found["seeds_higher"] == 2 and found["seeds"] == 3
    # Resampled means of log ratios lie between the smallest and the largest: CI within [1, 4].
    assert 1.0 <= found["ci"][0] < found["ratio"] < found["ci"][1] <= 4.0 + 1e-9
    same = collapse.td_ratio([0.2, 0.3], [0.2, 0.3], reps=100)
    assert same["ratio"] == pytest.approx(1.0) and same["ci"] == pytest.approx([1.0, 1.0]) and same["seeds_higher"] == 0


def _saved_result(header) -> dict:
    """The committed cube-double result with ``header`` in place of its own."""
    import json
    from pathlib import Path

    path = Path(collapse.__file__).parent / "results" / "collapse_cube-double.json"
    return {**json.loads(path.read_text()), "header": header}


def test_an_older_file_with_a_list_header_reports_again_from_json(tmp_path, capsys):
    """Files written before benchmarks/common.py keep their header as lines: --from-json reads them."""
    import json

    old = ["$ python benchmarks/learning/collapse.py --steps 6000 --json x.json",
           "machine: x86_64, 2 CPU cores; torch 2.13.0+cpu; commit 847474a"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_saved_result(old)))
    assert collapse.main(["--from-json", str(path), "--reps", "50"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == old
    assert "off - on" in out


def test_a_new_file_starts_with_the_header_dict_and_reports_again_from_json(tmp_path, capsys):
    from benchmarks import common

    saved = _saved_result(None)
    path = common.write_json(tmp_path / "new.json", {k: v for k, v in saved.items() if k != "header"},
                             collapse.__file__, ["--steps", "6000"])
    assert collapse.main(["--from-json", str(path), "--reps", "50"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "$ python -m benchmarks.learning.collapse --steps 6000"


def test_a_runs_kept_measures_read_back_without_their_header(tmp_path):
    import json

    from benchmarks import common

    common.write_json(tmp_path / "collapse.json", {"success": 0.5, "evals": []}, collapse.__file__, [])
    assert "header" in json.loads((tmp_path / "collapse.json").read_text())
    assert collapse.kept_measures(tmp_path / "collapse.json") == {"success": 0.5, "evals": []}
    (tmp_path / "old.json").write_text(json.dumps({"success": 0.25}))  # an older run's: no header
    assert collapse.kept_measures(tmp_path / "old.json") == {"success": 0.25}
