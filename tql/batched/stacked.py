"""A population of K TQL agents trained as one batched computation (PBT over rho = H̄ / log n).

Every member has the architecture and hyperparameters of one ``TQLAgent`` (same
``AgentConfig``), its own initialisation (``seeds[i]``), its own data batch, its own noise
stream, its own target entropy H̄_i and its own optimiser state. The K members' tensors are
stacked along a leading dim (``[K, *shape]``) and one update evaluates ``TQLAgent.losses``
for all members at once: every matmul becomes one batched matmul over the members, so Python,
dispatcher and kernel-launch overhead is paid once per population instead of once per member.
Two backends compute it:

- ``native`` (default): ``tql.batched.forward.BatchedAgent``, the forward passes and losses written
  with an explicit member dim (``baddbmm`` on contiguous ``[K, rows, features]``
  activations). Written because vmap's layouts cost a GPU most of the batching's gain.
- ``vmap``: ``torch.func.functional_call`` of the agent's own ``losses`` under
  ``torch.func.vmap``; the reference the native backend is tested against.

Either way a member's update is the single agent's update (exact up to floating-point
reassociation in the batched kernels; ``tests/test_population.py``).

Adam(W) is elementwise, so Adam(W) on the stacked tensors is K independent ones; what is not
elementwise, the step count in the bias corrections and in the learning-rate schedule, is
kept per member (a ``[K]`` tensor), so a member loaded from an agent at another step count
keeps its own bias corrections and learning rate.

    pop = Population(obs_dim, act_dim, config, k=8, device="cuda", seeds=list(range(8)))
    metrics = pop.update(batches, target_entropies)   # batches: [K, B, ...] (or one [B, ...])
    pop.copy_member(src=2, dst=5)                     # PBT exploit: weights, Adam, temperatures
    agent = pop.member_agent(2)                       # a normal TQLAgent (evaluation, export)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from tql.agent import AgentConfig, TQLAgent, lr_factor
from tql.batched.forward import BatchedAgent
from tql.compiled import CompiledOrEager
from tql.entropy import clip_temperatures_

__all__ = ["Population", "BACKENDS"]

BACKENDS = ("native", "vmap")


def _adam_step_dtype() -> torch.dtype:
    """The dtype of torch's Adam ``state['step']`` (float64 under a float64 default dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _Losses(nn.Module):
    """``functional_call`` runs ``forward``; this one is ``TQLAgent.losses``."""

    def __init__(self, agent: TQLAgent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, batch: dict[str, Tensor], target: Tensor, noise: dict[str, Tensor]):
        return self.agent.losses(batch, target, noise)


class _Act(nn.Module):
    def __init__(self, agent: TQLAgent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, obs: Tensor, noise: Tensor) -> Tensor:
        return self.agent.actor(obs, noise).clamp(-1.0, 1.0)


class _HeldOut(nn.Module):
    def __init__(self, agent: TQLAgent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, batch: dict[str, Tensor], noise: Tensor) -> Tensor:
        from tql.trainer import held_out_td_error  # tql.trainer imports this module

        return held_out_td_error(self.agent, batch, noise)


