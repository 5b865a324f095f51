"""python -m benchmarks.learning.sensitivity: Monte-Carlo returns of the data and the hierarchical
bootstrap against computations written out by hand, and ``--batch`` members against the same
runs trained alone."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.learning.sensitivity import mc_returns
from benchmarks.learning.sensitivity_report import bootstrap_cis


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
    assert bootstrap_cis(same, 200, rng) == {"mean": (1.0, 1.0), "iqm": (1.0, 1.0)}
    mixed = [np.array([1.0] * 5 + [0.0] * 15), np.array([1.0] * 15 + [0.0] * 5)]
    low, high = bootstrap_cis(mixed, 2000, rng)["mean"]
    assert low < 0.5 < high and 0.0 <= low and high <= 1.0


def test_the_iqm_ci_comes_from_the_mean_ci_draws_and_ignores_one_outlying_seed():
    # 11 seeds at 0.1 and one at 1.0: the IQM of 12 trims 3 at each end, so the outlier counts
    # only in resamples that draw it 4 times or more (about 1%); the mean moves with 2 copies
    per_seed = [np.full(4, 0.1)] * 11 + [np.full(4, 1.0)]
    cis = bootstrap_cis(per_seed, 4000, np.random.default_rng(3))
    assert cis["iqm"] == pytest.approx((0.1, 0.1))
    assert cis["mean"][1] > 0.2
    # the mean's CI is the one the plain resampling loop gives with the same generator
    rng, means = np.random.default_rng(3), []
    for _ in range(4000):
        drawn = [per_seed[i] for i in rng.integers(len(per_seed), size=len(per_seed))]
        means.append(np.mean([rng.choice(v, size=len(v)).mean() for v in drawn]))
    assert cis["mean"] == pytest.approx((np.quantile(means, 0.025), np.quantile(means, 0.975)))


def test_a_batch_gives_each_member_the_checkpoint_and_measures_of_its_run_alone(tiny_data_dir, tmp_path,
                                                                                monkeypatch):
    """``--batch`` trains each layout's runs as one population; each member's checkpoint, written
    into its own folder, holds what the same run trained alone (``--jobs``) holds."""
    from pathlib import Path

    import torch

    import benchmarks.learning.sensitivity as sensitivity
    from tests.conftest import TINY_TASK

    original = sensitivity.train_config

    def on_the_tiny_data(args, run):  # the fixture's 3 episodes of 100 steps, not the profile's size
        config = original(args, run)
        config.data_episodes, config.data_episode_length = 3, 100
        return config

    monkeypatch.setattr(sensitivity, "train_config", on_the_tiny_data)
    argv = ["--task", TINY_TASK, "--profile", "smoke", "--steps", "20", "--eval-every", "20", "--rhos", "0.3,0.9",
            "--seeds", "0", "--eval-episodes", "1", "--horizon", "50", "--data-dir", str(tiny_data_dir)]
    batch = sensitivity.parse_args(argv + ["--batch", "--out", str(tmp_path / "batch")])
    alone = sensitivity.parse_args(argv + ["--jobs", "1", "--out", str(tmp_path / "alone")])
    threads = torch.get_num_threads()
    try:
        batched = sensitivity.train_batches(batch, sensitivity.grid(batch))
        single = [sensitivity.train_and_measure(alone, run) for run in sensitivity.grid(alone)]
    finally:
        torch.set_num_threads(threads)
    assert [r["label"] for r in batched] == ["0.3", "0.9"]
    for member, run in zip(batched, single):
        saved = [torch.load(Path(r["dir"]) / "checkpoint.pt", weights_only=False) for r in (member, run)]
        assert saved[0]["step"] == saved[1]["step"] == 20
        for name, tensor in saved[1]["agent"]["model"].items():
            # atol: Adam's normalised step can turn a rounding-level gradient difference (batched
            # vs single matmuls) into a step of up to the rate (1e-4 here) on a parameter whose
            # gradient is near 0; 20 updates leave such parameters ~1e-5 apart on some CPUs
            torch.testing.assert_close(saved[0]["agent"]["model"][name], tensor, rtol=1e-4, atol=5e-5, msg=name)
        assert member["val_td"] == pytest.approx(run["val_td"], rel=1e-3)
        assert member["overestimation"] == pytest.approx(run["overestimation"], rel=1e-4)
        for got, want in zip(member["attention"], run["attention"]):
            assert got["value"]["entropy"] == pytest.approx(want["value"]["entropy"], rel=1e-4)
    written = {r["dir"]: (Path(r["dir"]) / "checkpoint.pt").stat().st_mtime_ns for r in batched}
    assert sensitivity.train_batches(batch, sensitivity.grid(batch)) == batched  # finished: measured again,
    assert {d: (Path(d) / "checkpoint.pt").stat().st_mtime_ns for d in written} == written  # not retrained


def _hypergeometric_two_sided(a: int, row: int, col: int, total: int) -> float:
    """Fisher's two-sided p by hand: every table with the same margins at most as likely as ours."""
    from math import comb

    def prob(k: int) -> float:
        return comb(col, k) * comb(total - col, row - k) / comb(total, row)

    observed = prob(a)
    return sum(prob(k) for k in range(max(0, row + col - total), min(row, col) + 1) if prob(k) <= observed * (1 + 1e-9))


