"""K members' forward passes and losses as explicit batched matmuls (``Population``'s native backend).

``tql.batched.stacked`` stacks K agents' tensors to ``[K, *shape]``. Evaluating ``TQLAgent.losses``
for all of them with ``torch.func.vmap`` over ``functional_call`` is exact but slow on a GPU:
vmap leaves non-contiguous layouts behind and the profile is dominated by generic strided
elementwise kernels (docs/published.md: K = 8 costs 5.8x one member's GPU time for 8x the work).
``BatchedAgent`` computes the same losses and metrics with the member dim written out:

- every linear layer is one ``baddbmm`` over the members, activations ``[K, rows, features]``
  contiguous, torch's ``[K, out, in]`` weights read through a transposed view;
- attention has no weights, so the member dim folds into its batch dim (``[K*B*H, n, dh]``);
- LayerNorm is ``F.layer_norm`` without affine, then a multiply-add with ``[K, 1, d]``
  weights; the Q-head ensemble runs as ``[K*num_q, B, h]`` bmms;
- losses are reduced per member (mean over that member's batch only) to a ``[K]`` vector
  whose sum is what the population backpropagates (members are independent).

No Python loop over members, tokens or heads (only over layers and Euler steps), no host
synchronisation and no data-dependent shapes, so an update can be captured in a CUDA graph.

The formulas are those of ``tql.model``, ``tql.agent`` and ``tql.entropy``, restated for a
leading member dim; ``tests/test_population.py`` checks in float64 that member i's losses,
metrics and gradients equal a single ``TQLAgent``'s, so a change there that is not mirrored
here fails the tests. ``precision='bf16'`` keeps ``tql.model``'s float32 islands (attention
core, residual stream, Q heads, policies' output layers) through the same ``full_precision``
/ ``upcast`` helpers. ``AgentConfig.compile`` does not apply here (it compiles a single
``TQLAgent``'s loss); the update is captured in a CUDA graph as a single agent's is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tql.agent import TQLAgent, td_target
from tql.model import EnsembleMLP, FP32Linear, MLPCritic, TQLCritic, full_precision, gelu_tanh, upcast

__all__ = ["BatchedAgent"]

Params = Mapping[str, Tensor]


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x [K, M, in] @ weight[k].T + bias[k]`` for every member: one baddbmm."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm of ``x [K, M, d]`` with per-member affine ``weight, bias [K, d]``."""
    return torch.addcmul(bias.unsqueeze(1), F.layer_norm(x, x.shape[-1:], eps=eps), weight.unsqueeze(1))


def _scope(state: Params, prefix: str, names: list[str], detach: bool = False) -> dict[str, Tensor]:
    """The sub-module's tensors keyed as the sub-module names them (``prefix`` removed)."""
    return {name: state[prefix + name].detach() if detach else state[prefix + name] for name in names}


class _Ensemble:
    """``EnsembleMLP`` for K members: ``x [K, B, in] -> [K, num_q, B]``, float32 under autocast
    too (see ``tql.model``). Hidden layers run on ``[K*num_q, B, h]``."""

    def __init__(self, module: EnsembleMLP, prefix: str) -> None:
        self.q, self.h, self.layers, self.activation = module.num_q, module.hidden, module.layers, module.activation
        self.prefix = prefix

    def __call__(self, p: Params, x: Tensor) -> Tensor:
        with full_precision(x):
            return self._forward(p, upcast(x))

    def _forward(self, p: Params, x: Tensor) -> Tensor:
        k, batch, _ = x.shape
        q, h, pre = self.q, self.h, self.prefix
        # The first layer is shared input -> all heads: one bmm per member, then heads to the batch dim.
        y = torch.baddbmm(p[pre + "b_in"].unsqueeze(1), x, p[pre + "w_in"])
        y = self._act(p, y.view(k, batch, q, h).transpose(1, 2).reshape(k * q, batch, h), 0, k)
        for i in range(1, self.layers):
            w = p[f"{pre}w_hidden.{i - 1}"].reshape(k * q, h, h)
            b = p[f"{pre}b_hidden.{i - 1}"].reshape(k * q, 1, h)
            y = self._act(p, torch.baddbmm(b, y, w), i, k)
        out = torch.baddbmm(p[pre + "b_out"].reshape(k * q, 1, 1), y, p[pre + "w_out"].reshape(k * q, h, 1))
        return out.view(k, q, batch)

    def _act(self, p: Params, y: Tensor, layer: int, k: int) -> Tensor:
        if self.activation == "relu":
            return F.relu(y)
        shape = (k * self.q, 1, self.h)
        weight = p[self.prefix + "ln_weight"][:, layer].reshape(shape)
        bias = p[self.prefix + "ln_bias"][:, layer].reshape(shape)
        return torch.addcmul(bias, F.layer_norm(gelu_tanh(y), (self.h,)), weight)


