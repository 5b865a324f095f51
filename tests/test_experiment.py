"""`tql-tune experiment`: the spec, the sizing to a budget, and one tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
import torch

from autotune.experiment.plan import plan_experiment, usable_approaches
from autotune.experiment.cost import experiment_work, fit_steps, total_seconds
from autotune.experiment.spec import APPROACHES, Machine, experiment_from_dict, load_experiment
from tql.errors import ConfigError

SPEC = Path(__file__).resolve().parents[1] / "studies" / "experiment.toml"
CPU = Machine(name="a small CPU", updates_per_second=20.0, member_updates_per_second=16.0,
              eval_env_steps_per_second=200.0, eval_processes=1, data_transitions_per_second=150.0, processes=2,
              run_overhead_seconds=2.0)


def raw_spec() -> dict:
    return tomllib.loads(SPEC.read_text())


def test_the_shipped_spec_loads_and_its_reference_plan_fits_its_minutes():
    spec = load_experiment(SPEC)
    assert set(spec.approaches) == set(APPROACHES)
    plan = plan_experiment(spec, None, None, n_missing=len({t.domain for t in spec.task_specs()}),
                           study_batch=8, compare_batched=True)
    assert plan.steps >= spec.min_steps and plan.steps % spec.step_quantum == 0
    assert sum(plan.minutes_reference()) <= spec.minutes
    # One quantum more would not fit: the sizing uses the budget, it does not just pass it.
    assert total_seconds(plan.phases, spec.reference, plan.steps + spec.step_quantum) > spec.minutes * 60


def test_dry_run_table_replaces_the_toy_sized_values():
    full, dry = load_experiment(SPEC), load_experiment(SPEC).for_dry_run()
    table = raw_spec()["dry_run"]
    assert dry.profile == table["profile"] and dry.seeds == table["seeds"]
    assert dry.tasks == tuple(table["tasks"])
    assert dry.approaches == full.approaches and dry.reference == full.reference  # kept where not given


@pytest.mark.parametrize("table, key, value, words", [
    ("experiment", "approaches", ["default", "bogus"], "'bogus' is not one of"),
    ("experiment", "seeds", 0, "seeds=0"),
    ("experiment", "profile", "huge", "profile='huge'"),
    ("run", "eval_episodes", -1, "eval_episodes=-1"),
    ("run", "typo", 1, "unknown key run.typo"),
    ("reference", "updates_per_second", 0, "updates_per_second=0"),
    ("reference", "workers", 0, "workers=0 must be an integer >= 1"),
    ("reference", "compile_min_steps", 2000, "compiled_updates_per_second=0.0 must be"),
    ("reference", "compile_seconds", -1, "compile_seconds=-1 must be a number >= 0"),
    ("dry_run", "steps", 5, "unknown key dry_run.steps"),
])
def test_bad_spec_values_fail_with_one_line_naming_them(table, key, value, words):
    raw = raw_spec()
    raw[table][key] = value
    with pytest.raises(ConfigError, match=words) as info:
        experiment_from_dict(raw, source="test.toml", folder=SPEC.parent)
    assert "\n" not in str(info.value)


def _cpu_plan_phases(spec):
    tasks = spec.task_specs()
    approaches, _ = usable_approaches(spec, tasks)
    return experiment_work(spec, tasks, approaches, missing_domains=2, study_batch=1, compare_batched=False)


def test_steps_grow_with_the_budget_and_fit_it_by_their_own_estimate():
    spec = load_experiment(SPEC).for_dry_run()
    phases = _cpu_plan_phases(spec)
    budgets = [3, 5, 10, 30, 120]
    steps = [fit_steps(spec, phases, CPU, minutes * 60) for minutes in budgets]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    for minutes, s in zip(budgets, steps):
        assert total_seconds(phases, CPU, s) <= minutes * 60
        assert s >= spec.min_steps and s % spec.step_quantum == 0


def test_a_faster_machine_gets_more_steps_in_the_same_budget():
    spec = load_experiment(SPEC).for_dry_run()
    phases = _cpu_plan_phases(spec)
    faster = dataclasses.replace(CPU, updates_per_second=40.0, member_updates_per_second=32.0)
    assert fit_steps(spec, phases, faster, 600) > fit_steps(spec, phases, CPU, 600)


def test_a_batch_is_evaluated_together_so_more_processes_share_its_episodes():
    from autotune.experiment.cost import episode_steps, study_work

    spec = load_experiment(SPEC)
    task = spec.task_specs()[0]
    gpu = dataclasses.replace(CPU, eval_processes=15, run_overhead_seconds=0.0)
    env_steps = 8 * spec.study_seeds * spec.evaluations * spec.eval_episodes * episode_steps(spec, task)
    one_by_one, batched = study_work(spec, [task], "t", 8, 1), study_work(spec, [task], "t", 8, 8)
    assert one_by_one.fixed_seconds(gpu) == pytest.approx(env_steps / (200.0 * min(15, spec.eval_episodes)))
    together = min(15, spec.eval_episodes * 8 * spec.study_seeds)
    assert batched.fixed_seconds(gpu) == pytest.approx(env_steps / (200.0 * together))
    assert batched.fixed_seconds(CPU) == one_by_one.fixed_seconds(CPU) - 8 * spec.study_seeds * 2.0 + 2.0


def test_runs_side_by_side_take_the_time_of_ceil_runs_over_workers_runs():
    """W workers: a phase of n equal runs takes ceil(n / W) runs' time; data is not shared out."""
    spec = load_experiment(SPEC).for_dry_run()
    phases = _cpu_plan_phases(spec)
    two = dataclasses.replace(CPU, workers=2)
    by_name = {p.name: p for p in phases}
    study = by_name["study tuned"]
    n = len(spec.task_specs()) * spec.tuned_trials * spec.study_seeds
    assert study.jobs == n and n > 2
    for steps in (0, 100):
        assert study.seconds(two, steps) == pytest.approx(study.seconds(CPU, steps) * -(-n // 2) / n)
    assert by_name["data"].seconds(two, 100) == by_name["data"].seconds(CPU, 100)
    odd = dataclasses.replace(study, jobs=3)  # 3 runs on 2 workers: two rounds of runs
    assert odd.seconds(two, 100) == pytest.approx(odd.seconds(CPU, 100) * 2 / 3)
    assert dataclasses.replace(study, jobs=1).seconds(two, 100) == study.seconds(CPU, 100)
    assert fit_steps(spec, phases, two, 600) > fit_steps(spec, phases, CPU, 600)


def test_the_reference_machine_runs_one_worker_unless_its_table_says():
    assert load_experiment(SPEC).reference.workers == 1
    raw = raw_spec()
    raw["reference"]["workers"] = 4
    assert experiment_from_dict(raw, folder=SPEC.parent).reference.workers == 4


def test_the_probe_times_runs_side_by_side_in_worker_processes():
    from autotune.experiment.probe import update_rates_side_by_side
    from tql.tasks import get_task

    task = get_task("cube-double-play-singletask-task1-v0")
    rates = update_rates_side_by_side(task, "smoke", workers=2, threads=1, seconds=0.3)
    assert len(rates) == 2 and all(isinstance(rate, float) and rate > 0 for rate in rates)
    with pytest.raises(RuntimeError, match="the speed probe's worker failed: ConfigError: unknown profile 'huge'"):
        update_rates_side_by_side(task, "huge", workers=2, threads=1, seconds=0.3)


def test_a_budget_too_small_for_min_steps_is_refused_with_what_it_needs():
    spec = load_experiment(SPEC).for_dry_run()
    with pytest.raises(ConfigError, match=r"too small on a small CPU: .* need ~[0-9.]+ minutes"):
        fit_steps(spec, _cpu_plan_phases(spec), CPU, 1.0)
    with pytest.raises(ConfigError, match="--budget-minutes -1"):
        plan_experiment(spec, CPU, -1, 0, 1, False)


@pytest.mark.parametrize("option, said", [
    (["--budget-minutes", "-1"], "--budget-minutes -1.0 must be > 0"),
    (["--budget-minutes", "5", "--device", "gpu0"], "bad device 'gpu0'; valid: auto, cpu, cuda, cuda:N"),
    (["--budget-minutes", "5", "--workers", "none"], "--workers"),
])
def test_experiment_checks_every_option_before_it_measures_the_machine(option, said, tmp_path, monkeypatch, capsys):
    import autotune.experiment.probe
    from tests.test_cli import run_cli

    def probed(*args, **kwargs):
        raise AssertionError("the machine was measured before a bad option was refused")

    monkeypatch.setattr(autotune.experiment.probe, "probe_machine", probed)
    code, out, err = run_cli(monkeypatch, capsys, "experiment", "--plan-only", "--out", str(tmp_path / "x"), *option)
    assert code == 2 and "measuring" not in out, out + err
    assert said in " ".join(err.split()) and not (tmp_path / "x").exists()


def test_transfer_is_left_out_with_a_note_when_the_tasks_share_one_domain():
    spec = load_experiment(SPEC).replace(tasks=("cube-double-play-singletask-task1-v0",
                                                "cube-double-play-singletask-task2-v0"))
    approaches, notes = usable_approaches(spec, spec.task_specs())
    assert "transfer" not in approaches and len(notes) == 1 and "2 domains" in notes[0]


def test_plan_only_prints_the_plan_and_trains_nothing(tmp_path):
    from typer.testing import CliRunner

    from autotune.cli import app

    out = tmp_path / "exp"
    result = CliRunner().invoke(app, ["experiment", "--spec", str(SPEC), "--plan-only", "--out", str(out),
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "one H100 with 16 CPU cores" in result.output and "study layers" in result.output
    assert not out.exists()
    # The reference plan's runs (published agent, ~1,700 updates) end before the control engages.
    said = " ".join(result.output.split())
    assert "H̄ cannot change these runs: on scene-play-singletask-task1-v0 the control is predicted" in said
    assert "or set alpha_init = 0.01 and critic_lr = 0.001 in the spec's [agent]" in said


def test_a_bad_workers_value_is_one_line_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from autotune.cli import app

    out = tmp_path / "exp"
    result = CliRunner().invoke(app, ["experiment", "--spec", str(SPEC), "--workers", "two", "--out", str(out),
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code != 0
    assert "--workers 'two' is not one of: auto, an integer >= 1" in str(result.exception)
    assert not out.exists() and not (tmp_path / "data").exists()


def test_the_engagement_note_follows_the_specs_agent():
    """With alpha from 0.01 at critic rate 1e-3 (the spec's [agent]), the note gives the update
    at which the slowest task's control engages, recomputed here from tql.engagement."""
    from autotune.experiment.plan import engagement_note
    from autotune.forecast import forecast
    from tql.trainer import TrainConfig

    raw = raw_spec()
    raw["agent"] = {"alpha_init": 0.01, "critic_lr": 1e-3}
    raw["experiment"]["profile"] = "cpu"
    spec = experiment_from_dict(raw)
    assert spec.agent == {"alpha_init": 0.01, "critic_lr": 1e-3}
    plan = plan_experiment(spec, CPU, 600, 0, 1, False)
    configs = [TrainConfig.from_profile(t.name, "cpu", spec.agent, **plan.train_overrides()) for t in plan.tasks]
    slowest = max(forecast(config, 1.0).engaged for config in configs)
    assert engagement_note(plan) == (f"the control is predicted to engage after ~{slowest:,} of the "
                                     f"{plan.steps:,} updates per run (the slowest task; tql.engagement)")
    assert plan.notes[-1] == engagement_note(plan)


def test_a_bad_agent_option_in_the_spec_is_one_line():
    raw = raw_spec()
    raw["agent"] = {"alpha_start": 0.01}
    with pytest.raises(ConfigError, match=r"experiment spec \(dict\): \[agent\] agent option 'alpha_start=0.01'"):
        experiment_from_dict(raw)


def test_a_tiny_experiment_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    """Smoke profile, one task per domain of two, one seed, tiny studies: every approach reported.
    The probe is replaced by fixed speeds so the sizing (10 steps per run) does not depend on
    how busy the test machine is."""
    from typer.testing import CliRunner

    import autotune.experiment.probe
    from autotune.cli import app

    monkeypatch.setattr(autotune.experiment.probe, "probe_machine", lambda *args, **kwargs: CPU)

    raw = raw_spec()
    raw["dry_run"].update(tasks=["cube-double-play-singletask-task1-v0", "puzzle-3x3-play-singletask-task1-v0"],
                          data_episodes=2, data_episode_length=60, tuned_trials=1, layers_trials=1,
                          min_steps=10, step_quantum=10, eval_max_steps=20, eval_episodes=1)
    raw["agent"] = {"alpha_init": 0.5}  # reaches every study trial and compare run
    spec_file = tmp_path / "experiment.toml"
    spec_file.write_text(_toml(raw).replace('"default.toml"', json.dumps(str(SPEC.parent / "default.toml")))
                         .replace('"layers.toml"', json.dumps(str(SPEC.parent / "layers.toml"))))
    out = tmp_path / "exp"
    args = ["experiment", "--spec", str(spec_file), "--dry-run", "--budget-minutes", "1.2", "--out", str(out),
            "--device", "cpu", "--reps", "50", "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 worker(s)" in result.output  # the studies' trials, and compare's runs, in 2 processes
    data = json.loads((out / "data.json").read_text())
    assert set(data["approaches"]) == set(APPROACHES)
    report = (out / "report.md").read_text()
    assert all(name in report for name in APPROACHES)
    # compare's outputs in full: the rliable statistics and their plot
    assert set(data["derived"]["sample_efficiency"]) == set(APPROACHES)
    assert (out / "report_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["steps"] == 10
    assert set(plan["measured_minutes"]) >= {"data", "study tuned", "study layers", "compare"}
    configs = [json.loads(path.read_text())["train"]["agent"] for path in out.rglob("config.json")]
    assert len(configs) > 10 and all(agent["alpha_init"] == 0.5 for agent in configs)
    assert data["meta"]["agent"] == {"alpha_init": 0.5}
    again = CliRunner().invoke(app, args)  # resumes: the same plan, every run reused
    assert again.exit_code == 0, again.output
    assert "resuming" in again.output
    assert json.loads((out / "plan.json").read_text())["steps"] == plan["steps"]


def _toml(raw: dict) -> str:
    """A tiny TOML writer for this spec's shape (tables of scalars and lists)."""
    lines = [f"version = {raw.get('version', 1)}"]
    for table, values in raw.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def test_the_probe_rates_cpu_runs_eager_below_the_compile_length_and_compiled_from_it():
    """Eager: a population member 1.2x slower than a run; compiled (runs of >= 2,000 updates on
    a CPU): 1.4x the eager rate, members at the run's rate, 4 s of compilation per run
    (benchmarks/speed/results/compile_cost.txt, update_speed_cpu_cores.txt, population_speed.txt)."""
    from autotune.experiment.probe import update_rates
    from tql.agent import COMPILE_MIN_STEPS

    rates = update_rates(30.0, torch.device("cpu"))
    machine = dataclasses.replace(CPU, **rates, run_overhead_seconds=2.0)
    assert machine.at(COMPILE_MIN_STEPS["cpu"] - 1) is machine
    assert (machine.updates_per_second, machine.member_updates_per_second) == (30.0, 25.0)
    compiled = machine.at(COMPILE_MIN_STEPS["cpu"])
    assert (compiled.updates_per_second, compiled.member_updates_per_second) == (42.0, 42.0)
    assert compiled.run_overhead_seconds == 6.0
    assert update_rates(30.0, torch.device("meta")) == {"updates_per_second": 30.0, "member_updates_per_second": 30.0}


def test_a_plan_of_compiled_runs_says_how_it_priced_them():
    from autotune.experiment.probe import update_rates

    spec = load_experiment(SPEC).for_dry_run()
    machine = dataclasses.replace(CPU, **update_rates(20.0, torch.device("cpu")))
    long = plan_experiment(spec, machine, 600, 0, 1, False)
    assert long.steps >= 2000
    assert any("compile their loss: priced at 28 updates/s per run (eager: 20) and 4 s" in n for n in long.notes)
    short = plan_experiment(spec, machine, 3, 0, 1, False)
    assert short.steps < 2000 and not any("compile their loss" in n for n in short.notes)


def test_the_sizing_takes_the_compiled_rates_from_the_length_where_runs_compile():
    """A run of S updates costs (overhead + S / rate) by the rates of its regime; the sizing
    takes a compiled length when it fits, and otherwise stays below the compile length."""
    from autotune.experiment.cost import PhaseWork

    spec = load_experiment(SPEC).replace(min_steps=100, step_quantum=100)
    one_run = [PhaseWork("study", 1, 1, False, 1, 0, jobs=1)]
    machine = dataclasses.replace(CPU, updates_per_second=10.0, compile_min_steps=2000,
                                  compiled_updates_per_second=20.0, compiled_member_updates_per_second=20.0,
                                  compile_seconds=50.0)
    assert total_seconds(one_run, machine, 1900) == pytest.approx(2.0 + 1900 / 10.0)
    assert total_seconds(one_run, machine, 2000) == pytest.approx(2.0 + 50.0 + 2000 / 20.0)
    assert fit_steps(spec, one_run, machine, 140.0) == 1300  # eager (140 - 2) x 10 = 1380; compiled 1760 < 2000
    assert fit_steps(spec, one_run, machine, 153.0) == 2000  # compiled (153 - 52) x 20 = 2020
    assert fit_steps(spec, one_run, machine, 300.0) == 4900  # compiled (300 - 52) x 20 = 4960
    slow_compile = dataclasses.replace(machine, compile_seconds=1000.0)
    assert fit_steps(spec, one_run, slow_compile, 300.0) == 1900  # eager 2980 would compile: stop below 2000


def test_a_comparison_cut_off_keeps_the_minutes_of_its_finished_runs(monkeypatch):
    import types

    import autotune.experiment.plan as plan_module

    clock = iter([0.0, 60.0, 60.0, 180.0, 300.0])  # data 0-60 s; compare from 60, runs end at 180 and 300
    monkeypatch.setattr(plan_module.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(plan_module, "make_data", lambda *args: None)
    seen = []

    def two_runs_then_killed(plan, settings, on_run):
        on_run("default", "t", 100, 0.0)
        on_run("default", "t", 101, 0.5)
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_module, "run_compare", two_runs_then_killed)
    recorded = []
    with pytest.raises(KeyboardInterrupt):
        plan_module.run_experiment(types.SimpleNamespace(approaches=["default"]), None,
                                   lambda phase, minutes: recorded.append((phase, minutes)),
                                   on_run=lambda *run: seen.append(run))
    assert recorded == [("data", 1.0), ("compare", 2.0), ("compare", 2.0)]
    assert seen == [("default", "t", 100, 0.0), ("default", "t", 101, 0.5)]
