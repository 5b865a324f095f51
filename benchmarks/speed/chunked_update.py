"""Would the `cpu` profile's update run faster on a CPU if its batch went through in chunks?

The profile (update_profile.py) found the compiled update's non-arithmetic time in inductor's
fused elementwise kernels over activations larger than a core's L2 cache (e.g. 128 x 43
tokens x 128 MLP features). Every term of the loss is a mean over the batch that is linear in
the per-sample terms (the entropy penalty and the temperature loss are linear in the batch-mean
entropies), so the gradient of the whole batch equals the weighted sum of the gradients of
its chunks; a chunk's activations are C times smaller and may stay in cache between the
forward and the backward. (FQL's optional ``normalize_q_loss`` is not linear: it is off by
default and here.)

This script measures that potential before any change to the agent: the compiled loss and
its gradients (``torch.autograd.grad``) for one `cpu`-profile update, on the whole batch and
in C chunks, from one agent state, gradients compared (largest relative difference over the
optimiser's parameters), timed in interleaved rounds (median ms, ratio to the whole batch).

    python -m benchmarks.speed.chunked_update --threads 2 --chunks 2,4 --rounds 7 \\
        --json benchmarks/speed/results/chunked_update.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks import common
from tql.compiled import CompiledOrEager


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--chunks", default="2,4", help="chunk counts to compare with the whole batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--inner", type=int, default=10, help="loss + backward calls per timed sample")
    common.add_json_option(p)
    return p.parse_args(argv)


def make_agent(task: str, profile: str):
    from tql.agent import TQLAgent
    from tql.trainer import TrainConfig

    config = TrainConfig.from_profile(task, profile, {"compile": True})
    spec = config.spec
    torch.manual_seed(0)
    return TQLAgent(spec.obs_dim, spec.act_dim, config.agent, "cpu", total_steps=config.steps), spec


def random_batch(spec, size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"observations": torch.randn(size, spec.obs_dim, generator=g),
            "actions": torch.rand(size, spec.act_dim, generator=g) * 2 - 1,
            "next_observations": torch.randn(size, spec.obs_dim, generator=g),
            "rewards": -torch.rand(size, generator=g), "masks": torch.ones(size)}


def compiled_losses(agent) -> CompiledOrEager:
    """The agent's whole loss through torch.compile, as its update compiles it."""
    return CompiledOrEager(agent.losses, True, explicit=True)


def gradients(agent, losses: CompiledOrEager, batch: dict, noise: dict, target: torch.Tensor,
              chunks: int) -> list[torch.Tensor]:
    """Gradients of the update's loss ``losses`` (w.r.t. the optimiser's parameters), the batch in
    ``chunks`` equal row slices weighted by their share of the batch, summed here: letting
    ``.backward()`` accumulate into ``.grad`` over two calls of the compiled loss gave a wrong
    gradient for the critic's [VALUE] token embedding (torch 2.13, CPU; eager was right)."""
    params = [p for group in agent.optimizer.param_groups for p in group["params"]]
    size, total = len(batch["actions"]), None
    bounds = [size * i // chunks for i in range(chunks + 1)]
    for start, stop in zip(bounds, bounds[1:]):
        part = {k: v[start:stop] for k, v in batch.items()}
        draws = {k: v[start:stop] for k, v in noise.items()}
        loss, _ = losses(part, target, draws)
        grads = torch.autograd.grad(loss * ((stop - start) / size), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    return total


def largest_relative_difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return max(float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)) for g, w in zip(got, want))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    agent, spec = make_agent(args.task, args.profile)
    batch = random_batch(spec, agent.config.batch_size)
    noise = agent.sample_noise(batch, torch.Generator().manual_seed(2))
    target = torch.full((2, 2), 0.9 * spec.max_entropy)
    settings = [1] + [int(c) for c in args.chunks.split(",")]
    losses = compiled_losses(agent)
    whole = gradients(agent, losses, batch, noise, target, 1)  # also compiles the whole-batch graph
    agreement = {c: largest_relative_difference(gradients(agent, losses, batch, noise, target, c), whole)
                 for c in settings[1:]}  # also compiles each chunk shape
    samples: dict[int, list[float]] = {c: [] for c in settings}
    for _ in range(args.rounds):
        for c in settings:
            start = time.perf_counter()
            for _ in range(args.inner):
                gradients(agent, losses, batch, noise, target, c)
            samples[c].append(1000 * (time.perf_counter() - start) / args.inner)
    median = {c: statistics.median(v) for c, v in samples.items()}
    print(f"compiled loss + backward of one `{args.profile}` update, batch {len(batch['actions'])}, "
          f"{args.threads} threads, {args.rounds} interleaved rounds of {args.inner}")
    print(f"{'chunks':>6} {'ms':>8} {'vs whole':>9} {'largest rel. grad diff':>23}")
    for c in settings:
        diff = "-" if c == 1 else f"{agreement[c]:.2e}"
        print(f"{c:>6} {median[c]:>8.2f} {median[1] / median[c]:>8.2f}x {diff:>23}")
    common.write_json(args.json, {"args": vars(args), "median_ms": median, "ms_samples": samples,
                                  "grad_rel_diff": agreement}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
