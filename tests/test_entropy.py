"""Entropy control: directions of the temperature update, stop-gradients, convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from tql.entropy import ALPHA_RANGE, EntropyTemperatures, attention_entropy
from tql.errors import ConfigError
from tql.model import MLPCritic, TQLCritic

TARGET = 2.0
# Entropy minus target per (layer, group): mixed signs across layers and groups.
GAPS = torch.tensor([[-0.5, 0.3], [0.2, -0.1], [-1.0, 1.0]])


def test_attention_entropy_matches_scipy_and_edge_cases():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 3, 11, generator=g, dtype=torch.float64) * 3, dim=-1)
    np.testing.assert_allclose(
        attention_entropy(probs).numpy(), scipy.stats.entropy(probs.numpy(), axis=-1), rtol=1e-12
    )
    assert attention_entropy(torch.full((7,), 1 / 7)).item() == pytest.approx(math.log(7))
    one_hot = torch.zeros(5)
    one_hot[2] = 1
    assert attention_entropy(one_hot).item() == 0.0  # 0 log 0 = 0, no NaN


@pytest.mark.parametrize("as_tensor,reduction", [(False, "mean"), (True, "mean"), (False, "sum")])
def test_sgd_step_moves_alpha_toward_control(as_tensor, reduction):
    temps = EntropyTemperatures(depth=3, init_alpha=0.1, reduction=reduction)
    target = torch.tensor(TARGET) if as_tensor else TARGET
    entropies = TARGET + GAPS
    before = temps.alphas().detach().clone()
    opt = torch.optim.SGD(temps.parameters(), lr=0.5)
    temps.temperature_loss(entropies, target).backward()
    opt.step()
    after = temps.alphas().detach()
    assert (after[GAPS < 0] > before[GAPS < 0]).all(), "alpha must grow while H < target"
    assert (after[GAPS > 0] < before[GAPS > 0]).all(), "alpha must shrink once H > target"
    # d loss / d log_alpha = alpha * (H - target), divided by the 6 (layer, group)s for a mean
    scale = 1 / GAPS.numel() if reduction == "mean" else 1.0
    torch.testing.assert_close(temps.log_alpha.grad, before * GAPS * scale)


def test_critic_penalty_gradient_is_minus_alpha_and_stops_at_alpha():
    temps = EntropyTemperatures(depth=3, init_alpha=0.05)
    with torch.no_grad():
        temps.log_alpha.add_(torch.randn(3, 2))
    entropies = (TARGET + GAPS).requires_grad_(True)
    penalty = temps.critic_penalty(entropies, TARGET)
    alpha = temps.alphas().detach()
    assert penalty.item() == pytest.approx((alpha * -GAPS).mean().item(), rel=1e-6)  # published: a mean
    penalty.backward()
    torch.testing.assert_close(entropies.grad, -alpha / GAPS.numel())
    assert temps.log_alpha.grad is None


def test_temperature_loss_has_no_gradient_into_entropies():
    temps = EntropyTemperatures(depth=3)
    entropies = (TARGET + GAPS).requires_grad_(True)
    loss = temps.temperature_loss(entropies, torch.tensor(TARGET))
    assert not torch.autograd.grad(loss, temps.log_alpha)[0].eq(0).all()
    assert loss.grad_fn is not None
    loss = temps.temperature_loss(entropies, TARGET)
    loss.backward()
    assert entropies.grad is None


def test_gradients_reach_critic_through_entropies():
    critic = TQLCritic(37, 5, "0.03M")
    temps = EntropyTemperatures(critic.depth)
    _, ent = critic(torch.randn(8, 37), torch.rand(8, 5) * 2 - 1)
    penalty, temp_loss = temps(ent, 0.5 * math.log(critic.n_tokens))
    penalty.backward()
    assert temps.log_alpha.grad is None
    assert critic.blocks[0].qkv.weight.grad.abs().sum() > 0
    temp_loss.backward()
    assert temps.log_alpha.grad.abs().sum() > 0


def _control_loop(preferred: float, steps: int = 1500, signed: bool = False):
    """Entropies as directly learnable numbers, one per (layer, group), started on both sides
    of the target. A stand-in task loss pulls each toward ``preferred`` (its own optimum)
    with unit stiffness; the controller acts on top (summed over (layer, group), so each
    entry sees its own alpha at unit scale). Returns (trajectory, final alphas)."""
    entropies = torch.tensor([[0.2, 1.0], [2.5, 1.5], [3.0, 0.5]], requires_grad=True)
    temps = EntropyTemperatures(depth=3, init_alpha=0.01, reduction="sum", signed=signed)
    opt = torch.optim.SGD([entropies], lr=0.1)
    opt_temp = torch.optim.SGD(temps.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        task_loss = 0.5 * ((entropies - preferred) ** 2).sum()
        penalty, temp_loss = temps(entropies, TARGET)
        opt.zero_grad()
        opt_temp.zero_grad()
        (task_loss + penalty + temp_loss).backward()
        opt.step()
        opt_temp.step()
        history.append(entropies.detach().clone())
    return torch.stack(history), temps.alphas().detach()


def test_controlled_entropy_moves_to_target():
    """Task prefers low entropy (0.5 < target 2.0): every (layer, group) converges to the
    target, and alpha to the value that balances the task's pull, 1 * (2.0 - 0.5)."""
    history, alphas = _control_loop(preferred=0.5)
    start_gap = (history[0] - TARGET).abs()
    mid_gap = (history[len(history) // 2] - TARGET).abs()
    assert (mid_gap < start_gap).all()
    torch.testing.assert_close(history[-1], torch.full((3, 2), TARGET), atol=1e-3, rtol=0)
    torch.testing.assert_close(alphas, torch.full((3, 2), TARGET - 0.5), atol=1e-2, rtol=0)


def test_control_is_one_sided():
    """Task prefers entropy above target: the controller only ever pushes entropy up, so
    alpha decays toward 0 and entropy settles at the task's own optimum."""
    history, alphas = _control_loop(preferred=2.5)
    torch.testing.assert_close(history[-1], torch.full((3, 2), 2.5), atol=2e-2, rtol=0)
    assert (alphas < 0.02).all()


def test_signed_temperature_makes_the_target_a_set_point():
    """Two-sided option: the same task that keeps entropy above target under the one-sided
    control is pulled down to it; alpha settles at the negative balance 1 * (2.0 - 2.5)."""
    history, alphas = _control_loop(preferred=2.5, steps=3000, signed=True)
    torch.testing.assert_close(history[-1], torch.full((3, 2), TARGET), atol=1e-2, rtol=0)
    torch.testing.assert_close(alphas, torch.full((3, 2), TARGET - 2.5), atol=2e-2, rtol=0)


@pytest.mark.parametrize("sharing,shape", [("layer_group", (3, 2)), ("layer", (3, 1)), ("global", (1, 1))])
def test_shared_temperatures_get_the_mean_gap_of_what_they_share(sharing, shape):
    temps = EntropyTemperatures(depth=3, init_alpha=0.5, sharing=sharing)
    assert tuple(temps.log_alpha.shape) == shape and tuple(temps.alphas().shape) == (3, 2)
    temps.temperature_loss(TARGET + GAPS, TARGET).backward()
    # mean over 6 entries of alpha * gap; a shared alpha collects the gaps of its entries.
    summed = {"layer_group": GAPS, "layer": GAPS.sum(1, keepdim=True), "global": GAPS.sum().view(1, 1)}[sharing]
    torch.testing.assert_close(temps.log_alpha.grad, 0.5 * summed / 6)


def test_target_table_per_layer_and_group():
    temps = EntropyTemperatures(depth=3, init_alpha=2.0)
    table = torch.tensor([[3.0, 2.0], [2.5, 1.5], [1.0, 0.5]])
    entropies = torch.full((3, 2), 2.0)
    assert temps.critic_penalty(entropies, table).item() == pytest.approx(2.0 * (table - 2.0).mean().item())
    assert temps.temperature_loss(entropies, table).item() == pytest.approx(2.0 * (2.0 - table).mean().item())


def test_clip_keeps_temperatures_in_range():
    low, high = ALPHA_RANGE
    temps = EntropyTemperatures(depth=2)
    with torch.no_grad():
        temps.log_alpha.copy_(torch.tensor([[-100.0, 0.0], [100.0, 1.0]]))
    temps.clip_()
    torch.testing.assert_close(temps.alphas(), torch.tensor([[low, 1.0], [high, math.e]]))
    signed = EntropyTemperatures(depth=1, signed=True)
    with torch.no_grad():
        signed.alpha.copy_(torch.tensor([[-1e9, -3.0]]))
    signed.clip_()
    torch.testing.assert_close(signed.alphas(), torch.tensor([[-high, -3.0]]))


def test_without_control_entropy_goes_to_task_optimum():
    """Sanity check of the loop above: no penalty, no convergence to the target."""
    entropies = torch.tensor([[0.2, 1.0], [2.5, 1.5], [3.0, 0.5]], requires_grad=True)
    opt = torch.optim.SGD([entropies], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * ((entropies - 0.5) ** 2).sum()).backward()
        opt.step()
    torch.testing.assert_close(entropies.detach(), torch.full((3, 2), 0.5), atol=1e-3, rtol=0)


def test_target_may_change_every_step_as_tensor():
    temps = EntropyTemperatures(depth=2)
    entropies = torch.full((2, 2), 1.0)
    target = torch.tensor(0.0)
    values = []
    for t in (0.5, 1.0, 1.5):
        target.fill_(t)  # a schedule writes in place: same tensor, new value
        values.append(temps.critic_penalty(entropies, target).item())
    alpha_mean = temps.alphas().mean().item()
    assert values == pytest.approx([alpha_mean * (t - 1.0) for t in (0.5, 1.0, 1.5)])


def test_depth_zero_mlp_critic():
    critic = MLPCritic(37, 5)
    temps = EntropyTemperatures(critic.depth)
    assert temps.log_alpha.shape == (0, 2)
    q, ent = critic(torch.randn(4, 37), torch.rand(4, 5))
    penalty = temps.critic_penalty(ent, 1.0)
    temp_loss = temps.temperature_loss(ent, torch.tensor(1.0))
    assert penalty.shape == () and temp_loss.shape == ()
    assert penalty.item() == 0.0 and temp_loss.item() == 0.0
    (q.mean() + penalty + temp_loss).backward()  # must not fail


def test_validation():
    with pytest.raises(ConfigError, match="alpha_init"):
        EntropyTemperatures(2, init_alpha=0.0)
    with pytest.raises(ConfigError, match="'max' is not one of: mean, sum"):
        EntropyTemperatures(2, reduction="max")
    with pytest.raises(ConfigError, match="'head' is not one of: layer_group, layer, global"):
        EntropyTemperatures(2, sharing="head")
    with pytest.raises(ConfigError):
        EntropyTemperatures(-1)
    with pytest.raises(ValueError, match="expected"):
        EntropyTemperatures(2).critic_penalty(torch.zeros(3, 2), 1.0)


def test_attention_entropy_gradient_finite_at_zero_probability():
    probs = torch.tensor([0.0, 0.25, 0.75], requires_grad=True)
    attention_entropy(probs).backward()
    assert torch.isfinite(probs.grad).all()


def test_alpha_max_bounds_a_signed_temperature_and_is_checked():
    signed = EntropyTemperatures(depth=1, init_alpha=0.5, signed=True, alpha_max=1.0)
    with torch.no_grad():
        signed.alpha.copy_(torch.tensor([[-3.0, 2.0]]))
    signed.clip_()
    torch.testing.assert_close(signed.alphas(), torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ConfigError, match="alpha_max 0.1 must be in .* and >= alpha_init 1.0"):
        EntropyTemperatures(depth=1, alpha_max=0.1)
