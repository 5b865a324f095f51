"""The TQL agent: transformer critic with attention-entropy control, FQL policy extraction.

One update does, on one batch (as FQL does, all from the same pre-update parameters):
- critic: TD loss to r + gamma * mask * mean_j Qtarget_j(s', clip(mu(s', z'))) (or min_j)
  plus the entropy penalty mean_{l,g} sg(alpha) * (H̄ - H) (docs/published.md);
- temperatures: mean_{l,g} alpha * sg(H - H̄), in the critic's optimiser;
- flow BC policy v(s, x_t, t): flow-matching loss toward a - x0;
- one-step policy mu(s, z): alpha_fql * ||mu(s,z) - flow(s,z)||^2 - mean_j Q_j(s, clip(mu(s,z)));
- target critic EMA.
Optimisers as published: AdamW (weight decay on weight matrices only), critic 1e-4, actor
5e-4, warm-up then cosine decay over the run. The plain MLP critic (FQL) shares this code with
``critic="mlp"``; it has no attention, so the entropy terms vanish; ``AgentConfig.for_task``
gives it FQL's optimiser settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tql.compiled import CompiledOrEager
from tql.entropy import REDUCTIONS, SHARINGS, EntropyTemperatures
from tql.errors import ConfigError
from tql.model import LEGACY_PRESETS, EnsembleMLP, FP32Linear, GELUTanh, build_critic, get_preset
from tql.tasks import TaskSpec


# 'bf16': linear layers under bfloat16 autocast, attention core, residual stream, outputs and
# losses in float32 (tql.model); benchmarks/gpu/precision_check.py measures the loss agreement.
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("warmup_cosine", "constant")
Q_AGGREGATIONS = ("mean", "min")

# FQL's own optimiser and actor settings: the MLP critic baseline keeps them (docs/published.md).
FQL_SETTINGS = dict(critic_lr=3e-4, actor_lr=3e-4, weight_decay=0.0, lr_schedule="constant",
                    actor_layer_norm=False)
# The settings of tql-tune 0.1 (before TQL as published): a saved config without
# ``critic_lr`` is one of those and loads as exactly that run (see ``AgentConfig.from_dict``).
LEGACY_SETTINGS = dict(weight_decay=0.0, lr_schedule="constant", actor_layer_norm=False, alpha_init=0.01,
                       alpha_lr=3e-4, entropy_reduction="sum", actor_init="torch")


@dataclass
class AgentConfig:
    """All agent hyperparameters. Defaults are TQL as published (docs/published.md) unless marked
    FQL or ours; ``critic='mlp'`` (``for_task``) takes FQL's optimiser settings instead."""

    critic: str = "tql"  # 'tql' (transformer) or 'mlp' (FQL baseline)
    size: str = "0.4M"  # TQL critic preset (see `tql-tune sizes`)
    num_q: int = 2
    critic_lr: float = 1e-4  # published
    actor_lr: float = 5e-4  # published (flow and one-step policies)
    weight_decay: float = 0.01  # published: AdamW, on weight matrices only
    lr_schedule: str = "warmup_cosine"  # published: warm up from 1%, cosine to 10% at the last step
    warmup_fraction: float = 0.01  # published: 10k of 1M steps
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    q_agg: str = "mean"  # TD target over the Q heads: 'mean' (published, FQL manipulation) or 'min'
    alpha_fql: float = 300.0  # FQL: per domain (TaskSpec.alpha_fql)
    flow_steps: int = 10
    actor_hidden: tuple[int, ...] = (512, 512, 512, 512)
    actor_layer_norm: bool = True  # published (FQL's actors have none)
    actor_init: str = "glorot"  # FQL: Glorot-uniform weights, zero biases ('torch': torch's default)
    normalize_q_loss: bool = False  # FQL option: scale the Q term by 1 / mean|Q|
    alpha_init: float = 1.0  # published initial temperature
    alpha_lr: float | None = None  # None: the critic's rate and schedule (published)
    entropy_reduction: str = "mean"  # published: mean over (layer, group); 'sum' was ours
    temperature_sharing: str = "layer_group"  # paper's ablation: 'layer_group', 'layer', 'global'
    two_sided: bool = False  # signed temperature: H̄ becomes a set-point (public code's option)
    alpha_max: float = 1e4  # ours: |alpha| clipped to this after each step (bounds two-sided wind-up)
    entropy_control: bool = True  # False: no penalty, temperatures frozen (shows collapse)
    compile: bool | None = None  # torch.compile of the whole loss; None: the trainer decides (compile_pays)
    precision: str = "fp32"  # 'bf16': forward passes under bfloat16 autocast (see tql.model)

    @classmethod
    def for_task(cls, task: TaskSpec, **overrides) -> "AgentConfig":
        """The task's config: alpha_fql per domain; FQL's settings for ``critic='mlp'``."""
        base = {"alpha_fql": task.alpha_fql}
        if overrides.get("critic") == "mlp":
            base.update(FQL_SETTINGS)
        return cls().replace(**{**base, **overrides})

    def replace(self, **overrides) -> "AgentConfig":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(self))
            raise ConfigError(f"unknown agent option(s) {sorted(unknown)}; valid: {names}")
        config = dataclasses.replace(self, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        choices = (("critic", ("tql", "mlp")), ("precision", PRECISIONS), ("lr_schedule", LR_SCHEDULES),
                   ("q_agg", Q_AGGREGATIONS), ("entropy_reduction", REDUCTIONS),
                   ("temperature_sharing", SHARINGS), ("actor_init", ACTOR_INITS))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not one of: {', '.join(valid)}")
        if self.critic == "tql":
            get_preset(self.size)
        for name in ("critic_lr", "actor_lr", "batch_size", "flow_steps", "num_q", "alpha_init"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.alpha_lr is not None and self.alpha_lr <= 0:
            raise ConfigError(f"alpha_lr={self.alpha_lr!r} must be > 0 (or None: the critic's rate)")
        if not 0.0 <= self.weight_decay < 1.0 or not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} and warmup_fraction={self.warmup_fraction!r} "
                              "must be in [0, 1)")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"tau={self.tau} must be in (0, 1] and gamma={self.gamma} in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AgentConfig":
        """A saved config. One of tql-tune 0.1 (it has ``lr``, no ``critic_lr``) loads as the
        run it was: its settings, its preset under today's name for it."""
        data = dict(data)
        if "lr" in data and "critic_lr" not in data:
            lr = data.pop("lr")
            data = {**LEGACY_SETTINGS, "critic_lr": lr, "actor_lr": lr, **data}
            data["size"] = LEGACY_PRESETS.get(data.get("size", "0.4M"), data.get("size"))
        data["actor_hidden"] = tuple(data.get("actor_hidden", cls.actor_hidden))
        return cls().replace(**data)


