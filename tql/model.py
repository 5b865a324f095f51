"""Critics: the TQL transformer critic and FQL's MLP critic (docs/published.md).

Both map ``(obs [B, obs_dim], act [B, act_dim])`` to ``(q [num_q, B], entropies [depth, 2])``
so the agent treats them alike; the MLP critic has ``depth == 0`` and empty entropies.

Written for throughput on CPU and GPU: one fused QKV projection per block, all heads in one
batched matmul, the ensemble of Q heads as stacked weights (one GEMM / bmm per layer), no
Python loops over samples, tokens, heads or ensemble members, and no host synchronisation.

Mixed precision (``AgentConfig.precision = "bf16"``: the agent runs the forward passes under
``torch.autocast`` with bfloat16): the linear layers' matmuls run in bf16, but these stay
float32 whatever autocast says, because bf16's 8-bit mantissa would distort what the losses
read: the attention core (scores, log-softmax, row entropies, probs @ V: about 3% of the
FLOPs at n = 43), the residual stream (the embedding is float32 and a bf16 branch added to
it promotes), the Q heads (about 1% of the FLOPs: they see the [VALUE] token only) and the
policies' output layers. The Q heads matter most: the TD loss is a small residual of large
Q values; with the heads' hidden layers in bf16 it differed by 6.0% from float32 on the same
weights, with the heads in float32 by 0.8%, and with the heads wholly in bf16 by 0.6% but Q
itself 0.2% off (benchmarks/gpu/q_head_precision.py). So ``critic='mlp'`` (an EnsembleMLP)
stays float32.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tql.errors import ConfigError

__all__ = [
    "CriticSize",
    "PRESETS",
    "DEFAULT_PRESET",
    "get_preset",
    "count_parameters",
    "EnsembleMLP",
    "TQLCritic",
    "MLPCritic",
    "build_critic",
    "preset_table",
    "CRITIC_KINDS",
    "LEGACY_PRESETS",
    "HEAD_ACTIVATIONS",
    "FP32Linear",
    "full_precision",
    "gelu_tanh",
    "GELUTanh",
]

# Token groups of the entropy control: row 0 is the [VALUE] query, row 1 all other queries.
VALUE_GROUP, OTHER_GROUP = 0, 1
# Modality ids of the modality embedding.
_STATE, _ACTION, _VALUE = 0, 1, 2

# FQL's critic MLP (docs/published.md): 4 hidden layers of 512.
FQL_HIDDEN, FQL_LAYERS = 512, 4


@dataclass(frozen=True)
class CriticSize:
    """Shape of a TQL critic.

    ``head_hidden`` / ``head_layers``: width and number of hidden layers of each Q head (a
    small MLP on the [VALUE] output); ``head_activation``: ``relu`` (as published) or
    ``gelu_ln`` (GELU then LayerNorm, FQL's critic MLP; the first presets used it).
    ``mlp_ratio``: hidden width of the blocks' MLP as a multiple of ``dim``.
    """

    name: str
    dim: int
    depth: int
    heads: int
    head_hidden: int
    head_layers: int
    mlp_ratio: int = 4
    head_activation: str = "relu"

    def __post_init__(self) -> None:
        for field in ("dim", "depth", "heads", "head_hidden", "head_layers", "mlp_ratio"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"critic size {self.name!r}: {field}={value!r} must be an integer >= 1")
        if self.dim % self.heads:
            raise ConfigError(
                f"critic size {self.name!r}: dim={self.dim} is not divisible by heads={self.heads}"
            )
        if self.head_activation not in HEAD_ACTIVATIONS:
            raise ConfigError(f"critic size {self.name!r}: head_activation={self.head_activation!r} is not one "
                              f"of: {', '.join(HEAD_ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


HEAD_ACTIVATIONS = ("relu", "gelu_ln")


def _published(name: str, dim: int, heads: int) -> CriticSize:
    """docs/published.md: depth 2, MLP ratio 4, Q heads of width dim/2 (two ReLU layers: the
    number of layers is ours), size grown by width."""
    return CriticSize(name, dim=dim, depth=2, heads=heads, head_hidden=dim // 2, head_layers=2)


# Named by their parameter count with cube-double's n = 43 tokens and num_q = 2 (see
# preset_table). The published sizes grow by width at depth 2; '0.03M' is for smoke tests
# and CPU budgets. The deeper presets of tql-tune 0.1 (width and depth grown together, GELU +
# LayerNorm heads) stay under names that say their depth.
PRESETS: dict[str, CriticSize] = {
    s.name: s
    for s in (
        _published("0.03M", 32, 2),
        _published("0.4M", 128, 4),
        _published("1.6M", 256, 4),
        _published("7M", 512, 16),
        _published("26M", 1024, 32),
        CriticSize("0.03M-v1", dim=32, depth=2, heads=2, head_hidden=32, head_layers=1, head_activation="gelu_ln"),
        CriticSize("0.4M-v1", dim=128, depth=2, heads=4, head_hidden=64, head_layers=2, head_activation="gelu_ln"),
        CriticSize("1M-d5", dim=128, depth=5, heads=4, head_hidden=128, head_layers=2, head_activation="gelu_ln"),
        CriticSize("3M-d6", dim=192, depth=6, heads=6, head_hidden=192, head_layers=2, head_activation="gelu_ln"),
        CriticSize("9M-d7", dim=320, depth=7, heads=5, head_hidden=320, head_layers=2, head_activation="gelu_ln"),
        CriticSize("26M-d8", dim=512, depth=8, heads=8, head_hidden=512, head_layers=2, head_activation="gelu_ln"),
    )
}
# Preset names of tql-tune 0.1 -> the same critic today (old run folders load through this).
LEGACY_PRESETS = {"0.03M": "0.03M-v1", "0.4M": "0.4M-v1", "1M": "1M-d5", "3M": "3M-d6", "9M": "9M-d7",
                  "26M": "26M-d8"}
DEFAULT_PRESET = "0.4M"
CRITIC_KINDS = ("tql", "mlp")


# A shape with no preset, named by what it is: ``w64-d4`` (width 64, depth 4), ``w64-d4-h2``
# (and 2 heads). Built like the published sizes (MLP ratio 4, two ReLU Q-head layers of width
# / 2); heads default to width / 32 (at least 2), as the published 0.03M and 0.4M critics have.
# Deeper, narrow critics are where free attention collapses cheaply (docs/collapse.md).
CUSTOM_SHAPE = re.compile(r"w(\d+)-d(\d+)(?:-h(\d+))?")


def custom_shape(name: str) -> CriticSize | None:
    """The critic a ``wW-dD[-hH]`` name describes, or None for any other name."""
    match = CUSTOM_SHAPE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        return None
    dim, depth = int(match[1]), int(match[2])
    heads = int(match[3]) if match[3] else max(2, dim // 32)
    return CriticSize(name, dim=dim, depth=depth, heads=heads, head_hidden=max(1, dim // 2), head_layers=2)


def get_preset(name: str) -> CriticSize:
    """Look up a size preset (or a ``wW-dD[-hH]`` shape) by name; ConfigError naming the valid
    ones otherwise."""
    if name in PRESETS:
        return PRESETS[name]
    shape = custom_shape(name)
    if shape is not None:
        return shape
    renamed = f" ({name} was a deeper preset of tql-tune 0.1, now {LEGACY_PRESETS[name]!r})" \
        if isinstance(name, str) and name in LEGACY_PRESETS else ""
    raise ConfigError(f"unknown critic size {name!r}{renamed}; valid: {', '.join(PRESETS)}, "
                      "or a shape wWIDTH-dDEPTH[-hHEADS] such as w64-d4")


def _resolve_size(size: CriticSize | str) -> CriticSize:
    return size if isinstance(size, CriticSize) else get_preset(size)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


_GELU_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU, tanh approximation: 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3).

    Under torch.compile written as x * sigmoid(2u), the same function: inductor's vectorised
    sigmoid is about twice as fast as its tanh on CPUs, forward and backward (benchmarks/speed/
    README.md). Eager code keeps ATen's single GELU kernel (one launch on a GPU).
    """
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(_GELU_SCALE * (x + 0.044715 * x * x * x))
    return F.gelu(x, approximate="tanh")


_gelu = gelu_tanh


class GELUTanh(nn.GELU):
    """``nn.GELU(approximate='tanh')`` computed by ``gelu_tanh`` (the actors' activation)."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        return gelu_tanh(x)


def full_precision(x: Tensor) -> contextlib.AbstractContextManager:
    """A region where autocast is off (float32 math even inside a bf16 autocast region);
    a no-op outside autocast, so float32 runs pay nothing for it."""
    if not torch.is_autocast_enabled(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


def upcast(x: Tensor) -> Tensor:
    """A half-precision tensor (autocast's output) as float32; any other tensor unchanged
    (a float64 model stays float64)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class FP32Linear(nn.Linear):
    """``nn.Linear`` computed in full precision under autocast too (the output layers)."""

    def forward(self, x: Tensor) -> Tensor:
        with full_precision(x):
            return F.linear(upcast(x), self.weight, self.bias)


class EnsembleMLP(nn.Module):
    """``num_q`` independent MLPs on a shared input, evaluated together.

    Each hidden layer is Linear -> GELU(tanh) -> LayerNorm (``activation='gelu_ln'``, FQL's
    critic MLP) or Linear -> ReLU (``'relu'``, TQL's published Q heads), then a linear output
    to one scalar. The first layer is a single GEMM over the concatenated members (the input
    is shared); later layers are one bmm over stacked weights ``[num_q, h, h]``.
    Initialisation follows FQL (Xavier-uniform per member, zero bias).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, num_q: int, activation: str = "gelu_ln") -> None:
        super().__init__()
        if num_q < 1 or layers < 1:
            raise ConfigError(f"ensemble needs num_q >= 1 and layers >= 1, got {num_q}, {layers}")
        if activation not in HEAD_ACTIVATIONS:
            raise ConfigError(f"activation {activation!r} is not one of: {', '.join(HEAD_ACTIVATIONS)}")
        self.in_dim, self.hidden, self.layers, self.num_q = in_dim, hidden, layers, num_q
        self.activation = activation
        q, h = num_q, hidden
        self.w_in = nn.Parameter(torch.empty(in_dim, q * h))
        self.b_in = nn.Parameter(torch.zeros(q * h))
        self.w_hidden = nn.ParameterList([nn.Parameter(torch.empty(q, h, h)) for _ in range(layers - 1)])
        self.b_hidden = nn.ParameterList([nn.Parameter(torch.zeros(q, 1, h)) for _ in range(layers - 1)])
        if activation == "gelu_ln":
            # LayerNorm affine per member and layer, shaped to broadcast over [q, B, h].
            self.ln_weight = nn.Parameter(torch.ones(layers, q, 1, h))
            self.ln_bias = nn.Parameter(torch.zeros(layers, q, 1, h))
        self.w_out = nn.Parameter(torch.empty(q, h, 1))
        self.b_out = nn.Parameter(torch.zeros(q, 1, 1))
        self.reset_parameters()

    @property
    def weight_matrices(self) -> list[Tensor]:
        """The tensors a weight decay applies to (not biases or LayerNorm affines)."""
        return [self.w_in, *self.w_hidden, self.w_out]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        h = self.hidden
        # Xavier bound with each member's own fan-in / fan-out (not the concatenated width).
        self.w_in.uniform_(-1.0, 1.0).mul_(math.sqrt(6.0 / (self.in_dim + h)))
        for w in self.w_hidden:
            w.uniform_(-1.0, 1.0).mul_(math.sqrt(6.0 / (2 * h)))
        self.w_out.uniform_(-1.0, 1.0).mul_(math.sqrt(6.0 / (h + 1)))
        for p in (self.b_in, *self.b_hidden, self.b_out):
            p.zero_()
        if self.activation == "gelu_ln":
            self.ln_bias.zero_()
            self.ln_weight.fill_(1.0)

    def hidden_activation(self, x: Tensor, layer: int) -> Tensor:
        """Hidden ``layer``'s nonlinearity: GELU then LayerNorm (its own scale and shift per
        layer), or ReLU."""
        if self.activation == "relu":
            return F.relu(x)
        x = F.layer_norm(_gelu(x), (self.hidden,))
        return torch.addcmul(self.ln_bias[layer], x, self.ln_weight[layer])

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_dim] -> [num_q, B]``, in full precision under autocast too (see the
        module text: the TD loss is a small residual of large Q values)."""
        with full_precision(x):
            return self.forward_as_given(upcast(x))

    def forward_as_given(self, x: Tensor) -> Tensor:
        """``forward`` in whatever precision the caller's autocast gives (``forward`` wraps it
        in full precision; a precision benchmark compares the two)."""
        batch = x.shape[0]
        # One GEMM for all members; [B, q*h] -> [q, B, h] is a strided view bmm accepts.
        h = torch.addmm(self.b_in, x, self.w_in).view(batch, self.num_q, self.hidden).transpose(0, 1)
        h = self.hidden_activation(h, 0)
        for i, (w, b) in enumerate(zip(self.w_hidden, self.b_hidden), start=1):
            h = self.hidden_activation(torch.baddbmm(b, h, w), i)
        return torch.baddbmm(self.b_out, h, self.w_out).squeeze(-1)


class _Block(nn.Module):
    """Pre-LN transformer block whose attention also returns the row entropies."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, depth: int) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # fused Q, K, V projection
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self._init(depth)

    @torch.no_grad()
    def _init(self, depth: int) -> None:
        # GPT-2 style: N(0, 0.02), residual-branch outputs shrunk by 1/sqrt(2 * depth) so the
        # residual stream's scale does not grow with depth.
        for lin in (self.qkv, self.proj, self.fc1, self.fc2):
            nn.init.trunc_normal_(lin.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(lin.bias)
        for lin in (self.proj, self.fc2):
            lin.weight.mul_(1.0 / math.sqrt(2 * depth))

    def attention(self, x: Tensor, entropy: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
        """Self-attention of ``LN(x) [B, n, d]``.

        Returns (probs [B*H, n, n], row entropies [B*H, n] or None, values [B*H, n, dh]).
        With ``entropy`` the softmax is taken as log-softmax so the entropy comes from the
        same pass, computed stably from log-probabilities (no second pass, no log(0));
        without it, a plain softmax.
        """
        batch, n, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(batch, n, 3, self.heads, self.head_dim)
        q, k, v = upcast(qkv).permute(2, 0, 3, 1, 4).reshape(3, batch * self.heads, n, self.head_dim).unbind(0)
        with full_precision(x):
            logits = torch.bmm(q, k.transpose(1, 2)).mul_(self.scale)
            if not entropy:
                return torch.softmax(logits, dim=-1), None, v
            logp = torch.log_softmax(logits, dim=-1)
            probs = logp.exp()
            return probs, -torch.linalg.vecdot(probs, logp), v  # H_i = -sum_j A_ij log A_ij

    def _value_row(self, x: Tensor) -> Tensor:
        """``x' [B, 1, d]`` of the [VALUE] token alone, no entropies (the cheap last block).

        Only the [VALUE] query is projected and attends (K and V still cover all tokens):
        about 1/n of the block's work beyond the K/V projection.
        """
        batch, n, dim = x.shape
        h = self.ln1(x)
        w, b = self.qkv.weight, self.qkv.bias  # rows: [Q; K; V], each [d, d]
        kv = upcast(F.linear(h, w[dim:], b[dim:])).view(batch, n, 2, self.heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).reshape(2, batch * self.heads, n, self.head_dim).unbind(0)
        q = upcast(F.linear(h[:, 0], w[:dim], b[:dim])).view(batch * self.heads, 1, self.head_dim)
        with full_precision(x):
            probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)).mul_(self.scale), dim=-1)
            out = torch.bmm(probs, v).view(batch, 1, dim)  # [B*H, 1, dh] is [B, 1, H*dh] already
        x = x[:, :1] + self.proj(out)
        return x + self.fc2(_gelu(self.fc1(self.ln2(x))))

    def forward(self, x: Tensor, value_only: bool = False, entropy: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Returns (x', entropies [2] = ([VALUE] row, other rows) means or None, probs [B*H, n, n]).

        ``value_only``: compute the output for the [VALUE] token only (x' is [B, 1, d]). Used
        in the last block, whose other outputs nothing reads; its entropies still cover all
        rows because every query row's attention depends on the keys. With ``value_only``
        and no ``entropy`` only the [VALUE] query row is computed (probs is then None).
        """
        if value_only and not entropy:
            return self._value_row(x), None, None
        batch, n, _ = x.shape
        probs, row_entropy, v = self.attention(x, entropy)
        groups = None
        if row_entropy is not None:
            groups = torch.stack((row_entropy[:, 0].mean(), row_entropy[:, 1:].mean()))
        if value_only:
            probs_out, x = probs[:, :1], x[:, :1]
        else:
            probs_out = probs
        rows = probs_out.shape[1]
        with full_precision(x):
            out = torch.bmm(probs_out, v).view(batch, self.heads, rows, self.head_dim)
        x = x + self.proj(out.transpose(1, 2).reshape(batch, rows, self.dim))
        x = x + self.fc2(_gelu(self.fc1(self.ln2(x))))
        return x, groups, probs


class TQLCritic(nn.Module):
    """Transformer critic: one token per state / action scalar plus a learned [VALUE] token.

    Token embedding = scalar * w_pos + b_pos (a learned linear map per position, one
    broadcast multiply-add for all positions) + modality embedding (state / action / value) +
    positional embedding. N Pre-LN blocks, a final LayerNorm, and an ensemble of ``num_q``
    MLP heads on the [VALUE] output.
    """

    def __init__(self, obs_dim: int, act_dim: int, size: CriticSize | str = DEFAULT_PRESET, num_q: int = 2) -> None:
        super().__init__()
        if obs_dim < 1 or act_dim < 1:
            raise ConfigError(f"critic needs obs_dim >= 1 and act_dim >= 1, got {obs_dim}, {act_dim}")
        self.size = _resolve_size(size)
        self.obs_dim, self.act_dim, self.num_q = obs_dim, act_dim, num_q
        self.n_tokens = 1 + obs_dim + act_dim
        self.depth = self.size.depth
        dim, n = self.size.dim, self.n_tokens

        self.value_token = nn.Parameter(torch.empty(1, dim))
        self.w_pos = nn.Parameter(torch.empty(n - 1, dim))  # per-position scalar -> vector map
        self.b_pos = nn.Parameter(torch.empty(n - 1, dim))
        self.modality_emb = nn.Parameter(torch.empty(3, dim))
        self.pos_emb = nn.Parameter(torch.empty(n, dim))
        modality = torch.tensor([_VALUE] + [_STATE] * obs_dim + [_ACTION] * act_dim)
        self.register_buffer("modality_ids", modality, persistent=False)

        self.blocks = nn.ModuleList(
            _Block(dim, self.size.heads, self.size.mlp_ratio, self.depth) for _ in range(self.depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.q_heads = EnsembleMLP(dim, self.size.head_hidden, self.size.head_layers, num_q,
                                   self.size.head_activation)
        self._init_embeddings()

    @torch.no_grad()
    def _init_embeddings(self) -> None:
        # Scalar tokenizer as in FT-Transformer: U(+-1/sqrt(d)) for weight and bias, so a
        # scalar's contribution is comparable to the N(0, 0.02) position / modality terms.
        bound = self.size.dim**-0.5
        self.w_pos.uniform_(-bound, bound)
        self.b_pos.uniform_(-bound, bound)
        for p in (self.value_token, self.modality_emb, self.pos_emb):
            nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    def embed(self, obs: Tensor, act: Tensor) -> Tensor:
        """``(obs [B, obs_dim], act [B, act_dim]) -> tokens [B, n, d]``."""
        # Position-only terms (cheap, [n, d]); the [VALUE] row gets a zero scalar weight.
        bias = torch.cat((self.value_token, self.b_pos)) + self.pos_emb + self.modality_emb[self.modality_ids]
        weight = F.pad(self.w_pos, (0, 0, 1, 0))
        scalars = F.pad(torch.cat((obs, act), dim=-1), (1, 0))
        return torch.addcmul(bias, scalars.unsqueeze(-1), weight)

    def _check(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        if obs.shape[-1] != self.obs_dim or act.shape[-1] != self.act_dim or obs.shape[:-1] != act.shape[:-1]:
            raise ValueError(
                f"expected obs [..., {self.obs_dim}] and act [..., {self.act_dim}] with equal leading "
                f"dims, got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        lead = tuple(obs.shape[:-1])
        return obs.reshape(-1, self.obs_dim), act.reshape(-1, self.act_dim), lead

    def forward(self, obs: Tensor, act: Tensor, entropies: bool = True) -> tuple[Tensor, Tensor]:
        """Q values ``[num_q, B]`` and attention entropies ``[depth, 2]``.

        ``entropies[l, 0]``: mean over batch and heads of the entropy of the [VALUE] query's
        attention row in layer l; ``entropies[l, 1]``: the same over the other n-1 rows.
        Extra leading dims are allowed: obs ``[..., obs_dim]`` gives Q ``[num_q, ...]``.
        ``entropies=False`` (target critic, actor loss): skip them and return an empty
        ``[0, 2]`` tensor; the same Q, cheaper (plain softmax, and the last block computes
        the [VALUE] query row only).
        """
        obs, act, lead = self._check(obs, act)
        x = self.embed(obs, act)
        groups = []
        for i, block in enumerate(self.blocks):
            x, group, _ = block(x, value_only=i == self.depth - 1, entropy=entropies)
            groups.append(group)
        value = self.ln_f(x[:, 0])
        q = self.q_heads(value).view(self.num_q, *lead)
        return q, (torch.stack(groups) if entropies else value.new_zeros(0, 2))

    def attention_maps(self, obs: Tensor, act: Tensor) -> list[Tensor]:
        """Attention probabilities of every layer, each ``[B, heads, n, n]`` (for analysis)."""
        obs, act, _ = self._check(obs, act)
        x = self.embed(obs, act)
        maps = []
        for block in self.blocks:
            x, _, probs = block(x)
            maps.append(probs.view(obs.shape[0], block.heads, self.n_tokens, self.n_tokens))
        return maps


class MLPCritic(nn.Module):
    """FQL's critic: MLP on concat(obs, act), 4 x 512, GELU(tanh) then LayerNorm, ensemble.

    Returns empty entropies ``[0, 2]`` so callers handle it like a TQLCritic (``depth == 0``).
    """

    def __init__(self, obs_dim: int, act_dim: int, num_q: int = 2, hidden: int = FQL_HIDDEN, layers: int = FQL_LAYERS) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.num_q = obs_dim, act_dim, num_q
        self.depth = 0
        self.n_tokens = 1 + obs_dim + act_dim  # for uniform reporting; unused by the MLP
        self.mlp = EnsembleMLP(obs_dim + act_dim, hidden, layers, num_q)

    def forward(self, obs: Tensor, act: Tensor, entropies: bool = True) -> tuple[Tensor, Tensor]:
        """``entropies`` is accepted for a uniform interface; there are none either way."""
        lead = tuple(obs.shape[:-1])
        x = torch.cat((obs, act), dim=-1).reshape(-1, self.obs_dim + self.act_dim)
        q = self.mlp(x).view(self.num_q, *lead)
        return q, x.new_zeros(0, 2)


def build_critic(kind: str, obs_dim: int, act_dim: int, size: CriticSize | str | None = DEFAULT_PRESET, num_q: int = 2) -> nn.Module:
    """``kind='tql'`` -> TQLCritic(size); ``kind='mlp'`` -> MLPCritic (FQL 4x512; size ignored)."""
    if kind == "tql":
        return TQLCritic(obs_dim, act_dim, DEFAULT_PRESET if size is None else size, num_q)
    if kind == "mlp":
        return MLPCritic(obs_dim, act_dim, num_q)
    raise ConfigError(f"unknown critic kind {kind!r}; valid: {', '.join(CRITIC_KINDS)}")


def preset_table(obs_dim: int = 37, act_dim: int = 5, num_q: int = 2) -> list[dict]:
    """One row per preset with its exact parameter count for these dims (default: cube-double).

    Models are built on the meta device: no memory is allocated and no init is run.
    """
    rows = []
    for size in PRESETS.values():
        with torch.device("meta"):
            params = count_parameters(TQLCritic(obs_dim, act_dim, size, num_q))
        rows.append({**asdict(size), "n_tokens": 1 + obs_dim + act_dim, "params": params})
    return rows
