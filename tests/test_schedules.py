"""Schedules (evaluation, JSON round trip, validation) and the feedback controller's rule."""

from __future__ import annotations

import json
import math

import pytest

from autotune.controllers import FeedbackController, FeedbackRule
from autotune.schedules import CombinedHooks, Schedule, ScheduleHooks
from tql.errors import ConfigError


def test_piecewise_linear_interpolates_between_knots():
    s = Schedule.piecewise([(0.0, 0.8), (0.5, 0.4), (1.0, 0.6)])
    # Independent: numpy's linear interpolation of the same knots.
    np = pytest.importorskip("numpy")
    for p in (0.0, 0.1, 0.25, 0.5, 0.7, 1.0):
        assert s.rho_at(p) == pytest.approx(np.interp(p, [0, 0.5, 1], [0.8, 0.4, 0.6]))
    assert s.rho_at(-1) == 0.8 and s.rho_at(2) == 0.6  # progress is clipped to [0, 1]


def test_step_interpolation_holds_each_knot_until_the_next():
    s = Schedule.piecewise([(0.0, 0.5), (0.3, 0.7), (1.0, 0.7)], interpolation="step")
    assert [s.rho_at(p) for p in (0.0, 0.29, 0.3, 0.9, 1.0)] == [0.5, 0.5, 0.7, 0.7, 0.7]


def test_cosine_and_constant():
    c = Schedule.cosine(0.9, 0.3)
    assert c.rho_at(0) == pytest.approx(0.9) and c.rho_at(1) == pytest.approx(0.3)
    assert c.rho_at(0.5) == pytest.approx(0.6)
    assert c.rho_at(0.25) == pytest.approx(0.3 + 0.6 * (1 + math.cos(math.pi / 4)) / 2)
    assert Schedule.constant(0.6).target_entropy(0.3, 43) == pytest.approx(0.6 * math.log(43))


@pytest.mark.parametrize("schedule", [
    Schedule.constant(0.55, task="t"), Schedule.cosine(0.8, 0.2), Schedule.piecewise([(0, 0.3), (0.4, 0.9), (1, 0.5)]),
    Schedule.piecewise([(0, 0.3), (1, 0.5)], interpolation="step"),
])
def test_json_round_trip(tmp_path, schedule):
    path = schedule.save(tmp_path / "s.json")
    loaded = Schedule.load(path)
    assert loaded == schedule and loaded.meta == schedule.meta
    assert json.loads(path.read_text())["format"] == "tql-tune-schedule"
    assert [loaded.rho_at(p / 10) for p in range(11)] == [schedule.rho_at(p / 10) for p in range(11)]


BASE = {"format": "tql-tune-schedule", "version": 1}


