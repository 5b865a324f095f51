"""Why the Q heads stay float32 under bf16 autocast: the TD loss's agreement with and without.

Trains one float32 agent for ``--steps`` updates on a task's dataset (generated if missing),
then, on the same weights, held-out batches and noise, measures the bf16-vs-float32 relative
difference of every loss term (``precision_check.agreement``) twice, side by side in one run:

- ``heads fp32``: the code as it is (``EnsembleMLP.forward`` leaves autocast);
- ``hidden bf16``: the Q heads' hidden layers under autocast, their output layer in
  float32 (this project's first bf16 version, commit 2a7d0b5);
- ``heads bf16``: the Q heads left to autocast like the rest (hidden and output layers in
  bf16), i.e. what plain ``torch.autocast`` would do.

    python -m benchmarks.gpu.q_head_precision --threads 1 --json benchmarks/gpu/results/q_head_precision.json
"""

from __future__ import annotations

import math
import sys

import torch

import benchmarks.gpu.precision_check as pc
from benchmarks import common
from tql.model import EnsembleMLP, full_precision, upcast
from tql.tasks import get_task


def heads_under_autocast(self: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
    return self.forward_as_given(x)  # without forward's full-precision region


def hidden_under_autocast(self: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
    """``EnsembleMLP.forward_as_given`` as of commit 2a7d0b5: only the output layer in float32 (its
    hidden layers as the model computes them today: ``hidden_activation`` is GELU + LayerNorm or ReLU)."""
    batch = x.shape[0]
    h = torch.addmm(self.b_in, x, self.w_in).view(batch, self.num_q, self.hidden).transpose(0, 1)
    h = self.hidden_activation(h, 0)
    for i, (w, b) in enumerate(zip(self.w_hidden, self.b_hidden), start=1):
        h = self.hidden_activation(torch.baddbmm(b, h, w), i)
    with full_precision(h):
        return torch.baddbmm(self.b_out, upcast(h), self.w_out).squeeze(-1)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = pc.parse_args(["--size", "0.03M", "--steps", "300", "--eval-batches", "4", *argv])
    header = common.print_header(__file__, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    log_n = math.log(task.n_tokens)
    target = torch.tensor(args.rho * log_n, device=args.device)
    sampler, val_sampler = pc.load_samplers(task, args)
    agent = pc.make_agent(task, args, "fp32")
    batch_gen, noise_gen = (torch.Generator(device=args.device).manual_seed(args.seed + s) for s in (1, 2))
    for _ in range(args.steps):
        batch = sampler.sample(args.batch_size, batch_gen)
        agent.update(batch, target, agent.sample_noise(batch, noise_gen))
    val_gen = torch.Generator(device=args.device).manual_seed(args.seed + 200)
    held_out = []
    for _ in range(args.eval_batches):
        batch = val_sampler.sample(args.batch_size, val_gen)
        held_out.append((batch, agent.sample_noise(batch, val_gen), agent.sample_noise(batch, val_gen)))

    results = {"heads fp32": pc.agreement(agent, held_out, target, log_n)}
    original = EnsembleMLP.forward
    try:
        for name, forward in (("hidden bf16", hidden_under_autocast), ("heads bf16", heads_under_autocast)):
            EnsembleMLP.forward = forward
            results[name] = pc.agreement(agent, held_out, target, log_n)
    finally:
        EnsembleMLP.forward = original

    print(f"task {task.name}, size {args.size}, batch {args.batch_size}, {args.steps} float32 updates, "
          f"{args.eval_batches} held-out batches, threads {torch.get_num_threads()}")
    print("bf16 vs float32 on the same weights, median relative difference (noise reference):")
    for name, a in results.items():
        print(f"{name:>11}: " + "  ".join(f"{k.split('/')[1]} {a[k]['median']:.2e} ({a[k]['noise_median']:.0e})"
                                          for k in pc.LOSS_TERMS))
    out = {"args": vars(args), "agreement": results}
    common.write_json(args.json, out, __file__, argv, header=header)
    return out


if __name__ == "__main__":
    main()
