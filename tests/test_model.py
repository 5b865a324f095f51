"""TQL and MLP critics: shapes, entropies vs scipy, a reference forward, presets, errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from tql.errors import ConfigError
from tql.model import (
    DEFAULT_PRESET,
    PRESETS,
    CriticSize,
    MLPCritic,
    TQLCritic,
    build_critic,
    count_parameters,
    get_preset,
    preset_table,
)

OBS, ACT = 37, 5  # cube-double
SMALL = CriticSize("test", dim=32, depth=3, heads=4, head_hidden=16, head_layers=2, head_activation="gelu_ln")
RELU = CriticSize("relu", dim=32, depth=2, heads=4, head_hidden=16, head_layers=2)


def _inputs(batch: int, obs_dim: int = OBS, act_dim: int = ACT, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, obs_dim, generator=g, dtype=dtype),
        torch.rand(batch, act_dim, generator=g, dtype=dtype) * 2 - 1,
    )


def _sharp_critic(size=SMALL, obs_dim=OBS, act_dim=ACT, num_q=2, seed=0) -> TQLCritic:
    """A float64 critic whose attention is far from uniform (the default init is near-uniform)."""
    torch.manual_seed(seed)
    critic = TQLCritic(obs_dim, act_dim, size, num_q).double()
    with torch.no_grad():
        for block in critic.blocks:
            block.qkv.weight.normal_(0.0, 0.5)
            block.qkv.bias.normal_(0.0, 0.5)
        for p in (critic.pos_emb, critic.modality_emb, critic.value_token):
            p.normal_(0.0, 1.0)
    return critic


def _reference_forward(critic: TQLCritic, obs, act):
    """Slow, loop-based re-implementation from the module's parameters (tests the fast path)."""
    size, n = critic.size, critic.n_tokens
    batch = obs.shape[0]
    scalars = torch.cat((obs, act), dim=1)
    rows = [critic.value_token[0] + critic.modality_emb[2] + critic.pos_emb[0]]
    for i in range(n - 1):
        modality = 0 if i < critic.obs_dim else 1
        rows.append(
            scalars[:, i : i + 1] * critic.w_pos[i] + critic.b_pos[i] + critic.modality_emb[modality] + critic.pos_emb[i + 1]
        )
    x = torch.stack([r.expand(batch, size.dim) for r in rows], dim=1)
    maps = []
    dh = size.dim // size.heads
    for block in critic.blocks:
        h = block.ln1(x)
        q, k, v = (h @ block.qkv.weight.T + block.qkv.bias).split(size.dim, dim=-1)
        heads_out, layer_maps = [], []
        for j in range(size.heads):
            sl = slice(j * dh, (j + 1) * dh)
            attn = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh), dim=-1)
            layer_maps.append(attn)
            heads_out.append(attn @ v[..., sl])
        maps.append(torch.stack(layer_maps, dim=1))
        x = x + block.proj(torch.cat(heads_out, dim=-1))
        x = x + block.fc2(F.gelu(block.fc1(block.ln2(x)), approximate="tanh"))
    value = critic.ln_f(x[:, 0])
    mlp, hdim = critic.q_heads, size.head_hidden
    qs = []
    def act(h, i, m):
        if size.head_activation == "relu":
            return F.relu(h)
        return F.layer_norm(F.gelu(h, approximate="tanh"), (hdim,), mlp.ln_weight[i, m, 0], mlp.ln_bias[i, m, 0])

    for m in range(critic.num_q):
        h = act(value @ mlp.w_in[:, m * hdim : (m + 1) * hdim] + mlp.b_in[m * hdim : (m + 1) * hdim], 0, m)
        for i, (w, b) in enumerate(zip(mlp.w_hidden, mlp.b_hidden), start=1):
            h = act(h @ w[m] + b[m, 0], i, m)
        qs.append((h @ mlp.w_out[m] + mlp.b_out[m, 0]).squeeze(-1))
    return torch.stack(qs), maps


