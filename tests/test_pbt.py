"""The population (PBT) controller and the population training loop."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from autotune.controllers import PBTRule, PopulationController
from autotune.schedules import Schedule
from tests.conftest import TINY_TASK
from tql.errors import ConfigError
from tql.io import read_jsonl
from tql.batched.pbt import PopulationTrainer
from tql.trainer import TrainConfig, TrainHooks

N = 43  # cube-double's token count


def test_initial_rhos_are_spread_and_targets_are_rho_log_n():
    ctl = PopulationController(N, PBTRule(members=4, rho_init_low=0.3, rho_init_high=0.9))
    assert ctl.rhos == pytest.approx([0.3, 0.5, 0.7, 0.9])
    assert ctl.target_entropy(0, 0.0) == pytest.approx([r * math.log(N) for r in (0.3, 0.5, 0.7, 0.9)])


def test_the_worst_copy_the_best_and_perturb_their_rho_within_bounds():
    rule = PBTRule(members=8, interval=100, fraction=0.25, perturb=(0.5, 2.0), rho_min=0.2, rho_max=0.95)
    ctl = PopulationController(N, rule)
    ctl.target_entropy(100, 0.25)
    fitness = [5.0, -1.0, 3.0, 7.0, 0.0, 6.0, -2.0, 1.0]  # worst: 6, 1; best: 3, 5
    before = list(ctl.rhos)
    copies = ctl.on_population(100, fitness)
    assert sorted(dst for _, dst in copies) == [1, 6]
    assert all(src in (3, 5) for src, _ in copies)
    for src, dst in copies:
        expected = {min(max(before[src] * f, 0.2), 0.95) for f in (0.5, 2.0)}
        assert ctl.rhos[dst] in expected
        assert ctl.histories[dst] == [(0.0, before[src]), (0.25, ctl.rhos[dst])]
    untouched = [i for i in range(8) if i not in (1, 6)]
    assert [ctl.rhos[i] for i in untouched] == [before[i] for i in untouched]


def test_exploits_only_every_interval_steps():
    ctl = PopulationController(N, PBTRule(members=4, interval=500))
    assert ctl.on_population(200, [0, 1, 2, 3]) == []
    assert len(ctl.on_population(500, [0, 1, 2, 3])) == 1
    assert ctl.on_population(800, [0, 1, 2, 3]) == []
    assert len(ctl.on_population(1000, [0, 1, 2, 3])) == 1
    every = PopulationController(N, PBTRule(members=4))  # default interval 0: at every measurement
    assert [len(every.on_population(step, [0, 1, 2, 3])) for step in (100, 150, 151)] == [1, 1, 1]


def test_diverged_members_are_always_replaced():
    ctl = PopulationController(N, PBTRule(members=4, fraction=0.25, interval=1))
    copies = ctl.on_population(1, [1.0, -math.inf, 2.0, -math.inf])
    assert sorted(dst for _, dst in copies) == [1, 3] and all(src in (0, 2) for src, _ in copies)


def test_rho_stays_in_bounds_over_many_rounds():
    rule = PBTRule(members=4, interval=1, perturb=(0.5, 3.0), rho_min=0.15, rho_max=0.8, rho_init_low=0.2,
                   rho_init_high=0.8)
    ctl = PopulationController(N, rule)
    for step in range(1, 200):
        ctl.target_entropy(step, step / 200)
        ctl.on_population(step, [float(i == step % 4) for i in range(4)])
        assert all(0.15 <= r <= 0.8 for r in ctl.rhos)


def _drive_with_a_resumed_twin(ctl, twin) -> None:
    """Five measurements of 4 members; ``twin`` takes ``ctl``'s state after the third and
    sees the same fitness from then on, so both must end alike."""
    for step in range(10, 60, 10):
        ctl.target_entropy(step, step / 60)
        ctl.on_population(step, [math.sin(step * (i + 1)) for i in range(4)])
        if step == 30:
            twin.load_state_dict(ctl.state_dict())
        elif step > 30:
            twin.target_entropy(step, step / 60)
            twin.on_population(step, [math.sin(step * (i + 1)) for i in range(4)])


def test_followed_schedule_replays_the_lineage_and_state_round_trips():
    ctl = PopulationController(N, PBTRule(members=4, interval=10, seed=3))
    twin = PopulationController(N, PBTRule(members=4, interval=10, seed=3))
    _drive_with_a_resumed_twin(ctl, twin)
    assert twin.rhos == ctl.rhos and twin.histories == ctl.histories
    for member in range(4):
        schedule = ctl.followed_schedule(member)
        for progress, rho in ctl.histories[member]:
            assert schedule.rho_at(progress) == pytest.approx(rho)
        assert schedule.rho_at(1.0) == pytest.approx(ctl.rhos[member])
        assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))).knots == schedule.knots


@pytest.mark.parametrize("rule, expected", [
    (PBTRule(members=1), "members=1"),
    (PBTRule(interval=-1), "interval=-1"),
    (PBTRule(fraction=0.7), "fraction=0.7"),
    (PBTRule(perturb=(0.8, -1.0)), "perturb="),
    (PBTRule(rho_init_low=0.05), "rho_min <= rho_init_low"),
])
def test_bad_rules_are_rejected(rule, expected):
    with pytest.raises(ConfigError, match=expected):
        PopulationController(N, rule)


# ----- the population training loop ---------------------------------------------------------
def _config(data_dir, steps=20, **overrides) -> TrainConfig:
    return TrainConfig.from_profile(TINY_TASK, "smoke", steps=steps, eval_every=10, eval_episodes=1,
                                    checkpoint_every=10, data_dir=str(data_dir), threads=1, **overrides)


class ScriptedCopies(TrainHooks):
    """Copies member 0 into member 2 at step 10; member i's H̄ is (i + 1) / 4 of log n."""

    def __init__(self):
        self.seen: list[tuple[int, list[float]]] = []

    def target_entropy(self, step, progress):
        return [(i + 1) / 4 * math.log(N) for i in range(3)]

    def on_population(self, step, fitness):
        self.seen.append((step, list(fitness)))
        return [(0, 2)] if step == 10 else []