def test_success_tests_pool_the_other_targets_of_a_layout_and_report_again_from_json(tmp_path):
    import json

    from benchmarks.learning.sensitivity import main

    def run(label, seed, success, sharing="layer_group"):
        return {"label": label, "sharing": sharing, "seed": seed, "name": f"{label}-{sharing}", "dir": "-",
                "step": 100, "success": success, "episodes": 20, "progress": success, "val_td": 0.5,
                "overestimation": 1.0, "attention": None, "engaged_at": None}

    runs = [run("0.3", 0, 0.0), run("0.3", 1, 0.0), run("0.6", 0, 0.25), run("0.6", 1, 0.1),
            run("0.9", 0, 0.2), run("0.9", 1, 0.15), run("0.3", 0, 0.5, "global")]
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"command": "python benchmarks/learning/sensitivity.py --task "
                                            "cube-single-play-singletask-task1-v0 --steps 100", "runs": runs}))
    again = tmp_path / "again.json"
    assert main(["--from-json", str(saved), "--json", str(again), "--reps", "50"]) == 0
    rows = {(r["label"], r["sharing"]): r for r in json.loads(again.read_text())["rows"]}
    low = rows[("0.3", "layer_group")]
    assert (low["successes"], low["episodes"]) == (0, 40)
    # against 0.6 and 0.9 pooled: 7 + 7 = 14 of 80; the 'global' run is another layout's
    assert low["success_p"] == pytest.approx(_hypergeometric_two_sided(0, 40, 14, 120), rel=1e-9)
    assert rows[("0.3", "global")]["success_p"] == 1.0  # alone in its layout: nothing to compare with
    # Seeds as the units: of the 15 ways to pick 2 of the 6 seeds, only {0, 0} is as far from the
    # rest (means 0 vs 0.175; any other pair's mean is >= 0.05, at most 0.225, never 0.2333 or more).
    assert low["seed_success"] == [0.0, 0.0] and low["seed_p"] == pytest.approx(1 / 15)
    assert rows[("0.3", "global")]["seed_p"] == 1.0
    # its difference from the rest: 0 - 0.175 (its own episodes never succeed, so every resample
    # is below 0); alone in a layout there is nothing to subtract
    assert low["seed_diff"] == pytest.approx(-0.175)
    assert low["seed_diff_ci"][0] < -0.175 < low["seed_diff_ci"][1] < 0
    assert rows[("0.3", "global")]["seed_diff"] is None
    # the layout question: 'global' against the other layouts at rho 0.3 (per (layer, group), 0 of
    # 40): of the 3 ways to pick 1 of the 3 seeds, only its own is as far from the rest (0.5 vs 0)
    versus = rows[("0.3", "global")]
    assert versus["layout_p"] == pytest.approx(1 / 3) and versus["layout_diff"] == pytest.approx(0.5)
    assert 0 < versus["layout_diff_ci"][0] < 0.5 < versus["layout_diff_ci"][1] <= 1
    assert rows[("0.6", "layer_group")]["layout_diff"] is None  # no other layout ran at rho 0.6
    # IQM over seeds beside the mean (of 2 seeds, IQM trims nothing), with its CI read back
    middle = rows[("0.6", "layer_group")]
    assert middle["success_iqm"] == pytest.approx(0.175) and middle["progress_iqm"] == pytest.approx(0.175)
    assert middle["success_iqm_ci"] == pytest.approx(middle["success_ci"])  # the same draws, the same statistic
    assert middle["success_iqm_ci"][0] < 0.175 < middle["success_iqm_ci"][1]


def test_the_difference_from_the_rest_varies_with_the_episodes_even_when_seeds_agree():
    from benchmarks.learning.sensitivity_report import difference_from_rest

    two_of_twenty = np.array([1.0] * 2 + [0.0] * 18)
    point, (low, high) = difference_from_rest([two_of_twenty] * 2, [two_of_twenty] * 2, 4000)
    # seeds alone could not move (all four score 10%); episodes do: the normal approximation
    # of a difference of two means of 40 Bernoulli(0.1) episodes has sd sqrt(2 * 0.09 / 40)
    sd = np.sqrt(2 * 0.1 * 0.9 / 40)
    assert point == 0.0
    assert low == pytest.approx(-1.96 * sd, abs=0.03) and high == pytest.approx(1.96 * sd, abs=0.03)


