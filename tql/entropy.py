"""Attention entropy control (docs/published.md).

Each (layer l, token group g) has a temperature alpha_{l,g}, tuned SAC-style toward its
target entropy H̄_{l,g}:

- critic loss term:      reduce_{l,g} sg(alpha_{l,g}) * (H̄_{l,g} - H_{l,g})
  (gradient reaches the critic through H only; it raises H while alpha > 0);
- temperature loss:      reduce_{l,g} alpha_{l,g} * sg(H_{l,g} - H̄_{l,g})
  (gradient reaches the temperature only; alpha grows while H < H̄ and shrinks once H > H̄).

``reduce`` is the mean over (layer, group) as published, or the sum (our first version).

As published, alpha = exp(log_alpha) >= 0, so the control is one-sided: it prevents collapse
but cannot pull a high entropy down; it starts at 1.0 and, while H > H̄, decays at the
optimiser's pace. ``signed=True`` is the published code's two-sided option: alpha is a raw
signed parameter, a negative alpha lowers the entropy, and H̄ becomes a set-point (an
integral controller). Temperatures may be shared (the paper's ablation): one per (layer,
group), one per layer, or one for all. After each optimiser step the values are clipped to
``ALPHA_RANGE`` with the upper bound ``alpha_max`` (ours; the public code clips to a range
it does not document here). Near-uniform attention has a vanishing entropy gradient, so a
fast signed temperature winds up before anything moves and then overshoots; ``alpha_max``
bounds that. ``benchmarks/learning/target_tracking.py`` measures both rules against their targets.

Groups: g = 0 is the [VALUE] query row, g = 1 the other rows (``tql.model``). The target may
be a float or a tensor broadcastable to ``[depth, groups]`` (a table of H̄ per (layer,
group)), so a schedule can move it every step without recompiling; a depth-0 critic (FQL's
MLP) has no attention and both terms are exactly zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tql.errors import ConfigError

__all__ = ["EntropyTemperatures", "attention_entropy", "ALPHA_RANGE", "REDUCTIONS", "SHARINGS", "clip_temperatures_"]

REDUCTIONS = ("mean", "sum")
SHARINGS = ("layer_group", "layer", "global")
# Clip range of |alpha| (ours): wide enough never to bind in the runs we measured, narrow
# enough that exp(log_alpha) cannot underflow to 0 or overflow in float32.
ALPHA_RANGE = (1e-6, 1e4)


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


def _param_shape(depth: int, groups: int, sharing: str) -> tuple[int, int]:
    if sharing == "layer_group":
        return depth, groups
    if sharing == "layer":
        return depth, 1
    return (1, 1) if depth else (0, 1)


@torch.no_grad()
def clip_temperatures_(raw: Tensor, signed: bool, alpha_max: float = ALPHA_RANGE[1]) -> None:
    """Clip a temperature parameter in place to [ALPHA_RANGE[0], alpha_max] (``[-alpha_max,
    alpha_max]`` when signed: the bound also limits a two-sided controller's wind-up)."""
    low, high = ALPHA_RANGE[0], alpha_max
    if signed:
        raw.clamp_(-high, high)
    else:
        raw.clamp_(math.log(low), math.log(high))


class EntropyTemperatures(nn.Module):
    """Learnable temperatures per (layer, token group), shared as ``sharing`` says.

    The parameter is ``log_alpha`` (alpha = exp(log_alpha) >= 0) or, with ``signed``, ``alpha``
    itself; its shape is ``[depth, groups]``, ``[depth, 1]`` or ``[1, 1]`` by ``sharing``, and
    ``alphas()`` expands it to ``[depth, groups]``.
    """

    def __init__(self, depth: int, groups: int = 2, init_alpha: float = 1.0, reduction: str = "mean",
                 sharing: str = "layer_group", signed: bool = False, alpha_max: float = ALPHA_RANGE[1]) -> None:
        super().__init__()
        if depth < 0 or groups < 1:
            raise ConfigError(f"entropy temperatures need depth >= 0 and groups >= 1, got {depth}, {groups}")
        if not init_alpha > 0 or math.isinf(init_alpha):
            raise ConfigError(f"alpha_init {init_alpha!r} must be a finite number > 0")
        if not ALPHA_RANGE[0] < alpha_max <= ALPHA_RANGE[1] or init_alpha > alpha_max:
            raise ConfigError(f"alpha_max {alpha_max!r} must be in ({ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}] and "
                              f">= alpha_init {init_alpha!r}")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"entropy reduction {reduction!r} is not one of: {', '.join(REDUCTIONS)}")
        if sharing not in SHARINGS:
            raise ConfigError(f"temperature sharing {sharing!r} is not one of: {', '.join(SHARINGS)}")
        self.depth, self.groups, self.reduction, self.sharing, self.signed = depth, groups, reduction, sharing, signed
        self.alpha_max = float(alpha_max)
        init = torch.full(_param_shape(depth, groups, sharing), init_alpha if signed else math.log(init_alpha))
        self.param_name = "alpha" if signed else "log_alpha"
        self.register_parameter(self.param_name, nn.Parameter(init))

    @property
    def raw(self) -> Tensor:
        """The learnable tensor (``log_alpha``, or ``alpha`` when signed)."""
        return getattr(self, self.param_name)

    def to_alphas(self, raw: Tensor) -> Tensor:
        """alpha ``[..., depth, groups]`` from a raw parameter ``[..., rows, cols]`` (stacked too)."""
        alpha = raw if self.signed else raw.exp()
        return alpha.expand(*raw.shape[:-2], self.depth, self.groups)

    def alphas(self) -> Tensor:
        """``[depth, groups]``, differentiable w.r.t. the parameter."""
        return self.to_alphas(self.raw)

    def clip_(self) -> None:
        """Clip to ``ALPHA_RANGE`` (after an optimiser step)."""
        clip_temperatures_(self.raw, self.signed, self.alpha_max)

    def _reduce(self, x: Tensor) -> Tensor:
        return x.mean() if self.reduction == "mean" and x.numel() else x.sum()

    def _check(self, entropies: Tensor) -> None:
        if tuple(entropies.shape) != (self.depth, self.groups):
            raise ValueError(
                f"entropies have shape {tuple(entropies.shape)}, expected {(self.depth, self.groups)} "
                "(depth, groups)"
            )

    def critic_penalty(self, entropies: Tensor, target: float | Tensor) -> Tensor:
        """``reduce sg(alpha) * (target - H)``: add to the critic loss (gradient into H only)."""
        self._check(entropies)
        alpha = self.alphas().detach().to(entropies.dtype)
        return self._reduce(alpha * (_as_target(target, entropies) - entropies))

    def temperature_loss(self, entropies: Tensor, target: float | Tensor) -> Tensor:
        """``reduce alpha * sg(H - target)``: minimise over the temperatures (no gradient into H)."""
        self._check(entropies)
        gap = entropies.detach().to(self.raw.dtype) - _as_target(target, self.raw)
        return self._reduce(self.alphas() * gap)

    def forward(self, entropies: Tensor, target: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(critic_penalty, temperature_loss)`` in one call."""
        return self.critic_penalty(entropies, target), self.temperature_loss(entropies, target)