def test_the_loop_makes_the_copies_the_controller_asks_for(tiny_data_dir, tmp_path):
    hooks = ScriptedCopies()
    trainer = PopulationTrainer(_config(tiny_data_dir), tmp_path / "run", 3, hooks, progress=False)
    snapshots = {}
    save = trainer._save_checkpoint
    trainer._save_checkpoint = lambda: (snapshots.setdefault(trainer.step, trainer.agent.full_state()), save())[1]
    result = trainer.run()
    state = snapshots[10]
    for name, tensor in state["state"].items():
        assert torch.equal(tensor[2], tensor[0]), name
    assert any(not torch.equal(t[1], t[0]) for t in state["state"].values())  # members differ: not vacuous
    for moments in (state["exp_avg"], state["exp_avg_sq"]):
        assert all(torch.equal(t[2], t[0]) for t in moments.values())
    # Fitness = -val TD, measured before the copies; the last measurement makes no copies.
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fitness_rows = [r for r in rows if r["type"] == "fitness"]
    assert [r["step"] for r in fitness_rows] == [10, 20] and hooks.seen[0][0] == 10 and len(hooks.seen) == 1
    assert fitness_rows[0]["fitness"] == pytest.approx([-v for v in fitness_rows[0]["val_td"]])
    assert fitness_rows[0]["copies"] == [[0, 2]] and fitness_rows[1]["copies"] == []
    targets = {r["member"]: r["target_entropy"] for r in rows if r["type"] == "train" and r["step"] == 20}
    assert targets == pytest.approx({i: (i + 1) / 4 * math.log(N) for i in range(3)}, rel=1e-6)
    best = max(range(3), key=lambda i: fitness_rows[1]["fitness"][i])
    assert result.members == 3 and result.extra["best_member"] == best and result.evals[-1]["member"] == best
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["members"] == 3 and summary["extra"]["best_member"] == best