def test_seed_permutation_p_samples_when_there_are_too_many_splits(monkeypatch):
    from benchmarks.learning import sensitivity_report

    own, others = [0.0, 0.0], [0.25, 0.1, 0.2, 0.15]
    assert sensitivity_report.seed_permutation_p(own, others) == pytest.approx(1 / 15)
    monkeypatch.setattr(sensitivity_report, "EXACT_LIMIT", 0)
    assert sensitivity_report.seed_permutation_p(own, others) == pytest.approx(1 / 15, abs=0.01)
    assert sensitivity_report.seed_permutation_p([0.1, 0.1], [0.1, 0.1, 0.1]) == 1.0  # nothing differs


def test_from_json_pools_the_seeds_of_several_files_and_refuses_other_settings(tmp_path, capsys):
    import json

    from benchmarks.learning.sensitivity import main

    def saved(name, seeds, steps=100):
        runs = [{"label": "0.3", "sharing": "layer_group", "seed": s, "name": "0.3-layer_group", "dir": "-",
                 "step": steps, "success": 0.0, "episodes": 20, "progress": 0.0, "val_td": 0.5,
                 "overestimation": 1.0, "attention": None, "engaged_at": None} for s in seeds]
        path = tmp_path / name
        path.write_text(json.dumps({"command": "python benchmarks/learning/sensitivity.py --task "
                                               f"cube-single-play-singletask-task1-v0 --steps {steps}", "runs": runs}))
        return str(path)

    first, second, longer = saved("a.json", [0, 1]), saved("b.json", [2, 3, 4]), saved("c.json", [5], steps=200)
    pooled = tmp_path / "pooled.json"
    assert main(["--from-json", f"{first},{second}", "--json", str(pooled), "--reps", "20"]) == 0
    written = json.loads(pooled.read_text())
    assert written["rows"][0]["seeds"] == 5 and " + " in written["command"]
    assert main(["--from-json", str(pooled), "--reps", "20"]) == 0  # a pooled file reports again
    assert main(["--from-json", f"{first},{longer}", "--reps", "20"]) == 2
    assert "only runs of the same task, budget and agent pool" in capsys.readouterr().out
    assert main(["--from-json", f"{first},{first}", "--reps", "20"]) == 2
    assert "0.3-layer_group seed 0, 0.3-layer_group seed 1 more than once" in capsys.readouterr().out


def test_a_saved_command_gives_its_arguments_whether_run_as_a_module_or_as_a_file(tmp_path, capsys):
    """Files since benchmarks/common.py say ``python -m benchmarks.learning.sensitivity``, older ones the
    file; both pool, and a report written again starts with its own header."""
    import json

    from benchmarks.learning.sensitivity import main, script_arguments

    args = ["--task", "cube-single-play-singletask-task1-v0", "--steps", "100"]
    assert script_arguments("python -m benchmarks.learning.sensitivity " + " ".join(args)) == args
    assert script_arguments("python benchmarks/learning/sensitivity.py " + " ".join(args)) == args
    runs = [{"label": "0.3", "sharing": "layer_group", "seed": s, "name": "0.3-layer_group", "dir": "-", "step": 100,
             "success": 0.05 * s, "episodes": 20, "progress": 0.0, "val_td": 0.5, "overestimation": 1.0,
             "attention": None, "engaged_at": None} for s in (0, 1)]
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps({"header": {"command": "x"}, "command": "python -m benchmarks.learning.sensitivity "
                               + " ".join(args), "runs": runs[:1]}))
    old.write_text(json.dumps({"command": "python benchmarks/learning/sensitivity.py " + " ".join(args),
                               "runs": runs[1:]}))
    again = tmp_path / "again.json"
    assert main(["--from-json", f"{new},{old}", "--json", str(again), "--reps", "20"]) == 0
    assert capsys.readouterr().out.startswith("$ python -m benchmarks.learning.sensitivity --from-json ")
    written = json.loads(again.read_text())
    assert list(written)[:2] == ["header", "command"] and written["rows"][0]["seeds"] == 2
    assert written["header"]["command"].startswith("python -m benchmarks.learning.sensitivity --from-json ")


def test_the_papers_baselines_are_arms_beside_the_targets(tmp_path):
    """``--rhos 0.6,off,fql``: the control off, and FQL's MLP critic, on the same profile and seeds."""
    import benchmarks.learning.sensitivity as sensitivity
    from tql.errors import ConfigError

    args = sensitivity.parse_args(["--rhos", "0.6,off,fql", "--seeds", "0", "--out", str(tmp_path),
                                   "--data-dir", str(tmp_path)])
    configs = {run["label"]: sensitivity.train_config(args, run) for run in sensitivity.grid(args)}
    assert configs["0.6"].agent.entropy_control and configs["0.6"].rho == 0.6
    assert not configs["off"].agent.entropy_control and configs["off"].agent.critic == "tql"
    assert configs["fql"].agent.critic == "mlp"
    assert configs["off"].agent.alpha_init == configs["0.6"].agent.alpha_init == 0.01  # the same --agent options
    bad = sensitivity.parse_args(["--rhos", "0.6,of", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--rhos 'of' is not a number or one of: published, off, fql"):
        sensitivity.train_config(bad, sensitivity.grid(bad)[-1])
