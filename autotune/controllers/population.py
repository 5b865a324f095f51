"""Population (PBT) controller: K members with different rho trained side by side.

Rule (documented in the README; every constant is a field of ``PBTRule``):

- start: member i gets rho_i evenly spaced over [``rho_init_low``, ``rho_init_high``];
- the training loop (``tql.batched.pbt``) measures each member's fitness every
  ``eval_every`` steps (minus the TD error on held-out ``-val`` data, or success on a few
  evaluation episodes) and calls ``on_population``;
- exploit, at every measurement (or, with ``interval`` > 0, at measurements at least
  ``interval`` steps apart): the ``fraction`` of members with
  the lowest fitness (at least one, a diverged member always) each copy a member drawn from
  the same fraction with the highest fitness: weights, optimiser state, temperatures;
- explore: the copy's rho is the source's times a factor drawn from ``perturb``, clipped to
  [``rho_min``, ``rho_max``]; its history is the source's history plus that change, so each
  member carries the schedule its weights actually trained under;
- the result is the member with the best fitness at the end, and the schedule it followed.

Depth profiles (``profile=True``; default False: one rho per member, as above): each member
carries (rho_first, rho_last), the rho of the critic's first and last attention layer, the
layers between linear. They start equal (rho_last = rho_first, evenly spaced as above: every
member starts with one rho for all layers), exploit copies both, and explore multiplies each
by its own factor drawn from ``perturb`` (first, then last), each clipped to the bounds. A
member's followed schedule is then a profile of two step curves (a version 2 file).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from autotune.controllers.base import profile_from_history, rule_meta, schedule_from_history
from autotune.schedules import Schedule, observed
from tql.errors import ConfigError
from tql.targets import layer_profile
from tql.trainer import TrainHooks


@dataclass(frozen=True)
class PBTRule:
    members: int = 4
    interval: int = 0  # 0: exploit at every fitness measurement (the loop's eval_every)
    fraction: float = 0.25
    perturb: tuple[float, ...] = (0.8, 1.25)
    rho_init_low: float = 0.3
    rho_init_high: float = 0.9
    rho_min: float = 0.1
    rho_max: float = 1.0
    seed: int = 0
    profile: bool = False  # members carry (rho_first, rho_last), perturbed independently

    def validate(self) -> None:
        if self.members < 2:
            raise ConfigError(f"population rule: members={self.members!r} must be >= 2")
        if self.interval < 0:
            raise ConfigError(f"population rule: interval={self.interval!r} must be >= 0")
        if not 0.0 < self.fraction <= 0.5:
            raise ConfigError(f"population rule: fraction={self.fraction!r} must be in (0, 0.5]")
        if not self.perturb or any(f <= 0 for f in self.perturb):
            raise ConfigError(f"population rule: perturb={self.perturb!r} must be positive factors")
        if not 0.0 < self.rho_min <= self.rho_init_low <= self.rho_init_high <= self.rho_max <= 1.0:
            raise ConfigError("population rule: need 0 < rho_min <= rho_init_low <= rho_init_high <= rho_max <= 1, "
                              f"got {self.rho_min!r}, {self.rho_init_low!r}, {self.rho_init_high!r}, {self.rho_max!r}")

    def initial_rhos(self) -> list[float]:
        k, lo, hi = self.members, self.rho_init_low, self.rho_init_high
        return [lo + (hi - lo) * i / (k - 1) for i in range(k)]


ADDED_OPTIONS = ("profile",)  # left out of schedule files while at their defaults


class PopulationController(TrainHooks):
    name = "population"

    def __init__(self, n_tokens: int, rule: PBTRule = PBTRule(), depth: int | None = None):
        """``depth``: the critic's attention layers (``tql.agent.critic_depth``), needed only
        with ``profile`` (hooks are built before the trainer that knows it)."""
        rule.validate()
        if rule.profile and depth is None:
            raise ConfigError("population rule: profile=True gives each layer its own H̄, so the controller needs "
                              "the critic's depth (tql.agent.critic_depth)")
        self.rule, self.n_tokens, self.log_n, self.depth = rule, n_tokens, math.log(n_tokens), depth
        self.rhos = rule.initial_rhos()  # the first layer's with a profile, else every layer's
        self.rhos_last: list[float] | None = list(self.rhos) if rule.profile else None
        # (progress, rho) from then on; with a profile (progress, rho_first, rho_last).
        self.histories: list[list[tuple]] = [[(0.0, *self._values(i))] for i in range(rule.members)]
        self.fitness: list[float] | None = None
        self.progress, self.last_exploit = 0.0, 0
        self.decisions: list[dict] = []
        self.rng = random.Random(rule.seed)

    @property
    def members(self) -> int:
        return self.rule.members

    def _values(self, member: int) -> tuple[float, ...]:
        """What a member carries: (rho,) or, with a profile, (rho_first, rho_last)."""
        if self.rhos_last is None:
            return (self.rhos[member],)
        return self.rhos[member], self.rhos_last[member]

    def target_entropy(self, step: int, progress: float) -> list:
        """One H̄ per member: a number, or with a profile one per layer."""
        self.progress = progress
        if self.rhos_last is None:
            return [rho * self.log_n for rho in self.rhos]
        return [layer_profile(first * self.log_n, last * self.log_n, self.depth)
                for first, last in zip(self.rhos, self.rhos_last)]

    def on_population(self, step: int, fitness: list[float]) -> list[tuple[int, int]]:
        if len(fitness) != self.members:
            raise ConfigError(f"population controller: got {len(fitness)} fitness values for {self.members} members")
        self.fitness = list(fitness)
        if step - self.last_exploit < self.rule.interval:
            return []
        self.last_exploit = step
        copies = self._exploit(fitness)
        for src, dst in copies:
            self._explore(src, dst)
        decision = {"step": step, "fitness": list(fitness), "copies": copies, "rhos": list(self.rhos)}
        if self.rhos_last is not None:
            decision["rhos_last"] = list(self.rhos_last)
        self.decisions.append(decision)
        return copies

    def _exploit(self, fitness: list[float]) -> list[tuple[int, int]]:
        order = sorted(range(self.members), key=lambda i: fitness[i])  # worst first
        n = max(1, int(self.members * self.rule.fraction), sum(1 for f in fitness if f == -math.inf))
        n = min(n, self.members // 2)
        losers, winners = order[:n], order[-n:]
        return [(self.rng.choice(winners), dst) for dst in losers]

    def _explore(self, src: int, dst: int) -> None:
        self.rhos[dst] = self._perturbed(self.rhos[src])
        if self.rhos_last is not None:  # drawn after the first layer's: its own factor
            self.rhos_last[dst] = self._perturbed(self.rhos_last[src])
        kept = [k for k in self.histories[src] if k[0] < self.progress]
        self.histories[dst] = kept + [(self.progress, *self._values(dst))]

    def _perturbed(self, rho: float) -> float:
        factor = self.rng.choice(self.rule.perturb)
        return min(max(rho * factor, self.rule.rho_min), self.rule.rho_max)

    def best_member(self) -> int:
        if self.fitness is None:
            return 0
        return max(range(self.members), key=lambda i: self.fitness[i])

    def followed_schedule(self, member: int | None = None, **meta) -> Schedule:
        """The schedule the best member (or ``member``) trained under, through its copies."""
        member = self.best_member() if member is None else member
        from_history = schedule_from_history if self.rhos_last is None else profile_from_history
        return from_history(self.histories[member], source=f"{self.name} controller (member {member})",
                            n_tokens=self.n_tokens, rule=rule_meta(self.rule, ADDED_OPTIONS), **meta)

    def state_dict(self) -> dict:
        state = {"rhos": self.rhos, "histories": self.histories, "fitness": self.fitness,
                 "progress": self.progress, "last_exploit": self.last_exploit, "decisions": self.decisions,
                 "rng": self.rng.getstate()}
        if self.rhos_last is not None:
            state["rhos_last"] = self.rhos_last
        return state

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.rhos, self.fitness, self.progress = list(state["rhos"]), state["fitness"], state["progress"]
            if self.rhos_last is not None:
                self.rhos_last = list(state["rhos_last"])
            self.histories = [[tuple(k) for k in h] for h in state["histories"]]
            self.last_exploit, self.decisions = state["last_exploit"], state["decisions"]
            self.rng.setstate(state["rng"])


def train_with_population(config, out_dir, controller: PopulationController, fitness: str = "val_td",
                          observers: TrainHooks | None = None, **options):
    """Run ``config`` as a population driven by ``controller`` (``tql.batched.pbt``);
    ``observers`` (loggers) hear the run beside it."""
    from tql.batched.pbt import train_population

    return train_population(config, out_dir, controller.members, observed(controller, observers), fitness=fitness,
                            **options)