ACTOR_INITS = ("glorot", "torch")


def critic_depth(config: AgentConfig) -> int:
    """Attention layers of the config's critic (0 for FQL's MLP): the rows of a target table."""
    return get_preset(config.size).depth if config.critic == "tql" else 0


def lr_factor(step: Tensor | float, total_steps: int, warmup_fraction: float, start: float = 0.01,
              final: float = 0.1) -> Tensor:
    """The published learning-rate schedule as a factor of the peak rate at update ``step``
    (0-based): linear warm-up from ``start`` over ``warmup_fraction * total_steps`` updates,
    then cosine decay to ``final`` at the last update (``total_steps - 1``), ``final`` after.
    Tensor in, tensor out (a population's members may be at different steps)."""
    step = torch.as_tensor(step, dtype=torch.float64)
    warmup = max(int(round(warmup_fraction * total_steps)), 0)
    decay = max(total_steps - 1 - warmup, 1)
    rising = start + (1.0 - start) * step / max(warmup, 1)
    progress = ((step - warmup) / decay).clamp(0.0, 1.0)
    falling = final + (1.0 - final) * 0.5 * (1.0 + torch.cos(math.pi * progress))
    return torch.where(step < warmup, rising, falling)


# Updates from which compiling the loss pays for its compilation, by device type (measured:
# benchmarks/speed/README.md, "The `cpu` profile's update, compiled"); below them, and on other
# devices, runs stay eager.
COMPILE_MIN_STEPS = {"cpu": 2_000, "cuda": 50_000}


def compile_pays(device: torch.device, total_steps: int) -> bool:
    """Whether a run of ``total_steps`` updates on ``device`` compiles its loss by default."""
    return total_steps >= COMPILE_MIN_STEPS.get(torch.device(device).type, math.inf)