def _closed_form_params(s: CriticSize, obs_dim: int, act_dim: int, num_q: int = 2) -> int:
    """Parameter count from the size fields alone."""
    n, d, h = 1 + obs_dim + act_dim, s.dim, s.head_hidden
    embed = d + 2 * (n - 1) * d + 3 * d + n * d  # [VALUE], w_pos + b_pos, modality, positions
    ln = 2 * d
    attn = d * 3 * d + 3 * d + d * d + d
    mlp = d * s.mlp_ratio * d + s.mlp_ratio * d + s.mlp_ratio * d * d + d
    blocks = s.depth * (2 * ln + attn + mlp)
    norm = 2 * h if s.head_activation == "gelu_ln" else 0  # LayerNorm affine per hidden layer
    head = (d * h + h + norm) + (s.head_layers - 1) * (h * h + h + norm) + (h + 1)
    return embed + blocks + ln + num_q * head


def _nominal(name: str) -> float:
    return float(re.match(r"([\d.]+)M", name).group(1)) * 1e6


# --------------------------------------------------------------------------- TQL critic


def test_shapes_and_attributes():
    critic = TQLCritic(OBS, ACT, SMALL, num_q=3)
    obs, act = _inputs(7, dtype=torch.float32)
    q, ent = critic(obs, act)
    assert q.shape == (3, 7) and ent.shape == (SMALL.depth, 2)
    assert critic.n_tokens == 1 + OBS + ACT and critic.depth == SMALL.depth
    maps = critic.attention_maps(obs, act)
    assert len(maps) == SMALL.depth
    assert all(m.shape == (7, SMALL.heads, critic.n_tokens, critic.n_tokens) for m in maps)
    # Extra leading dims are flattened and restored.
    q2, _ = critic(obs.view(7, 1, OBS).expand(7, 4, OBS), act.view(7, 1, ACT).expand(7, 4, ACT))
    assert q2.shape == (3, 7, 4)
    torch.testing.assert_close(q2[:, :, 2], q)
    # Ensemble members are initialised independently.
    assert not torch.allclose(q[0], q[1])
    # Preset by name, and the default.
    assert TQLCritic(OBS, ACT).size == get_preset(DEFAULT_PRESET)


def test_bad_input_shape():
    critic = TQLCritic(OBS, ACT, SMALL)
    with pytest.raises(ValueError, match="expected obs"):
        critic(torch.zeros(2, OBS + 1), torch.zeros(2, ACT))


@pytest.mark.parametrize("size", [SMALL, RELU], ids=["gelu_ln_heads", "relu_heads"])
def test_entropies_match_scipy_and_reference(size):
    critic = _sharp_critic(size)
    obs, act = _inputs(6, seed=1)
    with torch.no_grad():
        q, ent = critic(obs, act)
        maps = critic.attention_maps(obs, act)
        q_ref, maps_ref = _reference_forward(critic, obs, act)
    torch.testing.assert_close(q, q_ref, rtol=1e-9, atol=1e-9)
    for m, m_ref in zip(maps, maps_ref):
        torch.testing.assert_close(m, m_ref, rtol=1e-9, atol=1e-12)
    expected = []
    for m in maps:
        h = scipy.stats.entropy(m.numpy(), axis=-1)  # [B, heads, n]
        expected.append([h[:, :, 0].mean(), h[:, :, 1:].mean()])
    expected = np.array(expected)
    np.testing.assert_allclose(ent.numpy(), expected, rtol=1e-5, atol=1e-7)
    # The test is only meaningful if attention is far from uniform and rows differ by group.
    log_n = math.log(critic.n_tokens)
    assert (expected < 0.9 * log_n).all() and (expected > 0).all()


def test_entropies_are_differentiable():
    critic = _sharp_critic()
    obs, act = _inputs(4)
    _, ent = critic(obs, act)
    ent.sum().backward()
    for block in critic.blocks:
        assert block.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("member", [0, 1])
