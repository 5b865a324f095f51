"""autotune.forecast: the engagement forecast as warnings, and the pruner's wait for it."""

from __future__ import annotations

import pytest

from autotune.forecast import acting_rho, cannot_act, judge_from, studies_line
from autotune.schedules import Schedule
from autotune.tuning.studies import TrialHooks
from tql.engagement import ENGAGE_MARGIN, UNIFORM_MARGIN, predict_engagement
from tql.evaluation import EvalResult
from tql.trainer import TrainConfig

TASK = "cube-double-play-singletask-task1-v0"
ENGAGING = {"critic_lr": 1e-3, "alpha_init": 0.01}  # engages within the cpu profile's 3,000 updates


class CountingTrial:
    """An Optuna trial's reporting side that counts the pruner's questions and always says prune."""

    def __init__(self):
        self.reported, self.asked = [], 0

    def report(self, value: float, step: int) -> None:
        self.reported.append(step)

    def should_prune(self) -> bool:
        self.asked += 1
        return True


def evaluation() -> EvalResult:
    return EvalResult(task=TASK, episodes=1, success_rate=0.0, successes=[False], returns=[-1.0], lengths=[1],
                      env_steps=1, seconds=0.0, progress=[0.0], subtasks=[[False]])


@pytest.mark.parametrize("judge, steps, pruned_at", [(500, (100, 400, 600, 700), 600), (0, (100, 200), 100),
                                                     (None, (100, 3000), None)])
def test_the_pruner_is_not_asked_before_the_predicted_engagement(judge, steps, pruned_at):
    trial = CountingTrial()
    hooks = TrialHooks(trial, 0, 1, None, "success", judge)
    first = next((step for step in steps if hooks.on_eval(step, evaluation())), None)  # training stops there
    assert trial.reported == [step for step in steps if pruned_at is None or step <= pruned_at]
    assert first == pruned_at and trial.asked == (0 if pruned_at is None else 1)


def test_a_trials_wait_is_its_schedules_highest_target_forecast():
    config = TrainConfig.from_profile(TASK, "cpu", ENGAGING)
    log_n = config.spec.max_entropy
    engaged = predict_engagement(config.agent, 3000, 0.9, log_n, config.transitions).engaged
    assert judge_from(config, Schedule.constant(0.9)) == engaged == pytest.approx(550, rel=0.25)  # measured: 550
    # A schedule that rises to 0.9 late in the run waits for its highest point, as a constant 0.9.
    assert judge_from(config, Schedule.piecewise([(0.0, 0.3), (1.0, 0.9)])) == engaged
    assert judge_from(config, Schedule.constant(0.3)) is None  # never engages: never pruned
    off = TrainConfig.from_profile(TASK, "cpu", {**ENGAGING, "entropy_control": False})
    assert judge_from(off, Schedule.constant(0.9)) == 0  # no control: H̄ is not what trials differ by


def test_targets_near_uniform_are_forecast_where_they_could_act():
    log_n = TrainConfig.from_profile(TASK, "smoke").spec.max_entropy
    assert acting_rho(1.0, log_n) == pytest.approx(1 - (ENGAGE_MARGIN + UNIFORM_MARGIN) / log_n)
    assert acting_rho(0.5, log_n) == 0.5


def test_the_warning_names_the_run_length_and_the_agent_change_that_would_engage():
    published = TrainConfig.from_profile(TASK, "cpu", rho=0.9)
    warning = cannot_act(published)
    assert warning.startswith("H̄ cannot change this run: the control engages after ~")
    needed = int(warning.split("use --steps >= ")[1].split(" ")[0].replace(",", ""))
    longer = TrainConfig.from_profile(TASK, "cpu", rho=0.9, steps=needed)
    assert cannot_act(longer) is None and predict_engagement(
        longer.agent, needed, 0.9, longer.spec.max_entropy, longer.transitions).acts
    assert warning.endswith("or --agent alpha_init=0.01 --agent critic_lr=0.001")
    assert cannot_act(TrainConfig.from_profile(TASK, "cpu", ENGAGING, rho=0.9)) is None
    assert cannot_act(TrainConfig.from_profile(TASK, "cpu", {"entropy_control": False})) is None


def test_one_line_covers_every_task_that_cannot_engage():
    tasks = [TASK, "cube-double-play-singletask-task2-v0", "scene-play-singletask-task1-v0"]
    configs = {task: TrainConfig.from_profile(task, "smoke") for task in tasks}
    line = studies_line(configs, 1.0)
    assert line.startswith("H̄ cannot change the trials of 3 of 3 task(s): on cube-double-play-singletask-task1-v0 ")
    assert line.endswith("; the table at the end marks them") and "\n" not in line
    engaging = {task: TrainConfig.from_profile(task, "cpu", ENGAGING) for task in tasks[:1]}
    assert studies_line(engaging, 0.9) is None