class Crash(Exception):
    pass


class CrashingController(PopulationController):
    def target_entropy(self, step, progress):
        if step == 25:
            raise Crash()
        return super().target_entropy(step, progress)


def test_a_crashed_population_run_resumes_exactly(tiny_data_dir, tmp_path):
    rule = PBTRule(members=3, interval=10, perturb=(0.5, 1.5))
    config = _config(tiny_data_dir, steps=30)
    straight = PopulationController(N, rule)
    done = PopulationTrainer(config, tmp_path / "a", 3, straight, progress=False).run()
    with pytest.raises(Crash):
        PopulationTrainer(config, tmp_path / "b", 3, CrashingController(N, rule), progress=False).run()
    resumed = PopulationController(N, rule)
    again = PopulationTrainer(config, tmp_path / "b", 3, resumed, progress=False).run()
    assert again.extra["final_fitness"] == pytest.approx(done.extra["final_fitness"], rel=1e-5)
    assert resumed.histories == straight.histories and resumed.decisions == straight.decisions


def test_success_fitness_uses_evaluation_episodes_and_all_members_can_be_evaluated(tiny_data_dir, tmp_path):
    trainer = PopulationTrainer(_config(tiny_data_dir, steps=10), tmp_path / "run", 2, None, fitness="success",
                                fitness_episodes=1, final_eval_all=True, progress=False)
    result = trainer.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fitness = [r for r in rows if r["type"] == "fitness"][-1]
    assert fitness["fitness"] == fitness["success"] and len(fitness["success"]) == 2
    assert len(result.extra["members_success"]) == 2
    assert result.final_success == result.extra["members_success"][result.extra["best_member"]]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(members=1), "members=1 must be >= 2"),
    (dict(members=2, fitness="reward"), "fitness signal 'reward' is not one of: val_td, success"),
])
def test_bad_population_settings(tiny_data_dir, tmp_path, kwargs, expected):
    members = kwargs.pop("members")
    with pytest.raises(ConfigError, match=expected):
        PopulationTrainer(_config(tiny_data_dir), tmp_path / "run", members, **kwargs)


def test_cli_population_controller_writes_the_best_members_schedule(monkeypatch, capsys, tiny_data_dir, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "20",
                                "--eval-every", "10", "--eval-episodes", "1", "--controller", "population",
                                "--members", "3", "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet",
                                "--threads", "1")
    assert code == 0, err
    best = json.loads((out / "summary.json").read_text())["extra"]["best_member"]
    followed = Schedule.load(out / "schedule.json")
    assert followed.meta["source"] == f"population controller (member {best})"
    # The best member's schedule starts at its lineage's first rho: its own, or that of the
    # member it copied at the one exploit (step 10) if it lost there.
    fitness = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "fitness"]
    origin = dict((dst, src) for src, dst in fitness[0]["copies"]).get(best, best)
    assert followed.rho_at(0.0) == pytest.approx([0.3, 0.6, 0.9][origin])
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--controller",
                           "population", "--fitness", "reward", "--data-dir", str(tiny_data_dir),
                           "--out", str(tmp_path / "bad"), "--quiet")
    assert code == 2 and "fitness signal 'reward' is not one of: val_td, success" in err


# ----- depth profiles: members carry (rho_first, rho_last) ----------------------------------------

OLD_RULE_FIELDS = {"members", "interval", "fraction", "perturb", "rho_init_low", "rho_init_high", "rho_min",
                   "rho_max", "seed"}


def test_profile_members_start_flat_and_give_one_h_per_layer():
    ctl = PopulationController(N, PBTRule(members=3, rho_init_low=0.3, rho_init_high=0.9, profile=True), depth=3)
    assert ctl.rhos == ctl.rhos_last == pytest.approx([0.3, 0.6, 0.9])
    targets = ctl.target_entropy(0, 0.0)
    assert len(targets) == 3 and targets[1] == pytest.approx([0.6 * math.log(N)] * 3)
    with pytest.raises(ConfigError, match="needs the critic's depth"):
        PopulationController(N, PBTRule(profile=True))


