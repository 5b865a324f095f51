"""The GPU fast path in one command: graph == eager, and updates/s side by side.

(a) Agreement: two agents from the same initialisation take 50 updates on the same batches
    and noise, one eagerly, one replayed from a CUDA graph (``tql.graphs.GraphedStep``); every
    loss must agree within 1e-3 relative (float32). The same for a natively batched population.
(b) Speed, the whole training step as the trainer runs it (sampling from device-resident data,
    noise, losses, backward, fused AdamW with the schedule on the device, target EMA):
    eager, graph, graph+compile, in fp32 and bf16, at each ``--presets`` size; the population
    (native backend, in a graph) at K in ``--ks`` in member-updates/s; the matmul peak of the
    same run. Variants are timed in interleaved rounds; medians are reported.
(c) Everything goes to ``--json`` as well.

On a machine without CUDA it runs the CPU parts (compiled == eager agreement, eager and
compiled speed, the population eagerly, at the small ``--cpu-presets``) and lists what it
skipped. A variant that fails is reported as failed and the rest still run.

    python -m benchmarks.gpu.gpu_check --json benchmarks/gpu/results/gpu_check.json | tee benchmarks/gpu/results/gpu_check.txt
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from benchmarks.speed.update_speed import matmul_peak
from tql.agent import AgentConfig, TQLAgent
from tql.batched.stacked import Population
from tql.data.sampler import ReplaySampler
from tql.graphs import CudaCapture, GraphedStep

OBS, ACT = 37, 5  # cube-double: n = 43 tokens
AGREEMENT_KEYS = ("critic/td_loss", "critic/loss", "actor/bc_flow_loss", "actor/distill_loss", "actor/q_loss")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(count: int, batch_size: int, device: torch.device, lead: tuple[int, ...] = ()) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    shape = (*lead, batch_size)
    out = []
    for _ in range(count):
        b = {"observations": torch.randn(*shape, OBS, generator=g), "actions": torch.rand(*shape, ACT, generator=g) * 2 - 1,
             "next_observations": torch.randn(*shape, OBS, generator=g),
             "rewards": -torch.rand(*shape, generator=g).round(), "masks": torch.ones(shape)}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


# ----- (a) agreement ----------------------------------------------------------------------------

def agreement(make: Callable[[bool], object], updates: int, batch_size: int, device: torch.device,
              mode: str, lead: tuple[int, ...] = ()) -> dict:
    """Max relative difference per loss between eager updates and ``mode`` updates ('graph':
    replayed from a CUDA graph; 'compile': compiled losses) of two agents made equal by
    ``make(compiled)``, on the same batches and noise."""
    reference, candidate = make(False), make(mode == "compile")
    batches = _batches(updates, batch_size, device, lead)
    noises = [reference.sample_noise(b) for b in batches]  # population: from its member generators
    target = torch.full((*lead, 2, 2), 1.5, device=device)
    static = {"batch": {k: v.clone() for k, v in batches[0].items()}, "noise": {k: v.clone() for k, v in noises[0].items()}}
    step = lambda t: candidate.update(static["batch"], t, static["noise"])  # noqa: E731
    if mode == "graph":
        step = GraphedStep(step, CudaCapture(device))
    worst = {key: 0.0 for key in AGREEMENT_KEYS}
    for batch, noise in zip(batches, noises):
        for part, values in (("batch", batch), ("noise", noise)):
            for key, value in values.items():
                static[part][key].copy_(value)
        got, want = step(target), reference.update(batch, target, noise)
        for key in AGREEMENT_KEYS:
            worst[key] = max(worst[key], _relative(got[key], want[key]))
    captured = getattr(step, "captured", None)
    return {"mode": mode, "updates": updates, "max_relative": worst, "captured": captured,
            "passed": all(v <= 1e-3 for v in worst.values()) and captured is not False}


# ----- (b) speed --------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str
    preset: str
    mode: str  # eager | graph | graph+compile | compile
    precision: str
    k: int = 0  # population members (0: one agent)
    samples: list[float] = field(default_factory=list)
    flops: int = 0
    warmup_s: float = 0.0
    error: str | None = None

    @property
    def members(self) -> int:
        return max(self.k, 1)


def _dataset(device: torch.device, size: int = 100_000) -> ReplaySampler:
    rng = np.random.default_rng(0)
    data = {"observations": rng.standard_normal((size, OBS)), "actions": rng.uniform(-1, 1, (size, ACT)),
            "next_observations": rng.standard_normal((size, OBS)), "rewards": -rng.integers(0, 2, size),
            "masks": np.ones(size)}
    return ReplaySampler({k: np.asarray(v, dtype=np.float32) for k, v in data.items()}, device)


def make_step(v: Variant, sampler: ReplaySampler, batch_size: int, device: torch.device):
    """(step(target), target, flops of one eager step) as the trainer would build them."""
    options = dict(size=v.preset, batch_size=batch_size, precision=v.precision, compile="compile" in v.mode,
                   alpha_fql=300.0)
    config = AgentConfig(**options)
    generator = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    if v.k:
        model = Population(OBS, ACT, config, v.k, device, seeds=list(range(v.k)))

        def eager(target):
            flat = sampler.sample(batch_size * v.k, generator)
            return model.update({k: t.reshape(v.k, batch_size, *t.shape[1:]) for k, t in flat.items()}, target)
        target = torch.full((v.k, 2, 2), 2.0, device=device)
        generators = [generator, *model.generators]
    else:
        model = TQLAgent(OBS, ACT, config, device)

        def eager(target):
            return model.update(sampler.sample(batch_size, generator), target)
        target = torch.full((2, 2), 2.0, device=device)
        generators = [generator]
    flops = 0
    if "compile" not in v.mode:  # counted eagerly once per size; compiled code is the same math
        with FlopCounterMode(display=False) as counter:
            eager(target)
        flops = counter.get_total_flops()
    step = GraphedStep(eager, CudaCapture(device, generators)) if v.mode.startswith("graph") else eager
    return step, target, flops


def time_variants(variants: list[Variant], rounds: int, inner: int, batch_size: int, device: torch.device,
                  deadline: float) -> None:
    sampler = _dataset(device)
    steps = {}
    for v in variants:
        if time.perf_counter() > deadline:
            v.error = "skipped: --max-minutes reached"
            continue
        t0 = time.perf_counter()
        try:
            step, target, v.flops = make_step(v, sampler, batch_size, device)
            for _ in range(5):  # warm-up, compilation, capture
                step(target)
            _sync(device)
            steps[v.name] = (step, target)
        except Exception as exc:  # noqa: BLE001 - report it, time the others
            v.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            traceback.print_exc(limit=3)
        v.warmup_s = time.perf_counter() - t0
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            if v.name not in steps:
                continue
            step, target = steps[v.name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                step(target)
            _sync(device)
            v.samples.append((time.perf_counter() - t0) / inner)


def plan_variants(args: argparse.Namespace, cuda: bool) -> tuple[list[Variant], list[str]]:
    """The speed matrix, and what a machine without CUDA skips of it."""
    variants, skipped = [], []
    modes = ("eager", "graph", "graph+compile") if cuda else ("eager", "compile")
    presets = args.presets if cuda else args.cpu_presets
    for preset in presets.split(","):
        for precision in ("fp32", "bf16") if cuda else ("fp32",):
            for mode in modes:
                variants.append(Variant(f"{preset} {mode} {precision}", preset, mode, precision))
    if cuda and args.big_preset:
        for mode in ("graph", "graph+compile"):
            variants.append(Variant(f"{args.big_preset} {mode} bf16", args.big_preset, mode, "bf16"))
    ks = [int(k) for k in args.ks.split(",")]
    if not cuda:
        ks = sorted({k for k in ks if k <= args.cpu_max_k} | {args.cpu_max_k})
    pop_preset = args.population_preset if cuda else args.cpu_presets.split(",")[0]
    for k in ks:
        mode = "graph" if cuda else "eager"
        variants.append(Variant(f"{pop_preset} pop K={k} {mode} fp32", pop_preset, mode, "fp32", k))
    if not cuda:
        skipped = [f"graph and graph+compile variants and bf16 at {args.presets} (need CUDA; eager and compile ran "
                   f"at {args.cpu_presets})",
                   f"{args.big_preset} (needs CUDA)",
                   f"population at {args.population_preset}, K > {args.cpu_max_k} and in graphs (need CUDA; K up "
                   f"to {args.cpu_max_k} ran eagerly at {args.cpu_presets.split(',')[0]})",
                   "graph == eager agreement (needs CUDA; compiled == eager ran instead)"]
    return variants, skipped


def report(variants: list[Variant], peak: dict[str, float]) -> list[dict]:
    rows = []
    eager = {(v.preset, v.precision, v.k): v for v in variants if v.mode == "eager" and v.samples}
    flops = {(v.preset, v.k): v.flops for v in variants if v.flops}
    for v in variants:
        v.flops = v.flops or flops.get((v.preset, v.k), 0)
        row = {"variant": v.name, "preset": v.preset, "mode": v.mode, "precision": v.precision, "k": v.k,
               "warmup_s": round(v.warmup_s, 1), "error": v.error}
        if v.samples:
            sec = statistics.median(v.samples)
            base = eager.get((v.preset, v.precision, v.k)) or eager.get((v.preset, "fp32", v.k))
            dtype = "bfloat16" if v.precision == "bf16" else "float32"
            row.update(ms_per_update=1e3 * sec, member_updates_per_s=v.members / sec, gflop_per_update=v.flops / 1e9,
                       mfu=v.flops / sec / peak[dtype] if dtype in peak and v.flops else None,
                       vs_eager=statistics.median(b / s for b, s in zip(base.samples, v.samples)) if base else None,
                       ms_samples=[1e3 * s for s in v.samples])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="0.4M,1.6M", help="single-agent sizes on CUDA")
    p.add_argument("--big-preset", default="26M", help="one large size on CUDA, graph (+compile) in bf16 ('' to skip)")
    p.add_argument("--ks", default="1,8,16", help="population sizes")
    p.add_argument("--population-preset", default="0.4M", help="population size on CUDA (without: --cpu-presets' first)")
    p.add_argument("--cpu-presets", default="0.03M", help="sizes without CUDA")
    p.add_argument("--cpu-max-k", type=int, default=4, help="largest population without CUDA")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--agreement-updates", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--inner", type=int, default=0, help="updates per timed sample (default 50 CUDA, 3 CPU)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads without CUDA")
    p.add_argument("--max-minutes", type=float, default=4.0, help="stop starting new variants after this")
    common.add_json_option(p, "the numbers")
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32, as training on CUDA does by default
    else:
        torch.set_num_threads(args.threads)
    inner = args.inner or (50 if cuda else 3)
    print(f"device: {torch.cuda.get_device_name(device) if cuda else platform.processor() or 'cpu'}, "
          f"batch {args.batch_size}, n = {1 + OBS + ACT}", flush=True)

    agreements = []
    small = args.presets.split(",")[0] if cuda else args.cpu_presets.split(",")[0]

    def agent(compiled: bool):
        torch.manual_seed(0)
        return TQLAgent(OBS, ACT, AgentConfig(size=small, batch_size=args.batch_size, compile=compiled), device)

    def population(compiled: bool):
        return Population(OBS, ACT, AgentConfig(size=small, batch_size=args.batch_size), 4, device, seeds=[0, 1, 2, 3])

    agreements.append({"model": f"agent {small}", **agreement(agent, args.agreement_updates, args.batch_size, device,
                                                              "graph" if cuda else "compile")})
    if cuda:
        agreements.append({"model": f"population K=4 {small}",
                           **agreement(population, args.agreement_updates, args.batch_size, device, "graph", (4,))})
    for a in agreements:
        print(f"agreement {a['model']} ({a['mode']}, {a['updates']} updates): "
              + ", ".join(f"{k} {v:.1e}" for k, v in a["max_relative"].items())
              + f" -> {'PASS' if a['passed'] else 'FAIL'} (every loss within 1e-3 relative)", flush=True)

    variants, skipped = plan_variants(args, cuda)
    peak = {}
    dtypes = [torch.float32, torch.bfloat16] if cuda else [torch.float32]
    for dtype in dtypes:
        peak[str(dtype).split(".")[1]] = matmul_peak(str(device), 8192 if cuda else 2048, dtype)[0]
    time_variants(variants, args.rounds, inner, args.batch_size, device, start + 60 * args.max_minutes)
    rows = report(variants, peak)
    print("matmul peak: " + ", ".join(f"{d} {v / 1e9:,.0f} GFLOP/s" for d, v in peak.items()))
    print(f"{'variant':<32} {'ms/upd':>8} {'member-upd/s':>12} {'vs eager':>8} {'MFU':>6} {'warm-up s':>9}")
    for row in rows:
        if "ms_per_update" not in row:
            print(f"{row['variant']:<32} {row['error']}")
            continue
        ratio = f"{row['vs_eager']:.2f}x" if row["vs_eager"] else "-"
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        print(f"{row['variant']:<32} {row['ms_per_update']:>8.2f} {row['member_updates_per_s']:>12.0f} {ratio:>8} "
              f"{mfu:>6} {row['warmup_s']:>9.1f}")
    print("vs eager: median over rounds of (eager time / this time) in the same round, same size and precision")
    for line in skipped:
        print(f"skipped: {line}")
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "batch_size": args.batch_size,
              "n_tokens": 1 + OBS + ACT, "inner": inner, "rounds": args.rounds, "peak_flop_per_s": peak,
              "agreement": agreements, "rows": rows, "skipped": skipped, "seconds": round(time.perf_counter() - start, 1)}
    print(f"total {result['seconds']:.0f} s")
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