def _decayed_ids(module: nn.Module) -> set[int]:
    matrices = set()
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            matrices.add(id(sub.weight))
        elif isinstance(sub, EnsembleMLP):
            matrices.update(id(w) for w in sub.weight_matrices)
    return matrices


def decayed_parameter_names(module: nn.Module) -> set[str]:
    """Names of the parameters AdamW decays: weight matrices of linear layers and of the Q
    head ensembles; not biases, norms, embeddings, the [VALUE] token, the per-token input
    projections or the temperatures (docs/published.md)."""
    matrices = _decayed_ids(module)
    return {name for name, p in module.named_parameters() if id(p) in matrices}


def _glorot_init_(module: nn.Module) -> None:
    """FQL's initialisation of MLPs: Glorot-uniform weights, zero biases."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            nn.init.zeros_(sub.bias)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool = False,
        init: str = "glorot") -> nn.Sequential:
    """FQL's actor MLP: GELU (tanh approximation) hidden layers, each followed by LayerNorm
    when ``layer_norm`` (published TQL), linear output (float32 under bf16 autocast too:
    actions and velocities are what the losses compare)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), GELUTanh()]
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        in_dim = width
    layers.append(FP32Linear(in_dim, out_dim))
    net = nn.Sequential(*layers)
    if init == "glorot":
        _glorot_init_(net)
    return net


class FlowPolicy(nn.Module):
    """Flow-matching BC policy: velocity field v(s, x_t, t)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], **mlp_options):
        super().__init__()
        self.net = mlp(obs_dim + act_dim + 1, hidden, act_dim, **mlp_options)

    def forward(self, obs: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([obs, x_t, t], dim=-1))

    def sample(self, obs: Tensor, noise: Tensor, steps: int) -> Tensor:
        """Euler integration of dx/dt = v from t=0 (noise) to t=1, clipped to [-1, 1]."""
        x = noise
        dt = 1.0 / steps
        for k in range(steps):
            t = torch.full_like(noise[:, :1], k * dt)
            x = x + dt * self(obs, x, t)
        return x.clamp(-1.0, 1.0)


class OneStepPolicy(nn.Module):
    """mu(s, z): one network call maps noise to an action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], **mlp_options):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, act_dim, **mlp_options)

    def forward(self, obs: Tensor, noise: Tensor) -> Tensor:
        return self.net(torch.cat([obs, noise], dim=-1))