class _TQLCritic:
    """``TQLCritic`` for K members: ``(obs [K, B, obs_dim], act [K, B, act_dim]) -> (q [K, num_q,
    B], entropies [K, depth, 2])``; activations ``[K, B*n, d]`` between blocks."""

    def __init__(self, critic: TQLCritic) -> None:
        size = critic.size
        self.n, self.dim, self.heads, self.head_dim, self.depth = (critic.n_tokens, size.dim, size.heads,
                                                                   size.head_dim, critic.depth)
        self.scale = critic.blocks[0].scale
        self.ln_eps = [(b.ln1.eps, b.ln2.eps) for b in critic.blocks]
        self.final_eps = critic.ln_f.eps
        self.modality_ids = critic.modality_ids
        self.q_heads = _Ensemble(critic.q_heads, "q_heads.")

    def __call__(self, p: Params, obs: Tensor, act: Tensor, entropies: bool = True) -> tuple[Tensor, Tensor]:
        k, batch, _ = obs.shape
        x = self.embed(p, obs, act)
        groups = []
        for i in range(self.depth):
            x, group = self._block(p, i, x, batch, value_only=i == self.depth - 1, entropy=entropies)
            groups.append(group)
        value = _layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], self.final_eps)  # [K, B, d]: the [VALUE] rows
        q = self.q_heads(p, value)
        return q, (torch.stack(groups, dim=1) if entropies else value.new_zeros(k, 0, 2))

    def embed(self, p: Params, obs: Tensor, act: Tensor) -> Tensor:
        """Tokens ``[K, B*n, d]`` (``TQLCritic.embed`` per member)."""
        k, batch, _ = obs.shape
        bias = torch.cat((p["value_token"], p["b_pos"]), dim=1) + p["pos_emb"] + p["modality_emb"][:, self.modality_ids]
        weight = F.pad(p["w_pos"], (0, 0, 1, 0))
        scalars = F.pad(torch.cat((obs, act), dim=-1), (1, 0))  # [K, B, n]
        x = torch.addcmul(bias.unsqueeze(1), scalars.unsqueeze(-1), weight.unsqueeze(1))  # [K, B, n, d]
        return x.view(k, batch * self.n, self.dim)

    def _ln(self, p: Params, name: str, x: Tensor, eps: float) -> Tensor:
        return _layer_norm(x, p[name + ".weight"], p[name + ".bias"], eps)

    def _lin(self, p: Params, name: str, x: Tensor) -> Tensor:
        return _linear(x, p[name + ".weight"], p[name + ".bias"])

    def _heads_to_batch(self, x: Tensor, k: int, batch: int, parts: int) -> Tensor:
        """``[K, B*n, parts*d]`` projections -> ``[parts, K*B*H, n, dh]`` (contiguous)."""
        x = upcast(x).view(k, batch, self.n, parts, self.heads, self.head_dim)
        return x.permute(3, 0, 1, 4, 2, 5).reshape(parts, k * batch * self.heads, self.n, self.head_dim)

    def _attention(self, p: Params, i: int, x: Tensor, batch: int, entropy: bool):
        """Block i's (probs [K*B*H, n, n], row entropies [K*B*H, n] or None, values [K*B*H, n,
        dh]); entropies from the log-softmax of the same pass, as ``_Block.attention``."""
        k, pre = x.shape[0], f"blocks.{i}."
        qkv = self._lin(p, pre + "qkv", self._ln(p, pre + "ln1", x, self.ln_eps[i][0]))
        q, key, v = self._heads_to_batch(qkv, k, batch, 3).unbind(0)
        with full_precision(x):
            logits = torch.bmm(q, key.transpose(1, 2)).mul_(self.scale)
            if not entropy:
                return torch.softmax(logits, dim=-1), None, v
            logp = torch.log_softmax(logits, dim=-1)
            probs = logp.exp()
            return probs, -torch.linalg.vecdot(probs, logp), v

    def _block(self, p: Params, i: int, x: Tensor, batch: int, value_only: bool, entropy: bool):
        """``_Block.forward`` for K members: (x', per-member group entropies [K, 2] or None).
        With ``value_only`` x' is ``[K, B, d]`` (the [VALUE] rows), else ``[K, B*n, d]``."""
        pre = f"blocks.{i}."
        if value_only and not entropy:
            return self._value_row(p, pre, x, batch, i), None
        k, n, dim = x.shape[0], self.n, self.dim
        probs, row_entropy, v = self._attention(p, i, x, batch, entropy)
        groups = None
        if row_entropy is not None:
            rows = row_entropy.view(k, batch * self.heads, n)
            groups = torch.stack((rows[:, :, 0].mean(1), rows[:, :, 1:].mean((1, 2))), dim=-1)
        if value_only:
            probs, x = probs[:, :1], x.view(k, batch, n, dim)[:, :, 0]
        rows_out = probs.shape[1]
        with full_precision(x):
            out = torch.bmm(probs, v).view(k, batch, self.heads, rows_out, self.head_dim)
        x = x + self._lin(p, pre + "proj", out.transpose(2, 3).reshape(k, batch * rows_out, dim))
        return x + self._mlp(p, pre, x, i), groups

    def _mlp(self, p: Params, pre: str, x: Tensor, i: int) -> Tensor:
        h = self._ln(p, pre + "ln2", x, self.ln_eps[i][1])
        return self._lin(p, pre + "fc2", gelu_tanh(self._lin(p, pre + "fc1", h)))

    def _value_row(self, p: Params, pre: str, x: Tensor, batch: int, i: int) -> Tensor:
        """``_Block._value_row``: the [VALUE] query alone attends (K and V cover all tokens);
        ``[K, B*n, d] -> [K, B, d]``."""
        k, n, dim = x.shape[0], self.n, self.dim
        h = self._ln(p, pre + "ln1", x, self.ln_eps[i][0])
        w, b = p[pre + "qkv.weight"], p[pre + "qkv.bias"]  # rows: [Q; K; V], each [d, d]
        key, v = self._heads_to_batch(_linear(h, w[:, dim:], b[:, dim:]), k, batch, 2).unbind(0)
        h0 = h.view(k, batch, n, dim)[:, :, 0]
        q = upcast(_linear(h0, w[:, :dim], b[:, :dim])).reshape(k * batch * self.heads, 1, self.head_dim)
        with full_precision(x):
            probs = torch.softmax(torch.bmm(q, key.transpose(1, 2)).mul_(self.scale), dim=-1)
            out = torch.bmm(probs, v).view(k, batch, dim)  # [K*B*H, 1, dh] is [K, B, H*dh] already
        x = x.view(k, batch, n, dim)[:, :, 0] + self._lin(p, pre + "proj", out)
        return x + self._mlp(p, pre, x, i)


