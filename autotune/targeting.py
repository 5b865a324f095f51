"""How one run sets H̄: a constant (rho, nats or the published table), a schedule file, or an
adaptive controller. Exactly one may be given, and each controller's own options are refused
(not ignored) with another; ``autotune.api.train`` and `tql-tune train` share these checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tql.errors import ConfigError

CONTROLLERS = ("none", "feedback", "population")


def population_options(controller: str, members: int | None, fitness: str | None) -> tuple[int, str]:
    """``members`` and ``fitness`` with their defaults; refused without the population controller."""
    from tql.batched.pbt import check_fitness

    if controller not in CONTROLLERS:
        raise ConfigError(f"controller {controller!r} is not one of: {', '.join(CONTROLLERS)}")
    if controller != "population":
        given = [name for name, v in (("--members", members), ("--fitness", fitness)) if v is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise ConfigError(f"{' and '.join(given)} {verb} only with --controller population (got --controller "
                              f"{controller})")
    return (4 if members is None else members), check_fitness(fitness or "val_td")


def profile_options(controller: str, depth_profile: bool, last_layer_offset: float | None) -> None:
    """``depth_profile`` and ``last_layer_offset`` belong to one controller each; refused elsewhere."""
    if depth_profile and controller != "population":
        raise ConfigError(f"--depth-profile applies only with --controller population (got --controller "
                          f"{controller})")
    if last_layer_offset is not None and controller != "feedback":
        raise ConfigError(f"--last-layer-offset applies only with --controller feedback (got --controller "
                          f"{controller})")


def target_hooks(config, schedule: str | Path | None, controller: str, rho: Any, target_entropy: Any,
                 members: int = 4, targets: str | None = None, depth_profile: bool = False,
                 last_layer_offset: float = 0.0) -> tuple[Any, str]:
    """The hooks that set H̄ during training (None: the config's constant), and a description
    for the run's header line."""
    from autotune.agent_options import describe_table
    from autotune.controllers import FeedbackController, FeedbackRule, PBTRule, PopulationController
    from autotune.schedules import Schedule, ScheduleHooks
    from tql.agent import critic_depth

    given = [name for name, v in (("--schedule", schedule), ("--rho", rho), ("--target-entropy", target_entropy),
                                  ("--targets", targets), ("--controller", None if controller == "none" else controller))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give only one of {', '.join(given)}: each sets H̄")
    if schedule is not None:
        loaded = Schedule.load(schedule)
        return ScheduleHooks.for_config(loaded, config), f"schedule {loaded.describe()}"
    depth = critic_depth(config.agent)
    if controller == "feedback":
        hooks = FeedbackController(config.spec.n_tokens, FeedbackRule(profile_offset=last_layer_offset), depth)
        offset = f", last layer at rho {last_layer_offset:+.2f}" if last_layer_offset else ""
        return hooks, f"feedback controller from rho={hooks.rho:.2f}{offset}"
    if controller == "population":
        rule = PBTRule(members=members, seed=config.seed, profile=depth_profile)
        hooks = PopulationController(config.spec.n_tokens, rule, depth)
        layers = " (first and last layer, perturbed apart)" if depth_profile else ""
        return hooks, f"population of {members}, rho{layers} " + ", ".join(f"{r:.2f}" for r in hooks.rhos)
    return None, describe_table(config.constant_target())
