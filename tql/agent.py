"""The TQL agent: transformer critic with attention-entropy control, FQL policy extraction.

One update does, on one batch (as FQL does, all from the same pre-update parameters):
- critic: TD loss to r + gamma * mask * mean_j Qtarget_j(s', clip(mu(s', z'))) plus the
  entropy penalty sum sg(alpha) * (H̄ - H) (DESIGN.md section 3);
- temperatures: sum alpha * sg(H - H̄);
- flow BC policy v(s, x_t, t): flow-matching loss toward a - x0;
- one-step policy mu(s, z): alpha_fql * ||mu(s,z) - flow(s,z)||^2 - mean_j Q_j(s, clip(mu(s,z)));
- target critic EMA.
The plain MLP critic (FQL) shares this code with ``critic="mlp"``; it has no attention, so the
entropy terms vanish.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tql.entropy import EntropyTemperatures
from tql.errors import ConfigError
from tql.model import FP32Linear, build_critic, get_preset
from tql.tasks import TaskSpec


# 'bf16': linear layers under bfloat16 autocast, attention core, residual stream, outputs and
# losses in float32 (tql.model); benchmarks/precision_check.py measures the loss agreement.
PRECISIONS = ("fp32", "bf16")


@dataclass
class AgentConfig:
    """All agent hyperparameters. Defaults follow FQL / DESIGN.md; alpha_fql is per domain."""

    critic: str = "tql"  # 'tql' (transformer) or 'mlp' (FQL baseline)
    size: str = "0.4M"  # TQL critic preset (see `tql-tune sizes`)
    num_q: int = 2
    lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    alpha_fql: float = 300.0
    flow_steps: int = 10
    actor_hidden: tuple[int, ...] = (512, 512, 512, 512)
    normalize_q_loss: bool = False  # FQL option: scale the Q term by 1 / mean|Q|
    alpha_lr: float = 3e-4  # temperature learning rate (our default; the paper's is not public)
    alpha_init: float = 0.01  # initial temperature (our default)
    entropy_control: bool = True  # False: no penalty, temperatures frozen (shows collapse)
    compile: bool = False  # torch.compile the critics' forward (speed only; first steps compile)
    precision: str = "fp32"  # 'bf16': forward passes under bfloat16 autocast (see tql.model)

    @classmethod
    def for_task(cls, task: TaskSpec, **overrides) -> "AgentConfig":
        config = cls(alpha_fql=task.alpha_fql)
        return config.replace(**overrides)

    def replace(self, **overrides) -> "AgentConfig":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(self))
            raise ConfigError(f"unknown agent option(s) {sorted(unknown)}; valid: {names}")
        config = dataclasses.replace(self, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        if self.critic not in ("tql", "mlp"):
            raise ConfigError(f"critic {self.critic!r} is not one of: tql, mlp")
        if self.critic == "tql":
            get_preset(self.size)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of: {', '.join(PRECISIONS)}")
        for name in ("lr", "batch_size", "flow_steps", "num_q", "alpha_lr", "alpha_init"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"tau={self.tau} must be in (0, 1] and gamma={self.gamma} in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AgentConfig":
        data = dict(data)
        data["actor_hidden"] = tuple(data.get("actor_hidden", cls.actor_hidden))
        return cls().replace(**data)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """FQL's actor MLP: GELU (tanh approximation) hidden layers, linear output (float32 under
    bf16 autocast too: actions and velocities are what the losses compare)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.GELU(approximate="tanh")]
        in_dim = width
    layers.append(FP32Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class FlowPolicy(nn.Module):
    """Flow-matching BC policy: velocity field v(s, x_t, t)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim + act_dim + 1, hidden, act_dim)

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

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, act_dim)

    def forward(self, obs: Tensor, noise: Tensor) -> Tensor:
        return self.net(torch.cat([obs, noise], dim=-1))


def flow_matching_loss(flow: FlowPolicy, obs: Tensor, actions: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """|| v(s, x_t, t) - (a - x0) ||^2 with x_t = (1 - t) x0 + t a."""
    x_t = (1.0 - t) * noise + t * actions
    return (flow(obs, x_t, t) - (actions - noise)).pow(2).mean()


def td_target(rewards: Tensor, masks: Tensor, next_qs: Tensor, gamma: float) -> Tensor:
    """r + gamma * mask * mean_j Q_j(s', a'); next_qs has shape [num_q, B]."""
    return rewards + gamma * masks * next_qs.mean(dim=0)


class TQLAgent(nn.Module):
    """Critic (+ target), temperatures, flow and one-step policies, one Adam optimiser."""

    def __init__(self, obs_dim: int, act_dim: int, config: AgentConfig, device: str | torch.device = "cpu"):
        super().__init__()
        config.validate()
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.critic = build_critic(config.critic, obs_dim, act_dim, config.size, config.num_q)
        self.target_critic = build_critic(config.critic, obs_dim, act_dim, config.size, config.num_q)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.temperatures = EntropyTemperatures(self.critic.depth, 2, config.alpha_init)
        self.temperatures.requires_grad_(config.entropy_control)
        self.flow = FlowPolicy(obs_dim, act_dim, config.actor_hidden)
        self.actor = OneStepPolicy(obs_dim, act_dim, config.actor_hidden)
        self.to(device)
        # Fused Adam (one kernel over all tensors): measured 1.02-1.05x per update on CPU
        # (benchmarks/README.md); float32 parameters on CPU / CUDA only, else foreach.
        fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in self.parameters()) \
            and self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=config.lr,
                                          **({"fused": True} if fused else {"foreach": True}))
        if config.compile:
            # The instances' forward, not the modules: state_dict keys, functional_call and
            # the parameter structure stay as they are. dynamic=False: fixed batch shapes.
            for critic in (self.critic, self.target_critic):
                critic.forward = torch.compile(critic.forward, dynamic=False)

    @property
    def device(self) -> torch.device:
        return next(self.critic.parameters()).device

    def _param_groups(self) -> list[dict]:
        groups = [
            {"params": list(self.critic.parameters())},
            {"params": list(self.flow.parameters()) + list(self.actor.parameters())},
        ]
        if self.config.entropy_control and self.critic.depth > 0:
            groups.append({"params": list(self.temperatures.parameters()), "lr": self.config.alpha_lr})
        return groups

    def autocast(self) -> torch.autocast:
        """The forward passes' precision region: bfloat16 autocast with ``precision='bf16'``
        (off otherwise). Backward and optimiser steps run outside it, as autocast wants."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

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
            target_q = td_target(batch["rewards"], batch["masks"], next_qs, self.config.gamma)
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

        Pure in the parameters (no randomness, no in-place state), so ``tql.population``
        can evaluate it for K stacked members with ``torch.func.functional_call`` + ``vmap``.
        """
        critic_loss, critic_stats = self._critic_loss(batch, target, noise)
        actor_loss, actor_stats = self._actor_loss(batch, noise)
        entropies = critic_stats.pop("entropies")
        temp_loss = self.temperatures.temperature_loss(entropies.detach(), target)
        metrics = {**critic_stats, **actor_stats, "critic/loss": critic_loss, "target_entropy": target}
        metrics["entropies"] = entropies.detach()
        return critic_loss + actor_loss + temp_loss, {k: v.detach() for k, v in metrics.items()}

    def update(self, batch: dict[str, Tensor], target_entropy: float | Tensor,
               noise: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One gradient step on everything; returns detached metric tensors (no host sync).

        ``noise``: the update's random draws (see ``sample_noise``); drawn from torch's
        global generator when omitted.
        """
        target = torch.as_tensor(target_entropy, dtype=torch.float32, device=self.device)
        if noise is None:
            noise = self.sample_noise(batch)
        with self.autocast():
            loss, metrics = self.losses(batch, target, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._update_target()
        metrics["alphas"] = self.temperatures.alphas().detach()  # after the step
        return metrics

    @torch.no_grad()
    def _update_target(self) -> None:
        online = list(self.critic.parameters())
        target = list(self.target_critic.parameters())
        torch._foreach_lerp_(target, online, self.config.tau)

    def full_state(self) -> dict:
        """Everything needed to resume: networks, temperatures, optimiser."""
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": self.config.to_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def flat_metrics(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Host copy of update metrics, per-layer entropies and alphas split into named scalars.

    Calling this syncs with the device: the training loop does it only at log intervals.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("entropies", "alphas"):
            prefix = "entropy" if key == "entropies" else "alpha"
            for layer, row in enumerate(value.tolist()):
                out[f"{prefix}/l{layer}_value"], out[f"{prefix}/l{layer}_other"] = row
        else:
            out[key] = float(value)
    return out


__all__ = ["AgentConfig", "PRECISIONS", "TQLAgent", "FlowPolicy", "OneStepPolicy", "flow_matching_loss",
           "td_target", "flat_metrics"]
