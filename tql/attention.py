"""Where a trained critic's attention goes, row by row.

Training logs one number per (layer, token group): the mean entropy of the [VALUE] query's
row, and of the other rows. A mean can hide a mix of sharp and flat rows, so this module
runs a critic on a batch of its own data and keeps, per layer, the entropy of every query
row and the largest weight in it (1/n for uniform attention, 1 for a row on one token),
and how the [VALUE] query's weight splits between observation and action tokens (what Q
reads first). `tql-tune attention` shows their distributions at a run's last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tql.agent import AgentConfig
from tql.errors import ConfigError
from tql.model import TQLCritic, build_critic


@dataclass
class LayerAttention:
    """One layer's attention over a batch, every head: per row, its entropy and largest weight."""

    layer: int
    value_entropy: np.ndarray  # [B x heads]: the [VALUE] query's rows
    value_max: np.ndarray
    other_entropy: np.ndarray  # [B x heads x (n - 1)]: every other query's rows
    other_max: np.ndarray
    value_weight: dict[str, float]  # the [VALUE] row's mean weight on itself, observations, actions (sums to 1)


@torch.no_grad()
def critic_attention(critic: TQLCritic, obs: torch.Tensor, act: torch.Tensor) -> list[LayerAttention]:
    """Every layer's row statistics for ``critic`` on ``(obs, act)``."""
    obs_dim = obs.shape[-1]
    layers = []
    for layer, probs in enumerate(critic.attention_maps(obs, act)):  # [B, heads, n, n]
        probs = probs.double()
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # [B, heads, n]
        largest = probs.amax(-1)
        value_row = probs[:, :, 0, :]  # [B, heads, n]
        weight = {"value": value_row[..., 0].mean().item(), "observation": value_row[..., 1:1 + obs_dim].sum(-1)
                  .mean().item(), "action": value_row[..., 1 + obs_dim:].sum(-1).mean().item()}
        layers.append(LayerAttention(layer, entropy[:, :, 0].flatten().numpy(), largest[:, :, 0].flatten().numpy(),
                                     entropy[:, :, 1:].flatten().numpy(), largest[:, :, 1:].flatten().numpy(),
                                     weight))
    return layers


def has_attention(state: dict) -> bool:
    """Whether a run's checkpoint state holds a single agent with a TQL critic (not a population's
    stacked members, not FQL's MLP)."""
    agent = state.get("agent", {})
    return "model" in agent and "config" in agent and agent["config"].get("critic", "tql") == "tql"


def checkpoint_critic(checkpoint: str | Path | dict, obs_dim: int, act_dim: int) -> TQLCritic:
    """The online critic saved in a run's ``checkpoint.pt`` (or its loaded state): a single
    agent's TQL critic, not a population's."""
    state = checkpoint if isinstance(checkpoint, dict) else torch.load(checkpoint, map_location="cpu",
                                                                       weights_only=False)
    if not has_attention(state):
        raise ConfigError(f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} holds no single "
                          "agent with attention (a population's checkpoint, or the MLP critic): the per-query view "
                          "needs a TQL run's or a trial seed's checkpoint")
    agent = state["agent"]
    config = AgentConfig.from_dict(agent["config"])
    critic = build_critic(config.critic, obs_dim, act_dim, config.size, config.num_q)
    critic.load_state_dict({k.split(".", 1)[1]: v for k, v in agent["model"].items() if k.startswith("critic.")})
    return critic.eval()
