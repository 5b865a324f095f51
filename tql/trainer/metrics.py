"""What a run measures besides its losses: the held-out TD error (a cheap signal for
controllers) and its policy's evaluation episodes, as ``metrics.jsonl`` records them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tql.agent import TQLAgent
from tql.eval_workers import EvalRequest, PolicyEvaluator, resolve_eval_workers
from tql.evaluation import EvalResult
from tql.trainer.config import TrainConfig


VAL_BATCH = 512  # held-out transitions per TD-error measurement


@torch.no_grad()
def held_out_draws(sampler: Any, generator: torch.Generator, act_dim: int,
                   batch_size: int = VAL_BATCH) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A held-out TD measurement's random draws from ``generator``, in order: a batch of
    ``sampler`` (the -val data), then the target action's noise z' (as ``TQLAgent.act`` draws it)."""
    batch = sampler.sample(batch_size, generator)
    noise = torch.randn(batch_size, act_dim, device=batch["observations"].device, generator=generator)
    return batch, noise


def held_out_td_error(agent: TQLAgent, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """TD error of ``agent``'s critic on ``batch``, the target's action mu(s', z') from ``noise``."""
    with agent.autocast():
        next_actions = agent.actor(batch["next_observations"], noise).clamp(-1.0, 1.0)
    next_qs, _ = agent.target_critic(batch["next_observations"], next_actions)
    target = batch["rewards"] + agent.config.gamma * batch["masks"] * next_qs.mean(0)
    qs, _ = agent.critic(batch["observations"], batch["actions"])
    return (qs - target).pow(2).mean()


@torch.no_grad()
def held_out_td_loss(agent: TQLAgent, sampler: Any, generator: torch.Generator, batch_size: int = VAL_BATCH) -> float:
    """TD error of ``agent``'s critic on a batch of ``sampler`` (the -val data), drawn with
    ``generator`` (which the target action's noise also comes from)."""
    batch, noise = held_out_draws(sampler, generator, agent.act_dim, batch_size)
    return float(held_out_td_error(agent, batch, noise))


def make_evaluator(config: TrainConfig, device: torch.device, members: int = 1) -> PolicyEvaluator:
    """A run's evaluator: ``config.eval_workers`` processes ('auto': see ``resolve_eval_workers``)
    for evaluations of ``config.eval_episodes`` episodes of ``members`` actors at once (a
    population's members: more processes can be kept busy)."""
    episodes = config.eval_episodes * members
    workers = resolve_eval_workers(config.eval_workers, device, episodes, config.threads)
    return PolicyEvaluator(config.spec, config.eval_episodes, workers, members)


def policy_request(agent: TQLAgent, config: TrainConfig, episodes: int, seed: int, step: int) -> EvalRequest:
    """The evaluation of ``agent``'s one-step policy as it is now: ``episodes`` episodes (env
    seeds from ``seed``; each episode's action noise from its own generator, seeded
    ``(seed + step, episode)``), the same results whatever the number of evaluation processes."""
    return EvalRequest.of(agent.actor, episodes, seed, noise_seed=seed + step, max_steps=config.eval_max_steps)


def policy_episodes(agent: TQLAgent, evaluator: PolicyEvaluator, config: TrainConfig, episodes: int, seed: int,
                    step: int) -> EvalResult:
    """``policy_request``'s episodes, run now."""
    return evaluator.run_many([policy_request(agent, config, episodes, seed, step)])[0]


def eval_record(step: int, result: EvalResult, **extra) -> dict:
    """An evaluation as ``metrics.jsonl`` and ``summary.json`` hold it: success, and progress
    (the mean fraction of the task's subtasks achieved at the episodes' ends) with the rate of
    each subtask, and ``gained``: progress counted from each episode's start state, with each
    episode's value (``gained_episodes``: what power calculations need; ``tql.evaluation``)."""
    gained = {"gained": result.mean_gained, "gained_episodes": [round(g, 4) for g in result.gained]} \
        if result.gained else {}
    return {"step": step, "success_rate": result.success_rate, "progress": result.mean_progress, **gained,
            "subtask_rates": result.subtask_rates, "episodes": result.episodes,
            "mean_return": float(np.mean(result.returns)), "env_steps": result.env_steps, **extra}