def flow_matching_loss(flow: FlowPolicy, obs: Tensor, actions: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """|| v(s, x_t, t) - (a - x0) ||^2 with x_t = (1 - t) x0 + t a."""
    x_t = (1.0 - t) * noise + t * actions
    return (flow(obs, x_t, t) - (actions - noise)).pow(2).mean()


def td_target(rewards: Tensor, masks: Tensor, next_qs: Tensor, gamma: float, q_agg: str = "mean") -> Tensor:
    """r + gamma * mask * agg_j Q_j(s', a') (agg: mean or min); next_qs has shape [num_q, B]."""
    next_q = next_qs.min(dim=0).values if q_agg == "min" else next_qs.mean(dim=0)
    return rewards + gamma * masks * next_q


class TQLAgent(nn.Module):
    """Critic (+ target), temperatures, flow and one-step policies, one optimiser.

    ``compile_default``: whether ``config.compile=None`` compiles the loss (the trainer passes
    ``compile_pays``; a failing default compile continues eagerly after one warning).
    ``total_steps``: the run length the learning-rate schedule spans (``lr_schedule=
    'warmup_cosine'``; default the paper's 1M). It is part of the checkpoint: a resumed run
    continues the schedule it began, and updates past its end keep the final rate.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: AgentConfig, device: str | torch.device = "cpu",
                 total_steps: int = 1_000_000, compile_default: bool = False):
        super().__init__()
        config.validate()
        if total_steps < 1:
            raise ConfigError(f"total_steps={total_steps!r} must be >= 1")
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.total_steps = int(total_steps)
        self.critic = build_critic(config.critic, obs_dim, act_dim, config.size, config.num_q)
        self.target_critic = build_critic(config.critic, obs_dim, act_dim, config.size, config.num_q)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.temperatures = EntropyTemperatures(self.critic.depth, 2, config.alpha_init, config.entropy_reduction,
                                                config.temperature_sharing, config.two_sided, config.alpha_max)
        self.temperatures.requires_grad_(config.entropy_control)
        policy = dict(layer_norm=config.actor_layer_norm, init=config.actor_init)
        self.flow = FlowPolicy(obs_dim, act_dim, config.actor_hidden, **policy)
        self.actor = OneStepPolicy(obs_dim, act_dim, config.actor_hidden, **policy)
        self.to(device)
        # The schedule's step counter lives on the device: a graph-captured update advances it
        # (and the learning rates it gives) without the host (tql.graphs).
        self._lr_step = torch.zeros((), dtype=torch.float64, device=self.device)
        self.optimizer = self.build_optimizer()
        # torch.compile of the whole loss (forward of every network, losses, metrics); AOTAutograd
        # compiles its backward too. ``losses`` itself stays eager: the population's vmap
        # backend calls it. dynamic=False: a run's shapes are fixed.
        compiled = config.compile if config.compile is not None else compile_default
        self._losses = CompiledOrEager(self.losses, compiled, explicit=config.compile is True)

    @property
    def compiled(self) -> bool:
        """Whether the loss runs compiled (False again after a failed default compile)."""
        return self._losses.compiled

    @property
    def device(self) -> torch.device:
        return next(self.critic.parameters()).device

    def _param_groups(self) -> list[dict]:
        """Critic, policies (each split into decayed weight matrices and the rest when there is
        weight decay), temperatures (the critic's rate unless ``alpha_lr``; never decayed)."""
        config, groups = self.config, []
        for modules, lr in (((self.critic,), config.critic_lr), ((self.flow, self.actor), config.actor_lr)):
            params = [p for m in modules for p in m.parameters()]
            decayed = set().union(*map(_decayed_ids, modules)) if config.weight_decay else set()
            if decayed:
                groups.append({"params": [p for p in params if id(p) in decayed], "lr": lr,
                               "weight_decay": config.weight_decay})
            groups.append({"params": [p for p in params if id(p) not in decayed], "lr": lr, "weight_decay": 0.0})
        if config.entropy_control and self.critic.depth > 0:
            groups.append({"params": list(self.temperatures.parameters()),
                           "lr": config.alpha_lr or config.critic_lr, "weight_decay": 0.0})
        return groups

    @property
    def lr_step(self) -> int:
        """Updates the learning-rate schedule has seen (reading it syncs with the device)."""
        return int(self._lr_step.item())

    @lr_step.setter
    def lr_step(self, value: int) -> None:
        self._lr_step.fill_(float(value))

    def build_optimizer(self, fused: bool | None = None) -> torch.optim.Optimizer:
        """Adam(W) over ``_param_groups`` at the schedule's current rates (benchmarks rebuild it
        after swapping modules). Fused (one kernel over all tensors: measured 1.02-1.05x per
        update on CPU, benchmarks/speed/README.md) where torch has it: float parameters on CPU / CUDA.

        A fused optimiser holds each group's rate as a device tensor that ``update`` rewrites
        in place, so a CUDA graph replays the schedule too; on CUDA it is also ``capturable``
        (the update may be captured whole, ``tql.graphs``). Otherwise (float64 parameters:
        foreach Adam, which needs host numbers) the rates are Python floats.
        """
        if fused is None:
            fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in self.parameters()) \
                and self.device.type in ("cpu", "cuda")
        adam = torch.optim.AdamW if self.config.weight_decay > 0 else torch.optim.Adam
        options = {"fused": True, "capturable": self.device.type == "cuda"} if fused else {"foreach": True}
        groups = self._param_groups()
        self.peak_lrs = [group["lr"] for group in groups]
        if fused:
            for group in groups:
                group["lr"] = torch.tensor(group["lr"], dtype=torch.float32, device=self.device)
        optimizer = adam(groups, lr=self.config.critic_lr, weight_decay=0.0, **options)
        # Warm-up updates run uncaptured by design: torch's one-time warning about a capturable
        # optimiser stepping outside a graph says nothing here.
        optimizer._warned_capturable_if_run_uncaptured = True
        self._set_learning_rates(optimizer)
        return optimizer

    def _lr_factor_tensor(self) -> Tensor:
        """The schedule's factor for the next update, on the device (no host sync)."""
        if self.config.lr_schedule == "constant":
            return torch.ones((), dtype=torch.float64, device=self.device)
        return lr_factor(self._lr_step, self.total_steps, self.config.warmup_fraction)

    def lr_factor(self, step: int | None = None) -> float:
        """The schedule's factor of the peak rates at update ``step`` (default: the next)."""
        if self.config.lr_schedule == "constant":
            return 1.0
        step = self.lr_step if step is None else step
        return float(lr_factor(step, self.total_steps, self.config.warmup_fraction))

    def _set_learning_rates(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Every group at its peak rate times the schedule's factor for the next update:
        written into the group's rate tensor (a fused optimiser; no host sync) or set as a
        float. A loaded optimiser state may bring floats back: they become tensors again."""
        optimizer = optimizer or self.optimizer
        factor = self._lr_factor_tensor()
        for group, peak in zip(optimizer.param_groups, self.peak_lrs):
            if not group.get("fused"):
                group["lr"] = peak * float(factor)
            elif isinstance(group["lr"], Tensor) and group["lr"].device == self.device:
                group["lr"].copy_(factor * peak)
            else:
                group["lr"] = (factor * peak).to(torch.float32)

    def autocast(self) -> torch.autocast:
        """The forward passes' precision region: bfloat16 autocast with ``precision='bf16'``
        (off otherwise). Backward and optimiser steps run outside it, as autocast wants."""
        # No cast cache while a CUDA graph is captured: cached bf16 weight copies would be
        # stale in later replays (torch's advice for autocast in graphs).
        capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16",
                              cache_enabled=not capturing)

    @torch.no_grad()
    def act(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One-step policy action for a batch of observations, clipped to [-1, 1]."""
        noise = torch.randn(obs.shape[0], self.act_dim, device=obs.device, generator=generator)
        with self.autocast():
            return self.actor(obs, noise).clamp(-1.0, 1.0)

    def sample_noise(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The random draws of one update, from ``generator`` (default: torch's global one).

        ``next``: z' of the TD target's mu(s', z'); ``flow``, ``flow_t``: x0 and t of the
        flow-matching loss; ``actor``: z shared by the one-step policy and its flow teacher.
        Drawn in this order, so ``update`` without explicit noise consumes torch's global
        generator as it always did.
        """
        actions = batch["actions"]
        shape, like = tuple(actions.shape), dict(dtype=actions.dtype, device=actions.device)
        return {
            "next": torch.randn(shape, generator=generator, **like),
            "flow": torch.randn(shape, generator=generator, **like),
            "flow_t": torch.rand((*shape[:-1], 1), generator=generator, **like),
            "actor": torch.randn(shape, generator=generator, **like),
        }

    def _critic_loss(self, batch: dict[str, Tensor], target: Tensor, noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            next_obs = batch["next_observations"]
            next_actions = self.actor(next_obs, noise["next"]).clamp(-1.0, 1.0)
            next_qs, _ = self.target_critic(next_obs, next_actions, entropies=False)
            target_q = td_target(batch["rewards"], batch["masks"], next_qs, self.config.gamma, self.config.q_agg)
        qs, entropies = self.critic(batch["observations"], batch["actions"])
        td_loss = (qs - target_q).pow(2).mean()
        loss = td_loss
        if self.config.entropy_control:
            loss = loss + self.temperatures.critic_penalty(entropies, target)
        stats = {"critic/td_loss": td_loss, "critic/q_mean": qs.mean(), "critic/q_max": qs.max(),
                 "critic/q_min": qs.min(), "critic/target_q": target_q.mean()}
        return loss, {**stats, "entropies": entropies}

    def _actor_loss(self, batch: dict[str, Tensor], noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        obs, actions = batch["observations"], batch["actions"]
        bc_loss = flow_matching_loss(self.flow, obs, actions, noise["flow"], noise["flow_t"])
        with torch.no_grad():
            teacher = self.flow.sample(obs, noise["actor"], self.config.flow_steps)
        student = self.actor(obs, noise["actor"])
        distill_loss = (student - teacher).pow(2).mean()
        # Q through a frozen view of the critic: the actor loss must not train the critic,
        # and detached parameters keep autograd from computing the critic's weight grads.
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        qs, _ = functional_call(self.critic, frozen, (obs, student.clamp(-1.0, 1.0)), {"entropies": False})
        q_loss = -qs.mean()
        if self.config.normalize_q_loss:
            q_loss = q_loss / qs.abs().mean().detach().clamp_min(1e-6)
        loss = bc_loss + self.config.alpha_fql * distill_loss + q_loss
        return loss, {"actor/bc_flow_loss": bc_loss, "actor/distill_loss": distill_loss, "actor/q_loss": q_loss}

    def losses(self, batch: dict[str, Tensor], target: Tensor, noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(total loss, metrics)`` of one update, before any parameter changes.

        Pure in the parameters (no randomness, no in-place state), so ``tql.batched.stacked``
        can evaluate it for K stacked members with ``torch.func.functional_call`` + ``vmap``.
        """
        critic_loss, critic_stats = self._critic_loss(batch, target, noise)
        actor_loss, actor_stats = self._actor_loss(batch, noise)
        entropies = critic_stats.pop("entropies")
        temp_loss = self.temperatures.temperature_loss(entropies.detach(), target)
        # H̄ per (layer, group) as the control saw it (a depth-0 critic: the scalar given).
        shown = target.expand(entropies.shape) if entropies.numel() else target
        metrics = {**critic_stats, **actor_stats, "critic/loss": critic_loss, "target_entropy": shown}
        metrics["entropies"] = entropies.detach()
        return critic_loss + actor_loss + temp_loss, {k: v.detach() for k, v in metrics.items()}

    def update(self, batch: dict[str, Tensor], target_entropy: float | Tensor,
               noise: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One gradient step on everything; returns detached metric tensors (no host sync).

        ``target_entropy``: H̄ in nats, a number or a ``[depth, 2]`` table (``tql.targets``;
        the caller checks its range). ``noise``: the update's random draws (see
        ``sample_noise``); drawn from torch's global generator when omitted.
        """
        target = torch.as_tensor(target_entropy, dtype=torch.float32, device=self.device)
        if noise is None:
            noise = self.sample_noise(batch)
        with self.autocast():
            loss, metrics = self._losses(batch, target, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.after_step()
        metrics["alphas"] = self.temperatures.alphas().detach()  # after the step
        return metrics

    def after_step(self) -> None:
        """What follows the optimiser's step in ``update``: the temperatures clipped to their
        range, the learning-rate schedule one step on, the target critic's Polyak average (no
        host sync; a profile times it as the optimiser's part)."""
        self.temperatures.clip_()
        self._lr_step += 1
        self._set_learning_rates()
        self._update_target()

    @torch.no_grad()
    def _update_target(self) -> None:
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        torch._foreach_lerp_(target, online, self.config.tau)

    def full_state(self) -> dict:
        """Everything needed to resume: networks, temperatures, optimiser, its schedule."""
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": self.config.to_dict(), "lr_step": self.lr_step, "total_steps": self.total_steps}

    def load_full_state(self, state: dict) -> None:
        """Load ``full_state()``; the schedule continues where it was (a state saved before
        schedules existed: step 0 of a constant rate)."""
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_step = int(state.get("lr_step", 0))
        self.total_steps = int(state.get("total_steps", self.total_steps))
        self._set_learning_rates()


def flat_metrics(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Host copy of update metrics, per-layer entropies and alphas split into named scalars.

    Calling this syncs with the device: the training loop does it only at log intervals.
    """
    out: dict[str, float] = {}
    prefixes = {"entropies": "entropy", "alphas": "alpha", "target_entropy": "target_entropy"}
    for key, value in metrics.items():
        if key in prefixes and value.dim() == 2:
            for layer, row in enumerate(value.tolist()):
                out[f"{prefixes[key]}/l{layer}_value"], out[f"{prefixes[key]}/l{layer}_other"] = row
            if key == "target_entropy" and value.numel():  # one number for progress bars and plots
                out[key] = float(value.mean())
        else:
            out[key] = float(value)
    return out


__all__ = ["AgentConfig", "PRECISIONS", "LR_SCHEDULES", "Q_AGGREGATIONS", "FQL_SETTINGS", "LEGACY_SETTINGS",
           "COMPILE_MIN_STEPS", "compile_pays",
           "lr_factor", "decayed_parameter_names", "critic_depth", "TQLAgent", "FlowPolicy", "OneStepPolicy", "flow_matching_loss",
           "td_target", "flat_metrics"]