def test_value_output_depends_on_every_input(member):
    critic = _sharp_critic()
    obs, act = _inputs(3)
    obs.requires_grad_(True)
    act.requires_grad_(True)
    q, _ = critic(obs, act)
    q[member].sum().backward()
    assert (obs.grad.abs() > 0).all(), "some state scalar does not reach Q"
    assert (act.grad.abs() > 0).all(), "some action scalar does not reach Q"


def test_default_init_gradients_reach_every_input():
    critic = TQLCritic(OBS, ACT, DEFAULT_PRESET).double()
    obs, act = _inputs(2)
    obs.requires_grad_(True)
    act.requires_grad_(True)
    q, ent = critic(obs, act)
    q.sum().backward()
    assert (obs.grad.abs() > 0).all() and (act.grad.abs() > 0).all()
    assert torch.isfinite(ent).all() and (ent <= math.log(critic.n_tokens) + 1e-9).all()


def test_entropies_false_same_q_and_action_gradient():
    """The cheap path (target critic, actor loss) gives the same Q and d Q / d action."""
    critic = _sharp_critic()
    obs, act = _inputs(6)
    grads = []
    for entropies in (True, False):
        a = act.clone().requires_grad_(True)
        q, ent = critic(obs, a, entropies=entropies)
        assert ent.shape == ((SMALL.depth, 2) if entropies else (0, 2))
        q.sum().backward()
        grads.append((q.detach(), a.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-10, atol=1e-12)
    q_mlp, ent_mlp = MLPCritic(OBS, ACT).double()(obs, act, entropies=False)
    assert q_mlp.shape == (2, 6) and ent_mlp.shape == (0, 2)


# --------------------------------------------------------------------------- presets


def test_count_parameters_matches_closed_form():
    for size in (SMALL, get_preset("0.03M"), get_preset("0.4M"), get_preset("1M-d5"), get_preset("0.03M-v1")):
        for dims in ((OBS, ACT), (83, 5)):
            critic = TQLCritic(*dims, size)
            assert count_parameters(critic) == _closed_form_params(size, *dims), size.name
    assert count_parameters(TQLCritic(OBS, ACT, SMALL, num_q=5)) == _closed_form_params(SMALL, OBS, ACT, 5)


def test_preset_table_counts_monotone_and_span():
    rows = preset_table(OBS, ACT)
    assert [r["name"] for r in rows] == list(PRESETS)
    for row in rows:
        size = PRESETS[row["name"]]
        assert row["params"] == _closed_form_params(size, OBS, ACT)
        assert {"dim", "depth", "heads", "params"} <= row.keys()
        assert abs(row["params"] / _nominal(row["name"]) - 1) < 0.15, row
    published = [r for r in rows if "-" not in r["name"]]
    # Published sizes (docs/published.md): depth 2, width 128 / 256 / 512 / 1024, heads 4 / 4 / 16 / 32.
    assert [(r["name"], r["dim"], r["depth"], r["heads"]) for r in published[1:]] == [
        ("0.4M", 128, 2, 4), ("1.6M", 256, 2, 4), ("7M", 512, 2, 16), ("26M", 1024, 2, 32)]
    assert all(PRESETS[r["name"]].head_hidden == r["dim"] // 2 for r in published)
    params = [r["params"] for r in published]
    assert params == sorted(params) and len(set(params)) == len(params)
    assert DEFAULT_PRESET == "0.4M"


def test_old_preset_names_say_what_they_are_now():
    with pytest.raises(ConfigError) as err:
        get_preset("1M")
    assert "'1M'" in str(err.value) and "'1M-d5'" in str(err.value) and "\n" not in str(err.value)
    assert get_preset("1M-d5").depth == 5 and get_preset("26M-d8").head_activation == "gelu_ln"


def test_bad_preset_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_preset("5M")
    msg = str(err.value)
    assert "'5M'" in msg and "\n" not in msg
    assert all(name in msg for name in PRESETS)
    with pytest.raises(ConfigError):
        TQLCritic(OBS, ACT, "huge")


def test_bad_size_fields():
    with pytest.raises(ConfigError, match="divisible"):
        CriticSize("x", dim=30, depth=1, heads=4, head_hidden=8, head_layers=1)
    with pytest.raises(ConfigError, match="depth"):
        CriticSize("x", dim=32, depth=0, heads=4, head_hidden=8, head_layers=1)


def test_build_critic():
    assert isinstance(build_critic("tql", OBS, ACT, "0.03M"), TQLCritic)
    assert isinstance(build_critic("mlp", OBS, ACT, None), MLPCritic)
    with pytest.raises(ConfigError) as err:
        build_critic("cnn", OBS, ACT, "0.4M")
    assert "'cnn'" in str(err.value) and "tql" in str(err.value) and "mlp" in str(err.value)


# --------------------------------------------------------------------------- MLP critic


def test_mlp_critic_matches_fql_shape():
    critic = MLPCritic(OBS, ACT, num_q=2)
    obs, act = _inputs(9, dtype=torch.float32)
    q, ent = critic(obs, act)
    assert q.shape == (2, 9) and ent.shape == (0, 2) and critic.depth == 0
    assert not torch.allclose(q[0], q[1])
    # FQL: 4 hidden layers of 512, LayerNorm after each activation, scalar output, x2 members.
    d_in, h = OBS + ACT, 512
    per_member = (d_in * h + h) + 3 * (h * h + h) + 4 * (2 * h) + (h + 1)
    assert count_parameters(critic) == 2 * per_member
    assert abs(count_parameters(critic) - 1.63e6) < 0.01e6


def test_mlp_critic_reference():
    torch.manual_seed(0)
    critic = MLPCritic(OBS, ACT, num_q=2).double()
    with torch.no_grad():
        for p in (critic.mlp.ln_weight, critic.mlp.ln_bias, critic.mlp.b_in, critic.mlp.b_out):
            p.normal_()
    obs, act = _inputs(5)
    q, _ = critic(obs, act)
    mlp, h = critic.mlp, 512
    x = torch.cat((obs, act), dim=1)
    for m in range(2):
        y = F.gelu(x @ mlp.w_in[:, m * h : (m + 1) * h] + mlp.b_in[m * h : (m + 1) * h], approximate="tanh")
        y = F.layer_norm(y, (h,), mlp.ln_weight[0, m, 0], mlp.ln_bias[0, m, 0])
        for i in range(3):
            y = F.gelu(y @ mlp.w_hidden[i][m] + mlp.b_hidden[i][m, 0], approximate="tanh")
            y = F.layer_norm(y, (h,), mlp.ln_weight[i + 1, m, 0], mlp.ln_bias[i + 1, m, 0])
        torch.testing.assert_close(q[m], (y @ mlp.w_out[m] + mlp.b_out[m, 0]).squeeze(-1))


def test_a_shape_without_a_preset_is_named_by_width_depth_and_heads():
    """``wW-dD[-hH]``: built like the published sizes (MLP ratio 4, two ReLU head layers of width / 2)."""
    shape = get_preset("w64-d4")
    assert (shape.dim, shape.depth, shape.heads, shape.head_hidden, shape.head_layers, shape.mlp_ratio) == \
        (64, 4, 2, 32, 2, 4)
    assert get_preset("w256-d4-h8").heads == 8 and get_preset("w256-d4").heads == 8  # width / 32
    published = get_preset("0.4M")
    assert get_preset("w128-d2").__dict__ | {"name": "0.4M"} == published.__dict__  # the same critic
    critic = TQLCritic(OBS, ACT, "w32-d4")
    assert len(critic.blocks) == 4
    with pytest.raises(ConfigError, match="dim=30 is not divisible by heads=4"):
        get_preset("w30-d2-h4")
    with pytest.raises(ConfigError, match="or a shape wWIDTH-dDEPTH\\[-hHEADS\\] such as w64-d4"):
        get_preset("w64d4")
