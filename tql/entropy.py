"""Attention entropy control (DESIGN.md section 3).

Each (layer l, token group g) has a temperature alpha_{l,g} = exp(log_alpha_{l,g}), tuned
SAC-style toward the target entropy H̄:

- critic loss term:      sum_{l,g} sg(alpha_{l,g}) * (H̄ - H_{l,g})
  (gradient reaches the critic through H only; it raises H while alpha > 0);
- temperature loss:      sum_{l,g} alpha_{l,g} * sg(H_{l,g} - H̄)
  (gradient reaches log_alpha only; alpha grows while H < H̄ and shrinks once H > H̄).

Groups: g = 0 is the [VALUE] query row, g = 1 the other rows (``tql.model``). The target may
be a float or a 0-d tensor, so a schedule can move it every step without recompiling; a
depth-0 critic (FQL's MLP) has no attention and both terms are exactly zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tql.errors import ConfigError

__all__ = ["EntropyTemperatures", "attention_entropy"]


def attention_entropy(probs: Tensor) -> Tensor:
    """Entropy ``-sum_j p_j log p_j`` over the last dim (``0 log 0 = 0``): ``[..., n] -> [...]``.

    The clamp keeps the gradient finite where a probability underflows to exactly 0 (xlogy's
    gradient would be 0/0 there); it changes nothing in the forward value.
    """
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1)


def _as_target(target: float | Tensor, like: Tensor) -> float | Tensor:
    """A float stays a float; a tensor is detached and moved to ``like``'s dtype / device."""
    if isinstance(target, Tensor):
        return target.detach().to(dtype=like.dtype, device=like.device)
    return float(target)


class EntropyTemperatures(nn.Module):
    """Learnable temperatures ``alpha = exp(log_alpha)``, one per (layer, token group)."""

    def __init__(self, depth: int, groups: int = 2, init_alpha: float = 0.01) -> None:
        super().__init__()
        if depth < 0 or groups < 1:
            raise ConfigError(f"entropy temperatures need depth >= 0 and groups >= 1, got {depth}, {groups}")
        if not init_alpha > 0 or math.isinf(init_alpha):
            raise ConfigError(f"init_alpha {init_alpha!r} must be a finite number > 0 (alpha = exp(log_alpha))")
        self.depth, self.groups = depth, groups
        self.log_alpha = nn.Parameter(torch.full((depth, groups), math.log(init_alpha)))

    def alphas(self) -> Tensor:
        """``[depth, groups]``, differentiable w.r.t. ``log_alpha``."""
        return self.log_alpha.exp()

    def _check(self, entropies: Tensor) -> None:
        if tuple(entropies.shape) != tuple(self.log_alpha.shape):
            raise ValueError(
                f"entropies have shape {tuple(entropies.shape)}, expected {tuple(self.log_alpha.shape)} "
                "(depth, groups)"
            )

    def critic_penalty(self, entropies: Tensor, target: float | Tensor) -> Tensor:
        """``sum sg(alpha) * (target - H)``: add to the critic loss (gradient into H only)."""
        self._check(entropies)
        alpha = self.log_alpha.detach().exp().to(entropies.dtype)
        return (alpha * (_as_target(target, entropies) - entropies)).sum()

    def temperature_loss(self, entropies: Tensor, target: float | Tensor) -> Tensor:
        """``sum alpha * sg(H - target)``: minimise over ``log_alpha`` (no gradient into H)."""
        self._check(entropies)
        gap = entropies.detach().to(self.log_alpha.dtype) - _as_target(target, self.log_alpha)
        return (self.alphas() * gap).sum()

    def forward(self, entropies: Tensor, target: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(critic_penalty, temperature_loss)`` in one call."""
        return self.critic_penalty(entropies, target), self.temperature_loss(entropies, target)