def test_profile_members_perturb_first_and_last_independently():
    perturb = (0.5, 0.8, 1.25, 2.0)
    rule = PBTRule(members=4, interval=1, fraction=0.25, perturb=perturb, rho_min=0.1, rho_max=1.0, seed=7,
                   profile=True)
    ctl = PopulationController(N, rule, depth=2)
    twin = random.Random(7)  # the controller's draws, replayed: src, then first's factor, then last's

    def clip(x):
        return min(max(x, 0.1), 1.0)

    differed = False
    for step in range(1, 6):
        ctl.target_entropy(step, step / 10)
        before = (list(ctl.rhos), list(ctl.rhos_last))
        fitness = [float((i + step) % 4) for i in range(4)]  # one worst, one best, rotating
        [(src, dst)] = ctl.on_population(step, fitness)
        worst, best = fitness.index(0.0), fitness.index(3.0)
        assert (src, dst) == (twin.choice([best]), worst)
        f_first, f_last = twin.choice(perturb), twin.choice(perturb)
        differed |= f_first != f_last
        assert ctl.rhos[dst] == pytest.approx(clip(before[0][src] * f_first))
        assert ctl.rhos_last[dst] == pytest.approx(clip(before[1][src] * f_last))
        assert ctl.histories[dst][-1] == (step / 10, ctl.rhos[dst], ctl.rhos_last[dst])
        assert ctl.target_entropy(step, step / 10)[dst] == pytest.approx(
            [ctl.rhos[dst] * math.log(N), ctl.rhos_last[dst] * math.log(N)])
    assert differed  # the check above would not see a shared factor otherwise


def test_profile_members_follow_a_profile_schedule_and_state_round_trips(tmp_path):
    rule = PBTRule(members=4, interval=10, seed=3, perturb=(0.5, 2.0), profile=True)
    ctl, twin = PopulationController(N, rule, depth=2), PopulationController(N, rule, depth=2)
    _drive_with_a_resumed_twin(ctl, twin)
    assert (twin.rhos, twin.rhos_last) == (ctl.rhos, ctl.rhos_last)
    for member in range(4):
        schedule = Schedule.load(ctl.followed_schedule(member).save(tmp_path / f"m{member}.json"))
        assert schedule.is_profile and schedule.meta["rule"]["profile"] is True
        for progress, first, last in ctl.histories[member]:
            assert schedule.layer_rhos(progress, 2) == pytest.approx([first, last])
        assert schedule.layer_rhos(1.0, 2) == pytest.approx([ctl.rhos[member], ctl.rhos_last[member]])


def test_without_profile_the_schedule_file_is_as_before():
    ctl = PopulationController(N, PBTRule(members=4, interval=1))
    ctl.on_population(1, [0, 1, 2, 3])
    data = ctl.followed_schedule(0).to_dict()
    assert data["version"] == 1 and set(data["meta"]["rule"]) == OLD_RULE_FIELDS
    assert "rhos_last" not in ctl.state_dict() and ctl.rhos_last is None


def test_cli_population_with_depth_profiles_writes_a_profile(monkeypatch, capsys, tiny_data_dir, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke",
                                "--steps", "20", "--eval-every", "10", "--eval-episodes", "1", "--controller",
                                "population", "--members", "3", "--depth-profile", "--data-dir", str(tiny_data_dir),
                                "--out", str(out), "--quiet", "--threads", "1")
    assert code == 0, err
    followed = Schedule.load(out / "schedule.json")
    first, last = followed.layer_rhos(0.0, 2)
    assert followed.is_profile and first == last and any(first == pytest.approx(r) for r in (0.3, 0.6, 0.9))
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert all("target_entropy/l1_value" in r for r in rows) and rows
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--depth-profile",
                           "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "bad"), "--quiet")
    assert code == 2 and "--depth-profile applies only with --controller population (got --controller none)" in err