class Population:
    """K ``TQLAgent`` members with stacked parameters, updated together.

    ``backend``: ``'native'`` (``tql.batched.forward``) or ``'vmap'`` (the reference; see the module
    text). ``chunk_size`` (vmap only): members per batched call (``torch.func.vmap``'s
    ``chunk_size``); None runs all K in one call, the setting meant for a GPU, where one small
    agent's update is bound by kernel launches. On a CPU an update is compute-bound and vmap's
    batching saves nothing: measured 1.1-1.4x the time of K separate updates on one thread
    (``benchmarks/speed/results/population_speed.txt``); a small ``chunk_size`` bounds the working
    set of large presets but did not measurably help there. Results are the same either way
    (up to rounding).

    ``state[name]`` holds every entry of a member's ``TQLAgent.state_dict()`` (networks,
    target critic, temperatures, persistent buffers) stacked to ``[K, *shape]``. The trainable
    ones (exactly the parameters in the agent's optimiser, with the agent's learning rates)
    are leaf tensors that receive ``.grad`` in ``update``.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: AgentConfig, k: int,
                 device: str | torch.device = "cpu", seeds: Sequence[int] | None = None,
                 chunk_size: int | None = None, total_steps: int = 1_000_000, backend: str = "native",
                 compile_default: bool = False) -> None:
        config.validate()
        if backend not in BACKENDS:
            raise ValueError(f"population backend {backend!r} is not one of: {', '.join(BACKENDS)}")
        if chunk_size is not None and backend != "vmap":
            raise ValueError(f"chunk_size={chunk_size} applies to backend='vmap' only (got {backend!r})")
        self.backend = backend
        self.total_steps = int(total_steps)
        if k < 1:
            raise ValueError(f"population size k={k} must be >= 1")
        seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != k:
            raise ValueError(f"got {len(seeds)} seeds for k={k} members")
        self.obs_dim, self.act_dim, self.config, self.k = obs_dim, act_dim, config, k
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1 (or None: all members at once)")
        self.device, self.seeds, self.chunk_size = torch.device(device), seeds, chunk_size

        # Member i is initialised exactly as `torch.manual_seed(seeds[i]); TQLAgent(...)`, and
        # its noise stream continues where torch's default generator of the device would then
        # be (initialisation draws on the CPU only): member i's draws are those of a
        # ``tql.trainer`` run with seed seeds[i]. The caller's global RNG state is left as it was.
        cuda = [self.device] if self.device.type == "cuda" else []
        members, noise_states = [], []
        with torch.random.fork_rng(devices=cuda):
            for seed in seeds:
                torch.manual_seed(seed)
                members.append(TQLAgent(obs_dim, act_dim, config, self.device, total_steps=self.total_steps))
                noise_states.append(torch.get_rng_state() if self.device.type == "cpu" else None)
        # The template supplies the modules that functional_call runs (its own values are never
        # read during updates) and is the scratch agent of member_state / load_member_state.
        self._template = members[0]
        self._losses, self._act = _Losses(self._template), _Act(self._template)
        self._held_out = _HeldOut(self._template)

        names = {id(p): n for n, p in self._template.named_parameters()}
        self._lr: dict[str, float] = {}
        self._wd: dict[str, float] = {}
        group_defaults = None
        for group, peak in zip(self._template.optimizer.param_groups, self._template.peak_lrs):
            if group["amsgrad"] or group["maximize"]:
                raise NotImplementedError("Population's Adam supports Adam / AdamW without amsgrad or maximize")
            for p in group["params"]:
                self._lr[names[id(p)]], self._wd[names[id(p)]] = peak, group["weight_decay"]
            group_defaults = group
        assert group_defaults is not None
        self._betas: tuple[float, float] = tuple(group_defaults["betas"])
        self._eps: float = group_defaults["eps"]

        member_states = [m.state_dict() for m in members]
        self.state: dict[str, Tensor] = {}
        for name in member_states[0]:
            stacked = torch.stack([s[name] for s in member_states]).detach().clone()
            self.state[name] = stacked.requires_grad_(name in self._lr)
        del members, member_states
        self.trainable = [n for n in self.state if n in self._lr]
        self._temperatures = self._template.temperatures
        self._temperature_key = "temperatures." + self._temperatures.param_name
        # The target EMA follows the agent's: over the critic's parameters (not its buffers).
        self._online = ["critic." + n for n, _ in self._template.critic.named_parameters()]
        self._target = ["target_" + n for n in self._online]
        missing = [n for n in self._target if n not in self.state]
        if missing:
            raise RuntimeError(f"target critic lacks {missing}")

        # Adam moments per trainable tensor, one step count per member.
        self.exp_avg = {n: torch.zeros_like(self.state[n]) for n in self.trainable}
        self.exp_avg_sq = {n: torch.zeros_like(self.state[n]) for n in self.trainable}
        self.steps = torch.zeros(k, dtype=torch.float32, device=self.device)

        # Per-member noise streams for updates and act().
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        for generator, state in zip(self.generators, noise_states):
            if state is not None:
                generator.set_state(state)

        self._native = BatchedAgent(self._template) if backend == "native" else None
        # The native losses through torch.compile as ``TQLAgent`` compiles its own
        # (``config.compile``; None: ``compile_default``); measured in benchmarks/speed/README.md.
        compiled = config.compile if config.compile is not None else compile_default
        self._native_losses = None if self._native is None else \
            CompiledOrEager(self._native.losses, compiled, explicit=config.compile is True)
        self._vmapped_losses = {
            shared: vmap(self._member_losses, in_dims=(0, None if shared else 0, 0, 0), chunk_size=chunk_size)
            for shared in (False, True)
        }
        self._vmapped_act = {
            shared: vmap(self._member_act, in_dims=(0, None if shared else 0, 0)) for shared in (False, True)
        }
        self._vmapped_held_out = vmap(self._member_held_out)

    # ---------------------------------------------------------------- batched computation
    def _member_losses(self, state: dict[str, Tensor], batch: dict[str, Tensor], target: Tensor,
                       noise: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return functional_call(self._losses, state, (batch, target, noise))

    def _member_act(self, state: dict[str, Tensor], obs: Tensor, noise: Tensor) -> Tensor:
        return functional_call(self._act, state, (obs, noise))

    def _member_held_out(self, state: dict[str, Tensor], batch: dict[str, Tensor], noise: Tensor) -> Tensor:
        return functional_call(self._held_out, state, (batch, noise))

    def _prefixed(self) -> dict[str, Tensor]:
        return {"agent." + n: t for n, t in self.state.items()}

    def _losses_of(self, batch: dict[str, Tensor], target: Tensor, noise: dict[str, Tensor]):
        """``(loss [K], metrics [K, ...])`` of every member, by the population's backend."""
        if self._native_losses is not None:
            return self._native_losses(self.state, batch, target, noise)
        shared = self._is_shared(batch["observations"], 3)
        return self._vmapped_losses[shared](self._prefixed(), dict(batch), target, noise)

    @staticmethod
    def _is_shared(obs: Tensor, per_member_ndim: int) -> bool:
        if obs.dim() == per_member_ndim:
            return False
        if obs.dim() == per_member_ndim - 1:
            return True
        raise ValueError(f"observations of shape {tuple(obs.shape)}: expected [K, B, obs_dim] or [B, obs_dim]")

    def _targets(self, target_entropies: float | Sequence[float] | Tensor) -> Tensor:
        """H̄ as ``[K, depth, 2]``: from one number, one per member ``[K]``, one table for all
        ``[depth, 2]`` or one per member ``[K, depth, 2]`` (a critic without attention: numbers
        ``[K]`` stay as they are, as ``TQLAgent`` shows them)."""
        target = torch.as_tensor(target_entropies, dtype=torch.float32, device=self.device)
        table = (self._template.critic.depth, 2)
        if not table[0] and tuple(target.shape) in ((), (self.k,)):  # no attention: the number as given
            return target.expand(self.k)
        if target.dim() == 0 or tuple(target.shape) == (self.k,):
            target = target.expand(self.k).reshape(self.k, 1, 1).expand(self.k, *table)
        elif tuple(target.shape) == table:
            target = target.expand(self.k, *table)
        if tuple(target.shape) != (self.k, *table):
            raise ValueError(f"target entropies of shape {tuple(target.shape)}: expected (), ({self.k},), "
                             f"{table} or ({self.k}, {table[0]}, {table[1]})")
        return target

    def member_batch(self, batches: dict[str, Tensor], i: int) -> dict[str, Tensor]:
        """Member i's batch: ``batches[key][i]``, or the batch itself when it is shared."""
        shared = self._is_shared(batches["observations"], 3)
        return dict(batches) if shared else {key: value[i] for key, value in batches.items()}

    def sample_noise(self, batches: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each member's update noise from its own generator, stacked: ``[K, ...]`` per key.

        Member i's draws are ``TQLAgent.sample_noise(batch_i, generators[i])``: they depend only
        on its own generator, not on K or on the other members.
        """
        per_member = [self._template.sample_noise(self.member_batch(batches, i), g)
                      for i, g in enumerate(self.generators)]
        return {key: torch.stack([n[key] for n in per_member]) for key in per_member[0]}

    def update(self, batches: dict[str, Tensor], target_entropies: float | Sequence[float] | Tensor,
               noise: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One gradient step for every member; metrics as ``TQLAgent.update``'s with a leading K.

        ``batches``: per-member batches (every tensor ``[K, B, ...]``) or one batch shared by
        all members (``[B, ...]``, as ``TQLAgent.update`` takes). ``target_entropies``: H̄
        per member ``[K]`` (a scalar is broadcast). ``noise``: per-member draws ``[K, ...]``
        keyed like ``TQLAgent.sample_noise`` (default: from the members' generators).
        No host synchronisation.
        """
        self._is_shared(batches["observations"], 3)  # shape check
        target = self._targets(target_entropies)
        if noise is None:
            noise = self.sample_noise(batches)
        with self._template.autocast():  # the agent's precision (AgentConfig.precision)
            loss, metrics = self._losses_of(batches, target, noise)
        for name in self.trainable:
            self.state[name].grad = None
        loss.sum().backward()  # members are independent: each slice gets its own gradient
        self._adam_step()
        self._update_target()
        metrics["alphas"] = self._temperatures.to_alphas(self.state[self._temperature_key].detach())  # after the step
        return metrics

    @torch.no_grad()
    def measure(self, batch: dict[str, Tensor], target_entropies: float | Sequence[float] | Tensor,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Every member's update metrics on ``batch`` without changing anything (e.g. the TD
        error on a held-out batch). The noise comes from ``generator``, not from the members'
        update streams, so measuring does not change the training that follows."""
        noise = [self._template.sample_noise(self.member_batch(batch, i), generator) for i in range(self.k)]
        stacked = {key: torch.stack([n[key] for n in noise]) for key in noise[0]}
        with self._template.autocast():
            _, metrics = self._losses_of(batch, self._targets(target_entropies), stacked)
        return metrics

    def _lr_factors(self) -> Tensor:
        """Each member's learning-rate factor for its next update ``[K]`` (its own step count)."""
        if self.config.lr_schedule == "constant":
            return torch.ones(self.k, dtype=torch.float64, device=self.device)
        return lr_factor(self.steps.double(), self.total_steps, self.config.warmup_fraction)

    @torch.no_grad()
    def _adam_step(self) -> None:
        """Adam(W) on the stacked tensors, per-member bias corrections and learning rates."""
        if not self.trainable:
            return
        beta1, beta2 = self._betas
        factors = self._lr_factors()
        self.steps += 1
        steps = self.steps.double()
        bias1 = 1.0 - torch.pow(beta1, steps)
        bias2_sqrt = (1.0 - torch.pow(beta2, steps)).sqrt()
        params = [self.state[n] for n in self.trainable]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        self._decay_weights(factors)
        exp_avg = [self.exp_avg[n] for n in self.trainable]
        exp_avg_sq = [self.exp_avg_sq[n] for n in self.trainable]
        torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - beta2)
        # Per-member scalars broadcast over each tensor: [K, 1, ..., 1].
        dtype = params[0].dtype
        views: dict[tuple[int, float], tuple[Tensor, Tensor]] = {}
        denom_div, step_size = [], []
        for name, p in zip(self.trainable, params):
            key = (p.dim(), self._lr[name])
            if key not in views:
                shape = (self.k,) + (1,) * (p.dim() - 1)
                size = -self._lr[name] * factors / bias1
                views[key] = (bias2_sqrt.to(dtype).view(shape), size.to(dtype).view(shape))
            denom_div.append(views[key][0])
            step_size.append(views[key][1])
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, denom_div)
        torch._foreach_add_(denom, self._eps)
        update = torch._foreach_div(exp_avg, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_add_(params, update)
        if self._temperature_key in self.state:
            clip_temperatures_(self.state[self._temperature_key], self._temperatures.signed,
                               self._temperatures.alpha_max)

    def _decay_weights(self, factors: Tensor) -> None:
        """AdamW's decoupled decay ``p *= 1 - lr * wd`` (before the Adam update, as torch)."""
        decayed = [n for n in self.trainable if self._wd[n]]
        for name in decayed:
            p = self.state[name]
            shape = (self.k,) + (1,) * (p.dim() - 1)
            p.mul_((1.0 - self._lr[name] * self._wd[name] * factors).to(p.dtype).view(shape))

    @torch.no_grad()
    def _update_target(self) -> None:
        torch._foreach_lerp_([self.state[n] for n in self._target], [self.state[n] for n in self._online],
                             self.config.tau)

    @torch.no_grad()
    def act(self, obs: Tensor, noise: Tensor | None = None) -> Tensor:
        """One-step policy actions of every member, ``[K, B, act_dim]``.

        ``obs``: ``[K, B, obs_dim]`` (one batch per member) or ``[B, obs_dim]`` (shared).
        Member i's noise is drawn as ``TQLAgent.act(obs_i, generators[i])`` draws it.
        """
        shared = self._is_shared(obs, 3)
        batch = obs.shape[-2]
        if noise is None:
            noise = torch.stack([torch.randn(batch, self.act_dim, device=obs.device, generator=g)
                                 for g in self.generators])
        with self._template.autocast():
            if self._native is not None:
                return self._native.act(self.state, obs, noise)
            return self._vmapped_act[shared](self._prefixed(), obs, noise)

    @torch.no_grad()
    def held_out_td_errors(self, batches: dict[str, Tensor], noise: Tensor) -> Tensor:
        """``tql.trainer.held_out_td_error`` of every member on its own batch ``[K, B, ...]`` with
        its own z' ``[K, B, act_dim]`` (``tql.trainer.held_out_draws``): ``[K]``, in one batched
        computation instead of K (a launch-bound GPU pays per kernel, not per member)."""
        if self._native is None:
            return self._vmapped_held_out(self._prefixed(), dict(batches), noise)
        with self._template.autocast():
            next_actions = self._native.act(self.state, batches["next_observations"], noise)
        return self._native.td_error(self.state, batches, next_actions)

    # ---------------------------------------------------------------- members
    def _check_index(self, i: int) -> int:
        if not -self.k <= i < self.k:
            raise IndexError(f"member {i} out of range for k={self.k}")
        return i % self.k

    @torch.no_grad()
    def member_state(self, i: int) -> dict:
        """Member i as ``TQLAgent.full_state()`` (loadable with ``TQLAgent.load_full_state``)."""
        i = self._check_index(i)
        agent = self._template
        agent.load_state_dict({n: t[i] for n, t in self.state.items()})
        params = dict(agent.named_parameters())
        agent.optimizer.state.clear()
        step = float(self.steps[i])
        if step > 0:  # torch's Adam has no state before its first step
            for name in self.trainable:
                agent.optimizer.state[params[name]] = {
                    "step": torch.tensor(step, dtype=_adam_step_dtype()),
                    "exp_avg": self.exp_avg[name][i].clone(),
                    "exp_avg_sq": self.exp_avg_sq[name][i].clone(),
                }
        agent.lr_step = int(step)
        state = agent.full_state()
        state["model"] = {n: t.clone() for n, t in state["model"].items()}
        agent.optimizer.state.clear()
        return copy.deepcopy(state)

    @torch.no_grad()
    def load_member_state(self, i: int, state: dict) -> None:
        """Replace member i by a ``TQLAgent.full_state()`` (networks, temperatures, Adam state).

        The population keeps its own learning rates (those of its config). ValueError if the
        agent's Adam step counts differ between its parameters (a member has one step count).
        """
        i = self._check_index(i)
        agent = self._template
        agent.load_full_state(state)
        params = dict(agent.named_parameters())
        moments, steps = {}, set()
        for name in self.trainable:
            entry = agent.optimizer.state.get(params[name])
            if entry:
                steps.add(float(entry["step"]))
                moments[name] = (entry["exp_avg"], entry["exp_avg_sq"])
            else:
                steps.add(0.0)
        agent.optimizer.state.clear()
        if len(steps) > 1:
            raise ValueError(f"agent state has Adam step counts {sorted(steps)}; a member needs one")
        for name, value in agent.state_dict().items():
            self.state[name][i] = value
        for name in self.trainable:
            m, v = moments.get(name, (0.0, 0.0))
            self.exp_avg[name][i] = m
            self.exp_avg_sq[name][i] = v
        self.steps[i] = steps.pop() if steps else 0.0

    def member_agent(self, i: int) -> TQLAgent:
        """A new ``TQLAgent`` holding member i (e.g. for evaluation or export)."""
        agent = TQLAgent(self.obs_dim, self.act_dim, self.config, self.device)
        agent.load_full_state(self.member_state(i))
        return agent

    @torch.no_grad()
    def copy_member(self, src: int, dst: int) -> None:
        """PBT exploit: member ``dst`` becomes a copy of ``src`` (networks, target critic,
        temperatures, Adam moments and step count). ``dst`` keeps its own noise generator and
        target entropy (the caller sets H̄ per update)."""
        src, dst = self._check_index(src), self._check_index(dst)
        if src == dst:
            return
        for tensors in (self.state, self.exp_avg, self.exp_avg_sq):
            for t in tensors.values():
                t[dst] = t[src]
        self.steps[dst] = self.steps[src]

    # ---------------------------------------------------------------- checkpoints
    def full_state(self) -> dict:
        """Everything needed to resume the population (tensors are copies)."""
        return {
            "k": self.k,
            "seeds": list(self.seeds),
            "total_steps": self.total_steps,
            "config": self.config.to_dict(),
            "state": {n: t.detach().clone() for n, t in self.state.items()},
            "exp_avg": {n: t.clone() for n, t in self.exp_avg.items()},
            "exp_avg_sq": {n: t.clone() for n, t in self.exp_avg_sq.items()},
            "steps": self.steps.clone(),
            "generators": [g.get_state() for g in self.generators],
        }

    @torch.no_grad()
    def load_full_state(self, state: dict) -> None:
        if state["k"] != self.k:
            raise ValueError(f"checkpoint has k={state['k']} members, this population {self.k}")
        for field, tensors in (("state", self.state), ("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            saved = state[field]
            if set(saved) != set(tensors):
                diff = sorted(set(saved) ^ set(tensors))
                raise ValueError(f"checkpoint {field} does not match this population: {diff[:5]}")
            for name, t in tensors.items():
                if saved[name].shape != t.shape:
                    raise ValueError(f"checkpoint {field}[{name!r}] has shape {tuple(saved[name].shape)}, "
                                     f"expected {tuple(t.shape)}")
                t.copy_(saved[name])
        self.steps.copy_(state["steps"])
        for g, g_state in zip(self.generators, state["generators"]):
            g.set_state(g_state)
        self.seeds = list(state["seeds"])
        self.total_steps = int(state.get("total_steps", self.total_steps))
