"""Will H̄ act? The engagement forecast (``tql.engagement``) in a user's words: one line that
says, before anything is trained, that a run (or a study's trials) ends before the
temperature control can engage, and what would let it engage.

`train` and `compare` warn about their runs, `run` about each task's trials in one line for
all tasks, `experiment --plan-only` about the planned budget; the pruner waits for each
trial's forecast (``judge_from``)."""

from __future__ import annotations

from typing import Any

from tql.engagement import ENGAGE_MARGIN, UNIFORM_MARGIN, EngagementForecast, engaging_change, steps_to_engage
from tql.trainer import TrainConfig


def acting_rho(rho: float, log_n: float) -> float:
    """``rho`` capped where a target can still pull attention: one within ``ENGAGE_MARGIN`` of
    uniform attention counts as engaged from the first update, but holds nothing."""
    return min(rho, 1.0 - (ENGAGE_MARGIN + UNIFORM_MARGIN) / log_n)


def highest_rho(config: TrainConfig, hooks: Any = None) -> float:
    """The highest rho a run's targets take (the one attention reaches first): a schedule's
    highest point, a controller's current rho (every member's for a population), else the
    constant target's."""
    if hasattr(hooks, "schedule"):
        return schedule_top(hooks.schedule, config)
    if hasattr(hooks, "rhos"):
        return max(hooks.rhos)
    if hasattr(hooks, "rho"):
        return hooks.rho
    return config.highest_rho()


def schedule_top(schedule: Any, config: TrainConfig) -> float:
    """A schedule's highest rho in any layer of the run's critic, at any point of the run."""
    depth = max(len(config.constant_target()), 1)
    return max(max(schedule.layer_rhos(i / 100, depth)) for i in range(101))


def forecast(config: TrainConfig, rho: float | None = None) -> EngagementForecast:
    """The run's predicted engagement for its highest target (or ``rho``), capped where it can act."""
    rho = config.highest_rho() if rho is None else rho
    return config.engagement(acting_rho(rho, config.spec.max_entropy))


def engaging_options(config: TrainConfig, rho: float, steps: int | None = None) -> tuple[int | None, dict | None]:
    """What would let a run of ``steps`` updates (default: its own) engage: the shortest run
    length that does, and the agent change that does within those updates (None: neither)."""
    log_n = config.spec.max_entropy
    args = (config.agent, steps or config.steps, acting_rho(rho, log_n), log_n, config.transitions)
    return steps_to_engage(*args), engaging_change(*args)


def remedy(config: TrainConfig, rho: float, *, steps_option: str = "--steps") -> tuple[str, str]:
    """When the control would engage in a long enough run ("engages after ~N updates of a run of
    L", or "does not engage within 2M updates"), and what would let it: a longer run and/or the
    agent change that engages within this run's updates ("; use ..." or "")."""
    log_n = config.spec.max_entropy
    needed, change = engaging_options(config, rho)
    hints = [f"{steps_option} >= {needed:,}"] if needed is not None else []
    if change:
        hints.append(" ".join(f"--agent {k}={v:g}" for k, v in change.items()))
    if needed is None:
        when = "does not engage within 2,000,000 updates"
    else:
        engaged = config.engagement(acting_rho(rho, log_n), steps=needed).engaged
        when = f"engages after ~{engaged:,} updates of a {needed:,}-update run"
    return when, f"; use {' or '.join(hints)}" if hints else ""


def cannot_act(config: TrainConfig, rho: float | None = None, what: str = "this run") -> str | None:
    """The one-line warning for a run whose control is predicted not to engage (None: it does,
    or H̄ is not in play at all: no attention, or the control turned off)."""
    rho = config.highest_rho() if rho is None else rho
    predicted = forecast(config, rho)
    if predicted.acts or predicted.blocked:
        return None
    when, hints = remedy(config, rho)
    return (f"H̄ cannot change {what}: the control {when}, this one has {config.steps:,} (predicted for its "
            f"highest target, rho {rho:.2f}{_range_note(predicted)}){hints}")


def _range_note(predicted: EngagementForecast) -> str:
    return "; outside the measured configurations" if predicted.extrapolated else ""


def judge_from(config: TrainConfig, schedule: Any) -> int | None:
    """The update before which a trial following ``schedule`` must not be pruned: its predicted
    engagement for the schedule's highest rho, in any layer, at any point of the run (None: it
    never engages, so every evaluation would compare noise, and it is never pruned)."""
    predicted = forecast(config, schedule_top(schedule, config))
    if predicted.blocked:
        return 0
    return predicted.engaged


def judging(judge_from: int | None, step: int) -> bool:
    """Whether the pruner may judge a trial at ``step`` (see ``judge_from``)."""
    return judge_from is not None and step >= judge_from


def studies_line(configs: dict[str, TrainConfig], rho: float, runs: str = "trials",
                 end: str = "; the table at the end marks them") -> str | None:
    """One line for all the tasks whose ``runs`` (targets up to ``rho``) cannot engage, with the
    first such task's remedy (None: every task's can)."""
    forecasts = {task: forecast(config, rho) for task, config in configs.items()}
    idle = [task for task, predicted in forecasts.items() if not predicted.acts and not predicted.blocked]
    if not idle:
        return None
    config = configs[idle[0]]
    when, hints = remedy(config, rho)
    note = _range_note(forecasts[idle[0]])
    return (f"H̄ cannot change the {runs} of {len(idle)} of {len(configs)} task(s): on {idle[0]} the control {when}, "
            f"these have {config.steps:,} (predicted{note}){hints}{end}")


def collapse_line(config: TrainConfig) -> str | None:
    """What the collapse map measured for this run's configuration (``tql.collapse.MEASURED``),
    in one line; None outside the measured range (another domain, critic, rate, data or batch,
    or more updates than were measured) or for a critic without attention."""
    from tql.collapse import measured_collapse

    agent = config.agent
    if agent.critic != "tql":
        return None
    found = measured_collapse(config.spec.domain, agent.size, agent.critic_lr, config.data_episodes,
                              agent.batch_size, config.steps)
    if found is None:
        return None
    fell = (f"fell to {found.lowest:.2f} log n within {found.steps:,} updates"
            + (f" (median of {found.seeds} seeds, {found.below_alarm} below 0.2 log n)" if found.seeds > 1 else ""))
    held = "" if not agent.entropy_control else "; this run's control holds it above its target once it engages"
    return (f"collapse map: with the control off, this critic's attention on {found.domain} {fell} "
            f"(measured: benchmarks/learning/results/{found.source}; docs/collapse.md){held}")