class _MLPCritic:
    """FQL's ``MLPCritic`` for K members (no attention: entropies ``[K, 0, 2]``)."""

    def __init__(self, critic: MLPCritic) -> None:
        self.mlp = _Ensemble(critic.mlp, "mlp.")

    def __call__(self, p: Params, obs: Tensor, act: Tensor, entropies: bool = True) -> tuple[Tensor, Tensor]:
        x = torch.cat((obs, act), dim=-1)
        return self.mlp(p, x), x.new_zeros(x.shape[0], 0, 2)


class _Policy:
    """An actor MLP (``tql.agent.mlp``: Linear, GELU, optional LayerNorm, ..., FP32Linear) for
    K members, read layer by layer from the template's ``nn.Sequential``."""

    def __init__(self, net: nn.Sequential) -> None:
        self.plan: list[tuple[str, str, object]] = []
        for name, module in net.named_children():
            if isinstance(module, nn.Linear):
                self.plan.append(("out" if isinstance(module, FP32Linear) else "linear", name, None))
            elif isinstance(module, nn.GELU):
                self.plan.append(("gelu", name, module.approximate))
            elif isinstance(module, nn.LayerNorm):
                self.plan.append(("ln", name, module.eps))
            else:
                raise NotImplementedError(f"batched policy: no native form of {type(module).__name__} "
                                          "(use Population(backend='vmap'))")

    def __call__(self, p: Params, x: Tensor) -> Tensor:
        for kind, name, arg in self.plan:
            if kind == "linear":
                x = _linear(x, p[name + ".weight"], p[name + ".bias"])
            elif kind == "out":  # FP32Linear: actions and velocities in full precision
                with full_precision(x):
                    x = _linear(upcast(x), p[name + ".weight"], p[name + ".bias"])
            elif kind == "gelu":
                x = gelu_tanh(x) if arg == "tanh" else F.gelu(x, approximate=arg)
            else:
                x = _layer_norm(x, p[name + ".weight"], p[name + ".bias"], arg)
        return x


