"""Population training: K members of one task trained side by side as one batched model.

The loop is ``Trainer``'s (same data, budgets, output files, checkpoints and resume) with a
``tql.batched.stacked.Population`` in place of the agent. What differs:

- every update samples one batch per member and asks the hooks for H̄ per member
  (``TrainHooks.target_entropy`` may return K values);
- every ``eval_every`` steps the loop measures each member's *fitness* and passes it to
  ``TrainHooks.on_population``, which answers with (src, dst) copies that the loop makes
  (PBT's exploit; the controller in ``autotune.controllers.population`` also explores);
- at the end the member with the best fitness is the run's result: it alone is evaluated with
  ``eval_episodes`` episodes (``final_eval_all`` evaluates every member, on the same episodes,
  to measure how well the fitness signal ranks members).

Fitness signals (higher is better; a diverged member gets -inf):

- ``val_td``: minus the critic's TD error on a batch of the ``-val`` dataset (512
  transitions, the same batch for every member). Costs one batched forward pass.
- ``success``: success rate over ``fitness_episodes`` evaluation episodes per member, on env
  seeds disjoint from the final evaluation's (so selecting the best member does not bias the
  reported success). Costs K x fitness_episodes episodes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tql.agent import compile_pays, flat_metrics
from tql.errors import ConfigError
from tql.batched.stacked import Population
from tql.trainer.step_targets import DeviceTargets, HookTable
from tql.eval_workers import PolicyEvaluator
from tql.evaluation import EvalResult
from tql.trainer import (VAL_BATCH, TrainConfig, Trainer, TrainHooks, TrainingDiverged, TrainResult, make_evaluator,
                         policy_request)

FITNESS = ("val_td", "success")
# Fitness episodes use env seeds far from the final evaluation's (which start at the run seed).
FITNESS_SEED_OFFSET = 10_000


def check_fitness(fitness: str) -> str:
    if fitness not in FITNESS:
        raise ConfigError(f"fitness signal {fitness!r} is not one of: {', '.join(FITNESS)}")
    return fitness


class PopulationTrainer(Trainer):
    """Runs ``config`` with ``members`` agents (member i initialised from seed
    ``config.seed * 1000 + i``) and a controller given as ``hooks``."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, members: int, hooks: TrainHooks | None = None,
                 fitness: str = "val_td", fitness_episodes: int = 4, final_eval_all: bool = False,
                 fresh: bool = False, console: Any = None, progress: bool = True):
        if members < 2:
            raise ConfigError(f"population members={members!r} must be >= 2")
        check_fitness(fitness)
        if fitness_episodes < 1:
            raise ConfigError(f"fitness_episodes={fitness_episodes!r} must be >= 1")
        self.members, self.fitness_kind, self.fitness_episodes = members, fitness, fitness_episodes
        self.final_eval_all = final_eval_all
        self.fitness: list[float] = [0.0] * members
        self.fitness_log: list[dict] = []
        super().__init__(config, out_dir, hooks, fresh, console, progress)
        # A hook's values per member: one table cache each, and their own device copy.
        self.member_targets = [HookTable(self.depth, self.task.max_entropy, self.targets.constant)
                               for _ in range(members)]
        self.member_device_targets = DeviceTargets(self.upload)

    def _make_agent(self) -> Population:
        seeds = [self.config.seed * 1000 + i for i in range(self.members)]
        return Population(self.task.obs_dim, self.task.act_dim, self.config.agent, self.members, self.device, seeds,
                          total_steps=self.config.steps, compile_default=compile_pays(self.device, self.config.steps))

    def _run_record(self) -> dict:
        return {"population": {"members": self.members, "fitness": self.fitness_kind,
                               "fitness_episodes": self.fitness_episodes}}

    def _extra_state(self) -> dict:
        return {"fitness": self.fitness, "fitness_log": self.fitness_log}

    def _load_extra_state(self, state: dict) -> None:
        self.fitness, self.fitness_log = state["fitness"], state["fitness_log"]

    # ----- the loop ------------------------------------------------------------------------
    def targets_at(self, step: int) -> torch.Tensor:
        """H̄ per member ``[K, depth, 2]``: the hook's (one value per member, or one number
        for all; each a number, one per layer or a table) or the run's constant."""
        value = self.hooks.target_entropy(step, step / self.config.steps)
        if not isinstance(value, (list, tuple)):  # None (the run's constant), or one value for every member
            return self.device_targets(self.targets.at(value, step), (-1, 2)).expand(self.members, -1, -1)
        if len(value) != self.members:
            raise ConfigError(f"a hook gave {len(value)} target entropies for {self.members} members")
        tables = tuple(table.at(v, step) for table, v in zip(self.member_targets, value))
        return self.member_device_targets(tables, (self.members, -1, 2))

    def _sample_batches(self) -> dict[str, torch.Tensor]:
        size = self.config.agent.batch_size
        flat = self.sampler.sample(size * self.members, self.generator)
        return {key: value.reshape(self.members, size, *value.shape[1:]) for key, value in flat.items()}

    def _update_once(self, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.agent.update(self._sample_batches(), targets)

    def _generators(self) -> list[torch.Generator]:
        return [self.generator, *self.agent.generators]

    def _loop(self) -> bool:
        with self._progress_bar() as advance:
            while self.step < self.config.steps:
                metrics = self.update(self.targets_at(self.step))
                self.step += 1
                advance(self.step)
                if self.step % self.config.log_every == 0:
                    self._log(metrics)
                if self._due(self.config.eval_every) or self.step == self.config.steps:
                    self._measure_fitness()
                if self.step == self.config.steps:
                    self._final_evaluation()
                if self._due(self.config.checkpoint_every) or self.step == self.config.steps:
                    self._save_checkpoint()
        return False

    def _log(self, metrics: dict) -> None:
        val_td = self.val_td_losses()
        rows = []
        for i in range(self.members):
            row = flat_metrics({key: value[i] for key, value in metrics.items()})
            row["val/td_loss"] = val_td[i]
            row["time/wall_seconds"] = self._wall()
            self._append({"step": self.step, "type": "train", "member": i, **row})
            self._check_collapse({"member": i, **row})
            rows.append(row)
        finite = [r for r in rows if all(math.isfinite(v) for v in r.values())]
        if not finite:  # one diverged member is replaced at the next exploit; all of them end the run
            key, value = next(((k, v) for k, v in rows[0].items() if not math.isfinite(v)), ("?", math.nan))
            raise TrainingDiverged(self.step, key, value)
        mean = {key: float(np.mean([r[key] for r in finite])) for key in finite[0]}
        self.hooks.on_log(self.step, mean)
        self.last_log = mean

    @torch.no_grad()
    def val_td_losses(self) -> list[float]:
        """Each member's TD error on one shared batch of the ``-val`` dataset."""
        batch = self.val_sampler.sample(VAL_BATCH, self.generator)
        metrics = self.agent.measure(batch, self.targets_at(self.step), self.generator)
        return [float(v) for v in metrics["critic/td_loss"]]

    def _make_evaluator(self) -> PolicyEvaluator:
        """Sized for evaluating every member at once where the run does (success fitness, or
        ``final_eval_all``): more processes can be kept busy."""
        together = self.fitness_kind == "success" or self.final_eval_all
        return make_evaluator(self.config, self.device, members=self.members if together else 1)

    def _members_episodes(self, members: list[int], episodes: int, seed: int) -> list[EvalResult]:
        """Each listed member's episodes, all at once over the evaluation processes."""
        return self.evaluator.run_many([policy_request(self.agent.member_agent(i), self.config, episodes, seed,
                                                       self.step) for i in members])

    def _measure_fitness(self) -> None:
        val_td = self.val_td_losses()
        success = None
        if self.fitness_kind == "success":
            seed = self.config.seed + FITNESS_SEED_OFFSET
            success = [r.success_rate for r in self._members_episodes(list(range(self.members)),
                                                                       self.fitness_episodes, seed)]
        raw = success if success is not None else [-v for v in val_td]
        self.fitness = [f if math.isfinite(f) and math.isfinite(v) else -math.inf for f, v in zip(raw, val_td)]
        copies = []
        if self.step < self.config.steps:
            copies = [(int(src), int(dst)) for src, dst in self.hooks.on_population(self.step, list(self.fitness))]
            for src, dst in copies:
                self.agent.copy_member(src, dst)
        record = {"step": self.step, "fitness": self.fitness, "val_td": val_td, "success": success,
                  "copies": copies}
        self.fitness_log.append(record)
        self._append({"type": "fitness", **record})

    @property
    def best_member(self) -> int:
        return int(np.argmax(self.fitness))

    def _final_evaluation(self) -> None:
        best = self.best_member
        members = range(self.members) if self.final_eval_all else [best]
        results = dict(zip(members, self._members_episodes(list(members), self.config.eval_episodes,
                                                           self.config.seed)))
        extra = {"member": best}
        if self.final_eval_all:
            extra["members_success"] = [results[i].success_rate for i in range(self.members)]
        self._record_eval(results[best], **extra)
        self.hooks.on_eval(self.step, results[best])

    def _result_fields(self) -> dict:
        extra = {"best_member": self.best_member, "fitness_signal": self.fitness_kind, "final_fitness": self.fitness}
        if self.evals and "members_success" in self.evals[-1]:
            extra["members_success"] = self.evals[-1]["members_success"]
        return {"members": self.members, "extra": extra}


def train_population(config: TrainConfig, out_dir: str | Path, members: int, hooks: TrainHooks | None = None,
                     **options) -> TrainResult:
    """Train (or resume) a population run; see ``PopulationTrainer``."""
    return PopulationTrainer(config, out_dir, members, hooks, **options).run()


__all__ = ["FITNESS", "PopulationTrainer", "check_fitness", "train_population"]