def _assert_load_refused(tmp_path, data, message: str) -> None:
    """Loading ``data`` from a file fails with one line that names the file and ``message``."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        Schedule.load(path)
    assert message in str(info.value) and "bad.json" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("data, message", [
    ({**BASE, "kind": "constant", "rho": 1.5}, "rho=1.5 is outside (0, 1]"),
    ({**BASE, "kind": "constant", "rho": "high"}, "rho='high' must be a number"),
    ({**BASE, "kind": "linear"}, "kind='linear' is not one of: constant, piecewise, cosine"),
    ({**BASE, "version": 7, "kind": "constant", "rho": 0.5}, "version=7"),
    ({"format": "other", "version": 1, "kind": "constant", "rho": 0.5}, "format='other'"),
    ({**BASE, "kind": "piecewise", "knots": [[0, 0.5]]}, "at least two"),
    ({**BASE, "kind": "piecewise", "knots": [[0, 0.5], [0.5, 0.6], [0.4, 0.6], [1, 0.5]]},
     "knots[2][0]=0.4 must be greater than knots[1][0]=0.5"),
    ({**BASE, "kind": "piecewise", "knots": [[0.1, 0.5], [1, 0.6]]}, "start at progress 0 and end at 1"),
    ({**BASE, "kind": "piecewise", "knots": [[0, 0.5], [1, 0]]}, "knots[1][1]=0.0 is outside (0, 1]"),
    ({**BASE, "kind": "piecewise", "knots": [[0, 0.5], [1]]}, "knots[1]=[1] must be a [progress, rho] pair"),
    ({**BASE, "kind": "piecewise", "knots": [[0, 0.5], [1, 0.5]], "interpolation": "cubic"},
     "interpolation='cubic' is not one of: linear, step"),
    ({**BASE, "kind": "cosine", "start": 0.5, "end": 0.4, "rho": 0.3}, "unknown field 'rho' for kind 'cosine'"),
])
def test_invalid_files_are_rejected_naming_the_field(tmp_path, data, message):
    _assert_load_refused(tmp_path, data, message)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Schedule.load(tmp_path / "x.json")
    with pytest.raises(ConfigError, match="not found"):
        Schedule.load(tmp_path / "none.json")


def test_schedule_hooks_give_rho_times_log_n_on_every_layer():
    hooks = ScheduleHooks(Schedule.piecewise([(0, 0.2), (1, 1.0)]), n_tokens=43, depth=3)
    table = hooks.target_entropy(50, 0.5)
    assert len(table) == 3 and all(row == pytest.approx([0.6 * math.log(43)] * 2) for row in table)


def feed(controller: FeedbackController, gaps: list[float], every: int = 100) -> list[float]:
    """Scripted fake signal: train TD 1.0, val TD = gap, one log every ``every`` steps."""
    rhos = []
    for i, gap in enumerate(gaps, start=1):
        step = i * every
        controller.target_entropy(step, step / (every * len(gaps)))
        controller.on_log(step, {"critic/td_loss": 1.0, "val/td_loss": gap})
        rhos.append(controller.rho)
    return rhos


def test_feedback_raises_rho_on_a_large_gap_and_lowers_it_on_a_small_one():
    rule = FeedbackRule(interval=100, smoothing=1.0, upper=1.5, lower=1.1, step=0.1, rho_init=0.6)
    c = FeedbackController(43, rule)
    rhos = feed(c, [2.0, 2.0, 1.3, 1.0, 1.0])
    assert rhos == pytest.approx([0.7, 0.8, 0.8, 0.7, 0.6])
    assert c.target_entropy(600, 0.99) == pytest.approx(0.6 * math.log(43))
    assert [d["rho"] for d in c.decisions] == pytest.approx(rhos)


def test_feedback_stays_within_bounds_and_smooths_the_signal():
    rule = FeedbackRule(interval=100, smoothing=1.0, step=0.1, rho_init=0.6, rho_min=0.4, rho_max=0.8)
    assert max(feed(FeedbackController(43, rule), [5.0] * 10)) == pytest.approx(0.8)
    assert min(feed(FeedbackController(43, rule), [0.5] * 10)) == pytest.approx(0.4)
    smooth = FeedbackController(43, FeedbackRule(interval=100, smoothing=0.5, upper=1.5, rho_init=0.6))
    # EMA with weight 0.5: 1.2 (hold), 1.4 (hold, though the raw 1.6 > upper), 1.7 (> 1.5: raise).
    assert feed(smooth, [1.2, 1.6, 2.0]) == pytest.approx([0.6, 0.6, 0.65])


def test_feedback_decides_only_every_interval_steps():
    c = FeedbackController(43, FeedbackRule(interval=300, smoothing=1.0, step=0.1, rho_init=0.5))
    assert feed(c, [3.0] * 6) == pytest.approx([0.5, 0.5, 0.6, 0.6, 0.6, 0.7])


def test_followed_schedule_replays_the_controller_path(tmp_path):
    c = FeedbackController(43, FeedbackRule(interval=100, smoothing=1.0, step=0.1, rho_init=0.5))
    feed(c, [3.0, 1.3, 0.5, 1.3])  # 4 logs over progress 0.25 .. 1.0
    schedule = Schedule.load(c.followed_schedule(task="t").save(tmp_path / "followed.json"))
    assert schedule.interpolation == "step" and schedule.meta["source"] == "feedback controller"
    assert [schedule.rho_at(p) for p in (0.0, 0.24, 0.25, 0.5, 0.74, 0.75)] == pytest.approx([0.5, 0.5, 0.6, 0.6, 0.6, 0.5])


def test_controller_state_round_trip_continues_the_same_path():
    rule = FeedbackRule(interval=100, smoothing=0.5, step=0.1, rho_init=0.5)
    a, b = FeedbackController(43, rule), FeedbackController(43, rule)
    feed(a, [3.0, 3.0])
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert feed(a, [0.2, 0.2]) == feed(b, [0.2, 0.2])


def test_bad_rules_are_rejected():
    with pytest.raises(ConfigError, match="lower=2.0, upper=1.5"):
        FeedbackController(43, FeedbackRule(lower=2.0))
    with pytest.raises(ConfigError, match="rho_init=0.1"):
        FeedbackController(43, FeedbackRule(rho_init=0.1, rho_min=0.2))


def test_combined_hooks_first_target_wins_and_every_hook_sees_evaluations():
    class Stop(ScheduleHooks):
        seen = 0

        def on_eval(self, step, result):
            Stop.seen += 1
            return True

    combined = CombinedHooks(ScheduleHooks(Schedule.constant(0.5), 43, 1), Stop(Schedule.constant(0.9), 43, 1))
    assert [row for row in combined.target_entropy(0, 0.0)] == [pytest.approx([0.5 * math.log(43)] * 2)]
    assert combined.on_eval(10, None) is True and Stop.seen == 1


def test_train_follows_a_schedule_file_and_logs_its_targets(monkeypatch, capsys, tiny_data_dir, tmp_path):
    from tests.conftest import TINY_TASK
    from tests.test_cli import run_cli

    schedule = Schedule.piecewise([(0, 0.3), (1, 0.9)]).save(tmp_path / "s.json")
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "40",
                                "--eval-every", "40", "--eval-episodes", "1", "--schedule", str(schedule),
                                "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    targets = {r["step"]: r["target_entropy"] for r in rows if r["type"] == "train"}
    # The row logged after update `step` used the target of progress (step - 1) / steps.
    assert targets == pytest.approx({s: (0.3 + 0.6 * (s - 1) / 40) * math.log(43) for s in (20, 40)}, rel=1e-5)


def test_train_with_the_feedback_controller_writes_the_schedule_it_followed(monkeypatch, capsys, tiny_data_dir,
                                                                            tmp_path):
    from tests.conftest import TINY_TASK
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "40",
                           "--eval-every", "40", "--eval-episodes", "1", "--controller", "feedback",
                           "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    followed = Schedule.load(out / "schedule.json")
    assert followed.meta["source"] == "feedback controller" and followed.rho_at(0.0) == pytest.approx(0.6)
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--controller", "feedback",
                           "--rho", "0.5", "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 2 and "give only one of --rho, --controller" in err


# ----- version 1 files and depth profiles (version 2) ---------------------------------------------

# A file as tql-tune wrote it before depth profiles existed: it must load and evaluate as it did.
V1_FILE = """{
  "format": "tql-tune-schedule",
  "version": 1,
  "kind": "piecewise",
  "knots": [[0.0, 0.8], [0.5, 0.6], [1.0, 0.5]],
  "interpolation": "linear",
  "meta": {"source": "optuna trial 3", "task": "cube-double-play-singletask-task2-v0", "n_tokens": 43}
}"""


def test_a_version_1_file_loads_unchanged_and_is_saved_back_as_it_was(tmp_path):
    path = tmp_path / "v1.json"
    path.write_text(V1_FILE)
    schedule = Schedule.load(path)
    assert not schedule.is_profile and schedule.kind == "piecewise"
    assert [schedule.rho_at(p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)] == pytest.approx([0.8, 0.7, 0.6, 0.55, 0.5])
    assert schedule.layer_rhos(0.25, 3) == pytest.approx([0.7, 0.7, 0.7])  # one curve: every layer alike
    assert json.loads(schedule.save(tmp_path / "again.json").read_text()) == json.loads(V1_FILE)


# first: linear 0.8 -> 0.4; last: cosine 0.6 -> 0.2 (0.4 at p = 0.5).
V2_FILE = """{
  "format": "tql-tune-schedule", "version": 2, "kind": "profile",
  "first": {"kind": "piecewise", "knots": [[0.0, 0.8], [1.0, 0.4]], "interpolation": "linear"},
  "last": {"kind": "cosine", "start": 0.6, "end": 0.2},
  "meta": {"source": "hand-written"}
}"""


@pytest.mark.parametrize("progress, depth, expected", [
    (0.5, 1, [0.6]),  # a depth-1 critic follows the first layer's curve
    (0.5, 2, [0.6, 0.4]),
    (0.5, 3, [0.6, 0.5, 0.4]),
    (0.5, 5, [0.6, 0.55, 0.5, 0.45, 0.4]),
    (0.0, 5, [0.8, 0.75, 0.7, 0.65, 0.6]),
    (1.0, 3, [0.4, 0.3, 0.2]),
    (0.25, 2, [0.7, 0.2 + 0.4 * (1 + math.cos(math.pi / 4)) / 2]),
])
def test_a_profile_gives_each_layer_its_rho_at_any_depth(tmp_path, progress, depth, expected):
    path = tmp_path / "v2.json"
    path.write_text(V2_FILE)
    schedule = Schedule.load(path)
    assert schedule.layer_rhos(progress, depth) == pytest.approx(expected)
    table = schedule.rho_table(progress, depth)
    assert [row[0] for row in table] == [row[1] for row in table] == pytest.approx(expected)  # groups share it
    nats = schedule.target_table(progress, depth, 61)
    assert [row[0] for row in nats] == pytest.approx([r * math.log(61) for r in expected])


def test_a_profile_summarises_as_the_mean_of_its_first_and_last_layer():
    schedule = Schedule.profile(0.8, Schedule.piecewise([(0, 0.6), (1, 0.4)]), task="t")
    assert schedule.rho_at(0.5) == pytest.approx((0.8 + 0.5) / 2)
    assert schedule.mean_rho() == pytest.approx((0.8 + 0.5) / 2)
    assert schedule.target_entropy(0.0, 43) == pytest.approx(0.7 * math.log(43))
    assert schedule.describe() == ("profile: first layer constant rho=0.800, last layer piecewise-linear "
                                   "[0.00:0.600, 1.00:0.400]")


@pytest.mark.parametrize("schedule", [
    Schedule.profile(0.8, 0.66, task="t", n_tokens=43),
    Schedule.profile(Schedule.cosine(0.9, 0.5), Schedule.piecewise([(0, 0.3), (0.5, 0.7), (1, 0.6)], "step")),
])
def test_profile_round_trip(tmp_path, schedule):
    path = schedule.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["kind"] == "profile" and set(data["first"]) >= {"kind"}
    loaded = Schedule.load(path)
    assert loaded == schedule and loaded.meta == schedule.meta
    for depth in (1, 2, 5):
        assert [loaded.layer_rhos(p / 10, depth) for p in range(11)] == \
               [schedule.layer_rhos(p / 10, depth) for p in range(11)]


def test_one_curve_schedules_are_still_written_as_version_1():
    assert Schedule.cosine(0.8, 0.2).to_dict()["version"] == 1


BASE2 = {"format": "tql-tune-schedule", "version": 2, "kind": "profile"}
CONST = {"kind": "constant", "rho": 0.5}


@pytest.mark.parametrize("data, message", [
    ({**BASE, "kind": "profile", "first": CONST, "last": CONST},
     "kind='profile' is not one of: constant, piecewise, cosine (kind 'profile' needs version 2)"),
    ({**BASE2, "version": 3, "first": CONST, "last": CONST}, "version=3; this tql-tune reads versions 1, 2"),
    ({**BASE2, "first": CONST}, "last=None must be a curve object"),
    ({**BASE2, "first": 0.5, "last": CONST}, "first=0.5 must be a curve object"),
    ({**BASE2, "first": {"kind": "constant", "rho": 1.5}, "last": CONST}, "first.rho=1.5 is outside (0, 1]"),
    ({**BASE2, "first": CONST, "last": {"kind": "profile", "first": CONST, "last": CONST}},
     "last.kind='profile' is not one of: constant, piecewise, cosine"),
    ({**BASE2, "first": CONST, "last": {**CONST, "meta": {}}},
     "unknown field 'last.meta' for kind 'constant'; valid: rho"),
    ({**BASE2, "first": CONST, "last": {"kind": "cosine", "start": 0.5}}, "last.end=None must be a number"),
    ({**BASE2, "first": CONST, "last": {"kind": "piecewise", "knots": [[0, 0.5], [0, 0.6], [1, 0.4]]}},
     "last.knots[1][0]=0.0 must be greater than last.knots[0][0]=0.0"),
    ({**BASE2, "first": {"kind": "piecewise", "knots": [[0, 0.5], [1, 0.5]], "interpolation": "cubic"}, "last": CONST},
     "first.interpolation='cubic' is not one of: linear, step"),
    ({**BASE2, "first": CONST, "last": CONST, "rho": 0.5},
     "unknown field 'rho' for kind 'profile'; valid: first, last, meta"),
    ({**BASE2, "kind": "steps", "first": CONST, "last": CONST},
     "kind='steps' is not one of: constant, piecewise, cosine, profile"),
])
def test_bad_version_2_files_are_rejected_naming_the_field(tmp_path, data, message):
    _assert_load_refused(tmp_path, data, message)


def test_a_version_2_file_may_hold_one_curve():
    assert Schedule.from_dict({**BASE2, "kind": "constant", "rho": 0.4}).layer_rhos(0.3, 2) == [0.4, 0.4]


def test_profiles_refuse_bad_curves_when_built_in_code():
    with pytest.raises(ConfigError, match="not another profile"):
        Schedule.profile(Schedule.profile(0.5, 0.5), 0.5)
    with pytest.raises(ConfigError, match=r"last.rho=0 is outside \(0, 1\]"):
        Schedule.profile(0.5, 0)


def test_schedule_hooks_give_a_depth_table_and_need_the_depth():
    hooks = ScheduleHooks(Schedule.profile(0.9, 0.3), n_tokens=43, depth=4)
    table = hooks.target_entropy(0, 0.0)
    assert [row[0] for row in table] == [row[1] for row in table] == \
           pytest.approx([r * math.log(43) for r in (0.9, 0.7, 0.5, 0.3)])
    with pytest.raises(ConfigError, match="depth=None must be"):
        ScheduleHooks(Schedule.constant(0.5), 43, None)


def test_train_follows_a_profile_schedule_per_layer(monkeypatch, capsys, tiny_data_dir, tmp_path):
    from tests.conftest import TINY_TASK
    from tests.test_cli import run_cli

    schedule = Schedule.profile(0.8, 0.55).save(tmp_path / "profile.json")
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke",
                                "--steps", "20", "--eval-every", "20", "--eval-episodes", "1", "--schedule",
                                str(schedule), "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 0, err
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    assert rows and "profile: first layer constant rho=0.800" in stdout
    for row in rows:  # the smoke critic has 2 layers: first and last
        assert row["target_entropy/l0_value"] == pytest.approx(0.8 * math.log(43), rel=1e-6)
        assert row["target_entropy/l0_other"] == pytest.approx(0.8 * math.log(43), rel=1e-6)
        assert row["target_entropy/l1_value"] == pytest.approx(0.55 * math.log(43), rel=1e-6)
        assert row["target_entropy/l1_other"] == pytest.approx(0.55 * math.log(43), rel=1e-6)


# ----- the feedback controller with a fixed depth profile ----------------------------------------

OLD_FEEDBACK_FIELDS = {"interval", "smoothing", "upper", "lower", "step", "rho_init", "rho_min", "rho_max"}


def test_feedback_without_an_offset_writes_the_schedule_it_always_did():
    c = FeedbackController(43, FeedbackRule(interval=100, smoothing=1.0, step=0.1, rho_init=0.5))
    feed(c, [3.0, 1.3])
    assert isinstance(c.target_entropy(300, 1.0), float)
    data = c.followed_schedule().to_dict()
    assert data["version"] == 1 and set(data["meta"]["rule"]) == OLD_FEEDBACK_FIELDS


def test_feedback_with_an_offset_moves_the_profile_as_a_whole(tmp_path):
    rule = FeedbackRule(interval=100, smoothing=1.0, step=0.1, rho_init=0.6, profile_offset=-0.2)
    c = FeedbackController(43, rule, depth=3)
    assert c.target_entropy(0, 0.0) == pytest.approx([r * math.log(43) for r in (0.6, 0.5, 0.4)])
    # Bounds narrow to [0.4, 1.0] so that the last layer (rho - 0.2) stays >= rho_min = 0.2.
    assert feed(c, [3.0, 0.5, 0.5, 0.5]) == pytest.approx([0.7, 0.6, 0.5, 0.4])
    assert c.target_entropy(400, 1.0) == pytest.approx([r * math.log(43) for r in (0.4, 0.3, 0.2)])
    followed = Schedule.load(c.followed_schedule(task="t").save(tmp_path / "followed.json"))
    assert followed.is_profile and followed.meta["rule"]["profile_offset"] == -0.2
    progress = (0.0, 0.25, 0.5, 0.75)  # each decision holds from its log's progress on
    assert [followed.layer_rhos(p, 2) for p in progress] == \
           [pytest.approx(pair) for pair in ([0.6, 0.4], [0.7, 0.5], [0.6, 0.4], [0.5, 0.3])]


def test_feedback_offset_needs_the_depth_and_room_within_the_bounds():
    with pytest.raises(ConfigError, match="needs the critic's depth"):
        FeedbackController(43, FeedbackRule(profile_offset=-0.1))
    with pytest.raises(ConfigError, match=r"profile_offset=0.5 puts the last layer's first rho \(rho_init \+ "
                                          r"profile_offset = 1.1\) outside \[rho_min, rho_max\] = \[0.2, 1.0\]"):
        FeedbackController(43, FeedbackRule(profile_offset=0.5), depth=2)


def test_train_with_a_feedback_offset_logs_both_layers_and_writes_a_profile(monkeypatch, capsys, tiny_data_dir,
                                                                           tmp_path):
    from tests.conftest import TINY_TASK
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--profile", "smoke", "--steps", "20",
                           "--eval-every", "20", "--eval-episodes", "1", "--controller", "feedback",
                           "--last-layer-offset", "-0.15", "--data-dir", str(tiny_data_dir), "--out", str(out),
                           "--quiet")
    assert code == 0, err
    followed = Schedule.load(out / "schedule.json")
    assert followed.layer_rhos(0.0, 2) == pytest.approx([0.6, 0.45])
    row = next(r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train")
    assert row["target_entropy/l1_value"] == pytest.approx(0.45 * math.log(43), rel=1e-6)
    code, _, err = run_cli(monkeypatch, capsys, "train", "--task", TINY_TASK, "--last-layer-offset", "-0.1",
                           "--data-dir", str(tiny_data_dir), "--out", str(out), "--quiet")
    assert code == 2 and "--last-layer-offset applies only with --controller feedback (got --controller none)" in err