class BatchedAgent:
    """``TQLAgent.losses`` and ``TQLAgent.act`` for K stacked members (``Population.state``:
    the agent's ``state_dict()`` names with a leading K dim). Built once from a template
    agent, whose architecture and config it reads; its values are never used."""

    def __init__(self, agent: TQLAgent) -> None:
        self.config, self.temperatures = agent.config, agent.temperatures
        self.depth = agent.critic.depth
        kinds = {TQLCritic: _TQLCritic, MLPCritic: _MLPCritic}
        if type(agent.critic) not in kinds:
            raise NotImplementedError(f"no native batched form of {type(agent.critic).__name__}")
        self.critic = kinds[type(agent.critic)](agent.critic)
        self.actor, self.flow = _Policy(agent.actor.net), _Policy(agent.flow.net)
        self.temperature_key = "temperatures." + agent.temperatures.param_name
        names = list(agent.state_dict())
        self._names = {prefix: [n[len(prefix):] for n in names if n.startswith(prefix)]
                       for prefix in ("critic.", "target_critic.", "actor.net.", "flow.net.")}

    def _params(self, state: Params, prefix: str, detach: bool = False) -> dict[str, Tensor]:
        return _scope(state, prefix, self._names[prefix], detach)

    @staticmethod
    def _per_member(tensors: Mapping[str, Tensor], k: int, ndim: int) -> dict[str, Tensor]:
        """A batch shared by all members (``observations`` of ``ndim - 1`` dims) expanded to K."""
        if tensors["observations"].dim() == ndim:
            return dict(tensors)
        return {key: value.expand(k, *value.shape) for key, value in tensors.items()}

    def losses(self, state: Params, batch: Mapping[str, Tensor], target: Tensor,
               noise: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss [K], metrics with a leading K)``: member i's entries are
        ``TQLAgent.losses(batch_i, target[i], noise_i)``. ``batch``: ``[K, B, ...]`` or shared
        ``[B, ...]``; ``target``: ``[K, depth, 2]`` (``[K]`` for a critic without attention);
        ``noise``: ``[K, ...]`` keyed as ``TQLAgent.sample_noise``."""
        k = noise["next"].shape[0]
        batch = self._per_member(batch, k, 3)
        critic_loss, stats, entropies = self._critic_loss(state, batch, target, noise)
        actor_loss, actor_stats = self._actor_loss(state, batch, noise)
        temp_loss = self._temperature_loss(state, entropies.detach(), target)
        shown = target.expand(entropies.shape) if self.depth else target
        metrics = {**stats, **actor_stats, "critic/loss": critic_loss, "target_entropy": shown,
                   "entropies": entropies}
        return critic_loss + actor_loss + temp_loss, {key: v.detach() for key, v in metrics.items()}

    def _reduce(self, x: Tensor) -> Tensor:
        """``EntropyTemperatures``' reduction over (layer, group), per member."""
        return x.mean((1, 2)) if self.temperatures.reduction == "mean" else x.sum((1, 2))

    def _critic_loss(self, state: Params, batch: dict[str, Tensor], target: Tensor, noise: Mapping[str, Tensor]):
        config = self.config
        with torch.no_grad():
            next_obs = batch["next_observations"]
            next_actions = self.actor(self._params(state, "actor.net."), torch.cat((next_obs, noise["next"]), -1))
            next_qs, _ = self.critic(self._params(state, "target_critic."), next_obs, next_actions.clamp(-1.0, 1.0),
                                     entropies=False)
            # td_target reduces the heads' dim 0: [num_q, K, B] -> [K, B].
            target_q = td_target(batch["rewards"], batch["masks"], next_qs.transpose(0, 1), config.gamma,
                                 config.q_agg)
        qs, entropies = self.critic(self._params(state, "critic."), batch["observations"], batch["actions"])
        td_loss = (qs - target_q.unsqueeze(1)).pow(2).mean((1, 2))
        loss = td_loss
        if config.entropy_control and self.depth:  # a depth-0 critic's penalty is exactly 0
            alpha = self.temperatures.to_alphas(state[self.temperature_key]).detach().to(entropies.dtype)
            loss = loss + self._reduce(alpha * (target.to(entropies.dtype) - entropies))
        flat = qs.detach().flatten(1)
        stats = {"critic/td_loss": td_loss, "critic/q_mean": flat.mean(1), "critic/q_max": flat.amax(1),
                 "critic/q_min": flat.amin(1), "critic/target_q": target_q.mean(1)}
        return loss, stats, entropies

    def _temperature_loss(self, state: Params, entropies: Tensor, target: Tensor) -> Tensor:
        """``reduce alpha * sg(H - H̄)`` per member (0 for a critic without attention)."""
        if not self.depth:
            return entropies.new_zeros(entropies.shape[0])
        raw = state[self.temperature_key]
        gap = entropies.to(raw.dtype) - target.to(raw.dtype)
        return self._reduce(self.temperatures.to_alphas(raw) * gap)

    def _actor_loss(self, state: Params, batch: dict[str, Tensor], noise: Mapping[str, Tensor]):
        config = self.config
        obs, actions = batch["observations"], batch["actions"]
        flow = self._params(state, "flow.net.")
        x0, t = noise["flow"], noise["flow_t"]
        x_t = (1.0 - t) * x0 + t * actions
        bc_loss = (self.flow(flow, torch.cat((obs, x_t, t), -1)) - (actions - x0)).pow(2).mean((1, 2))
        with torch.no_grad():
            teacher = self._sample_flow(flow, obs, noise["actor"], config.flow_steps)
        student = self.actor(self._params(state, "actor.net."), torch.cat((obs, noise["actor"]), -1))
        distill_loss = (student - teacher).pow(2).mean((1, 2))
        # Q through a frozen (detached) critic: the actor loss must not train the critic.
        frozen = self._params(state, "critic.", detach=True)
        qs, _ = self.critic(frozen, obs, student.clamp(-1.0, 1.0), entropies=False)
        q_loss = -qs.mean((1, 2))
        if config.normalize_q_loss:
            q_loss = q_loss / qs.abs().mean((1, 2)).detach().clamp_min(1e-6)
        loss = bc_loss + config.alpha_fql * distill_loss + q_loss
        return loss, {"actor/bc_flow_loss": bc_loss, "actor/distill_loss": distill_loss, "actor/q_loss": q_loss}

    def _sample_flow(self, flow: Params, obs: Tensor, noise: Tensor, steps: int) -> Tensor:
        """``FlowPolicy.sample``: Euler steps of dx/dt = v from noise (t=0) to t=1, clipped."""
        x, dt = noise, 1.0 / steps
        for step in range(steps):
            t = torch.full_like(noise[..., :1], step * dt)
            x = x + dt * self.flow(flow, torch.cat((obs, x, t), -1))
        return x.clamp(-1.0, 1.0)

    def td_error(self, state: Params, batch: Mapping[str, Tensor], next_actions: Tensor) -> Tensor:
        """``tql.trainer.held_out_td_error`` per member ``[K]``: batch ``[K, B, ...]``, the target's
        actions ``[K, B, act_dim]`` (``act`` of the members' z')."""
        next_qs, _ = self.critic(self._params(state, "target_critic."), batch["next_observations"], next_actions,
                                 entropies=False)  # [K, num_q, B]
        target = batch["rewards"] + self.config.gamma * batch["masks"] * next_qs.mean(1)
        qs, _ = self.critic(self._params(state, "critic."), batch["observations"], batch["actions"], entropies=False)
        return (qs - target.unsqueeze(1)).pow(2).mean((1, 2))

    def act(self, state: Params, obs: Tensor, noise: Tensor) -> Tensor:
        """One-step policy actions ``[K, B, act_dim]`` clipped to [-1, 1] (``obs`` ``[K, B, obs_dim]``
        or shared ``[B, obs_dim]``; ``noise`` ``[K, B, act_dim]``)."""
        if obs.dim() == 2:
            obs = obs.expand(noise.shape[0], *obs.shape)
        return self.actor(self._params(state, "actor.net."), torch.cat((obs, noise), -1)).clamp(-1.0, 1.0)
