"""Full TQL updates per second vs the machine's matmul peak, a reference critic and FQL's MLP.

One "update" is ``TQLAgent.update``: critic TD + entropy penalty (online forward/backward and
the target critic's forward on mu(s', z')), temperatures, flow BC loss, the 10-step flow
teacher, the one-step policy through a frozen critic (forward + input backward), one Adam
step, target EMA. Variants, all trained with exactly that update:

- ``tql``: the TQL critic of ``tql.model`` (attention that also yields the row entropies);
- ``reference``: a straightforward critic on ``nn.TransformerEncoderLayer`` (same tokens,
  width, depth, heads, MLP ratio, norm_first=True, GELU-tanh, no dropout), same tokenizer
  and Q heads, and no entropy output (its entropies are constant zeros, so the entropy
  penalty has no gradient);
- ``mlp``: FQL's 4 x 512 MLP critic (``critic='mlp'``; independent of the preset, measured
  once);
- ``tql+compile``: ``tql`` with ``AgentConfig(compile=True)`` (torch.compile of the whole
  loss; compile time is reported as warm-up, not timed);
- ``tql+bf16``: ``tql`` with ``AgentConfig(precision="bf16")`` (bfloat16 autocast of the
  forward passes, attention core / outputs / losses in float32; see benchmarks/gpu/precision_check.py for
  whether the losses agree);
- with ``--members K``: K members of one task, per round of K member-updates:
  ``K x tql+compile`` (one by one, each on ``--threads``: K separate runs) and ``population``
  (``tql.batched.stacked.Population``, compiled, on ``--threads``); their ``vs 1by1``
  column is the ratio to ``K x tql+compile``; with ``--split P`` (and ``--profile``) also
  ``split P x 1 thread``: the K members as P processes of one thread, each updating its K / P
  compiled agents one after another, all at once (``member_split.py``'s workers: what
  ``run --workers auto`` and ``compare --workers auto`` do with runs on a CPU);
- ``tql@REV`` (with ``--baseline-rev REV``): the whole agent at git revision REV (its ``tql``
  package imported under another name, ``rev_agent.py``), timed in the same rounds:
  before/after measurements of the current code. Its configuration is the ``tql`` variant's
  (with REV's defaults for options REV does not have).

``--profile cpu`` measures a training profile's agent (its preset, batch size, actor widths
and flow steps) instead of ``--presets`` / ``--batch-size``.

Model FLOPs per update are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
full update (matmul-type ops: mm / addmm / bmm / baddbmm, forward and backward; elementwise
ops are not counted). The matmul peak is a large float32 square matmul with the same thread
count, timed in the same rounds as the updates (and a bfloat16 one when a variant runs in
bf16). MFU = achieved model FLOP/s / the peak of the variant's matmul dtype. All variants
and the peak are interleaved round by round (``--repeats`` rounds); medians are reported,
because the machine may be shared.

    python -m benchmarks.speed.update_speed --threads 2 --repeats 5 --presets 0.4M,1.6M \\
        --json benchmarks/speed/results/update_speed.json
    python -m benchmarks.speed.update_speed --variants tql,tql+bf16 --presets 0.4M,1.6M   # bf16 vs fp32
    python -m benchmarks.speed.update_speed --device cuda --bf16 --inner 200   # on a GPU
    python -m benchmarks.speed.update_speed --profile cpu --variants tql,tql+compile --baseline-rev d86bc7f
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from benchmarks.speed.rev_agent import agent_at
from tql.agent import AgentConfig, TQLAgent
from tql.batched.stacked import Population
from tql.model import EnsembleMLP, get_preset

_STATE, _ACTION, _VALUE = 0, 1, 2


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


class ReferenceCritic(nn.Module):
    """The same critic written the obvious way: ``nn.TransformerEncoderLayer`` blocks.

    Tokenizer and Q heads as ``TQLCritic``; blocks are PyTorch's Pre-LN encoder layers. No
    attention entropies: returns zeros ``[depth, 2]`` so the agent code runs unchanged.
    """

    def __init__(self, obs_dim: int, act_dim: int, size: str, num_q: int = 2) -> None:
        super().__init__()
        s = get_preset(size)
        self.obs_dim, self.act_dim, self.num_q, self.depth = obs_dim, act_dim, num_q, s.depth
        n, d = 1 + obs_dim + act_dim, s.dim
        self.n_tokens = n
        self.value_token = nn.Parameter(torch.randn(1, d) * 0.02)
        bound = d**-0.5
        self.w_pos = nn.Parameter(torch.empty(n - 1, d).uniform_(-bound, bound))
        self.b_pos = nn.Parameter(torch.empty(n - 1, d).uniform_(-bound, bound))
        self.modality_emb = nn.Parameter(torch.randn(3, d) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(n, d) * 0.02)
        modality = torch.tensor([_VALUE] + [_STATE] * obs_dim + [_ACTION] * act_dim)
        self.register_buffer("modality_ids", modality, persistent=False)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, s.heads, s.mlp_ratio * d, dropout=0.0, activation=_gelu_tanh,
                                       batch_first=True, norm_first=True)
            for _ in range(s.depth)
        )
        self.ln_f = nn.LayerNorm(d)
        self.q_heads = EnsembleMLP(d, s.head_hidden, s.head_layers, num_q)

    def forward(self, obs: Tensor, act: Tensor, entropies: bool = True) -> tuple[Tensor, Tensor]:
        scalars = torch.cat((obs, act), dim=-1)
        tokens = scalars.unsqueeze(-1) * self.w_pos + self.b_pos
        value = self.value_token.expand(obs.shape[0], 1, -1)
        x = torch.cat((value, tokens), dim=1) + self.pos_emb + self.modality_emb[self.modality_ids]
        for layer in self.layers:
            x = layer(x)
        q = self.q_heads(self.ln_f(x[:, 0]))
        return q, q.new_zeros(self.depth, 2)


def agent_options(variant: str, preset: str, compile_: bool, bf16: bool, profile: dict) -> dict:
    """``AgentConfig`` fields of a variant (``profile``: a training profile's agent fields)."""
    options = {**profile, "critic": "mlp" if variant == "mlp" else "tql", "size": preset, "alpha_fql": 300.0,
               "precision": "bf16" if bf16 or variant == "tql+bf16" else "fp32"}
    if compile_ or variant.endswith("tql+compile") or variant == "population":
        options["compile"] = True
    elif not variant.startswith("tql@"):
        options["compile"] = False  # eager unless asked: the default would compile on CUDA
    return options


def make_agent(variant: str, obs_dim: int, act_dim: int, device: str, options: dict, seed: int = 0) -> TQLAgent:
    torch.manual_seed(seed)
    agent = TQLAgent(obs_dim, act_dim, AgentConfig(**options), device)
    if variant == "reference":
        agent.critic = ReferenceCritic(obs_dim, act_dim, options["size"]).to(device)
        agent.target_critic = ReferenceCritic(obs_dim, act_dim, options["size"]).to(device)
        agent.target_critic.load_state_dict(agent.critic.state_dict())
        agent.target_critic.requires_grad_(False)
        agent.optimizer = agent.build_optimizer(fused=False)
    return agent


def make_batch(batch_size: int, obs_dim: int, act_dim: int, device: str) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    batch = {
        "observations": torch.randn(batch_size, obs_dim, generator=g),
        "actions": torch.rand(batch_size, act_dim, generator=g) * 2 - 1,
        "next_observations": torch.randn(batch_size, obs_dim, generator=g),
        "rewards": -torch.rand(batch_size, generator=g).round(),
        "masks": torch.ones(batch_size),
    }
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Runner:
    """Times ``inner`` back-to-back updates of one agent (in the agent's own precision) on
    ``threads`` torch threads (set before each timed sample: variants differ in them)."""

    def __init__(self, agent: TQLAgent, batch: dict[str, Tensor], device: str, threads: int) -> None:
        self.agent, self.batch, self.device, self.threads = agent, batch, device, threads
        self.target = torch.tensor(0.5 * math.log(1 + agent.obs_dim + agent.act_dim), device=device)
        self.dtype = torch.bfloat16 if agent.config.precision == "bf16" else torch.float32
        self.members = 1

    @property
    def critic_params(self) -> int:
        return sum(p.numel() for p in self.agent.critic.parameters())

    def step(self) -> dict[str, Tensor]:
        return self.agent.update(self.batch, self.target)

    def warm_up(self, updates: int) -> None:
        torch.set_num_threads(self.threads)
        for _ in range(updates):
            self.step()
        _sync(self.device)

    def time(self, inner: int) -> float:
        torch.set_num_threads(self.threads)
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(inner):
            self.step()
        _sync(self.device)
        return (time.perf_counter() - t0) / inner

    def flops(self) -> int:
        """Matmul FLOPs of one update, counted on the eager loss: a torch.compile'd function
        called under FlopCounterMode is recompiled and afterwards runs at eager speed, so the
        compiler is told to run everything eagerly meanwhile (any agent, any revision)."""
        with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
            self.step()
        return counter.get_total_flops()


class MembersRunner(Runner):
    """K members' updates per step: K agents one after the other, or one population."""

    def __init__(self, agents: list[TQLAgent], batch: dict[str, Tensor], device: str, threads: int,
                 population: Population | None = None) -> None:
        super().__init__(agents[0], batch, device, threads)
        self.agents, self.population, self.members = agents, population, len(agents)
        self.stacked = {key: value.expand(len(agents), *value.shape).contiguous() for key, value in batch.items()}

    def step(self) -> None:
        if self.population is not None:
            self.population.update(self.stacked, self.target)
            return
        for agent in self.agents:
            agent.update(self.batch, self.target)

    def flops(self) -> int:
        return self.members * Runner(self.agent, self.batch, self.device, self.threads).flops()


def member_runners(args: argparse.Namespace, preset: str, profile: dict, batch: dict[str, Tensor]) -> dict:
    """``--members K``: K agents one by one (compiled) and a population of K (compiled)."""
    k, variant = args.members, f"{args.members} x tql+compile"
    options = agent_options(variant, preset, args.compile, args.bf16, profile)
    agents = [make_agent(variant, args.obs_dim, args.act_dim, args.device, options, seed) for seed in range(k)]
    runners = {(preset, variant): MembersRunner(agents, batch, args.device, args.threads)}
    options = agent_options("population", preset, args.compile, args.bf16, profile)
    population = Population(args.obs_dim, args.act_dim, AgentConfig(**options), k, args.device, seeds=list(range(k)))
    runners[(preset, "population")] = MembersRunner([make_agent("tql", args.obs_dim, args.act_dim, args.device,
                                                                options)] * k, batch, args.device, args.threads,
                                                    population)
    return runners


class SplitRunner(Runner):
    """``--split P``: K members as P one-thread worker processes of K / P compiled agents each
    (``member_split.py``), all at once; a step is one update of every member."""

    def __init__(self, args: argparse.Namespace, agent: TQLAgent, batch: dict[str, Tensor]) -> None:
        from types import SimpleNamespace

        from benchmarks.speed.member_split import start_workers

        super().__init__(agent, batch, args.device, threads=1)
        self.members = args.members
        self.pipes = start_workers(SimpleNamespace(members=args.members, processes=args.split, task=args.task,
                                                   profile=args.profile), "agents")

    def step(self) -> None:
        self.time(1)

    def warm_up(self, updates: int) -> None:
        self.time(updates)

    def time(self, inner: int) -> float:
        from benchmarks.speed.member_split import run_split

        t0 = time.perf_counter()
        run_split(self.pipes, inner)
        return (time.perf_counter() - t0) / inner

    def flops(self) -> int:
        return self.members * Runner(self.agent, self.batch, self.device, self.threads).flops()

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)


def matmul_peak(device: str, size: int, dtype: torch.dtype, seconds: float = 0.5) -> tuple[float, float]:
    """FLOP/s of a square ``size`` matmul: (median, best) of the calls timed in ``seconds``.

    The median is the peak MFU is computed against: on a shared machine it sees the same
    contention as the updates' medians (the best call is reported too).
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    times: list[float] = []
    while sum(times) < seconds or len(times) < 3:
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times), 2 * size**3 / min(times)


def profile_agent(args: argparse.Namespace) -> dict:
    """The agent fields of ``--profile`` besides the preset (which replaces ``--presets``;
    its batch size replaces ``--batch-size``); {} without a profile."""
    if not args.profile:
        return {}
    from tql.trainer import PROFILES

    if args.profile not in PROFILES:
        raise SystemExit(f"unknown profile {args.profile!r}; valid: {', '.join(PROFILES)}")
    agent = dict(PROFILES[args.profile]["agent"])
    args.presets = agent.pop("size", args.presets)
    args.batch_size = agent.pop("batch_size", args.batch_size)
    return agent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="0.4M,1.6M", help="comma-separated TQL critic presets")
    p.add_argument("--variants", default="tql,reference,mlp")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--obs-dim", type=int, default=37, help="cube-double: 37 (n = 1 + 37 + 5 = 43)")
    p.add_argument("--act-dim", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (peak uses the same)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians reported")
    p.add_argument("--inner", type=int, default=2, help="updates per timed sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per agent first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="every variant with precision='bf16' (bfloat16 autocast)")
    p.add_argument("--compile", action="store_true", help="AgentConfig(compile=True): torch.compile the whole loss")
    p.add_argument("--baseline-rev", help="add variant tql@REV: the whole agent at this git revision (a worker "
                                          "process, timed in the same rounds)")
    p.add_argument("--profile", help="a training profile's agent (e.g. cpu: its preset, batch size, actor widths, "
                                     "flow steps); replaces --presets and --batch-size")
    p.add_argument("--members", type=int, default=0, help="K > 1 adds K members one by one and as a population")
    p.add_argument("--split", type=int, default=0, help="P: with --members K and --profile, adds the K members as "
                                                         "P one-thread processes at once (member_split.py)")
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0", help="the task of --split's workers")
    p.add_argument("--peak-size", type=int, default=0, help="matmul size (default 2048 CPU, 8192 CUDA)")
    common.add_json_option(p, "the numbers")
    args = p.parse_args(argv)
    if args.split and (args.members < 2 or args.members % args.split or not args.profile or args.device != "cpu"):
        p.error(f"--split {args.split} needs --members K > 1 that it divides, --profile and --device cpu")
    torch.set_num_threads(args.threads)
    device = args.device
    peak_size = args.peak_size or (8192 if device.startswith("cuda") else 2048)
    variants = [v for v in args.variants.split(",") if v]
    valid = ("tql", "tql+compile", "tql+bf16", "reference", "mlp")
    unknown = set(variants) - set(valid)
    if unknown:
        p.error(f"unknown variant(s) {sorted(unknown)}; valid: {', '.join(valid)}")
    header = common.print_header(__file__, argv)
    if args.baseline_rev:
        variants.insert(1, f"tql@{args.baseline_rev}")
    profile = profile_agent(args)
    batch = make_batch(args.batch_size, args.obs_dim, args.act_dim, device)
    runners: dict[tuple[str, str], Runner] = {}
    for preset in args.presets.split(","):
        get_preset(preset)
        for variant in variants:
            key = ("-" if variant == "mlp" else preset, variant)
            if key in runners:
                continue
            options = agent_options(variant, preset, args.compile, args.bf16, profile)
            agent = agent_at(args.baseline_rev, args.obs_dim, args.act_dim, options, device) \
                if variant.startswith("tql@") else make_agent(variant, args.obs_dim, args.act_dim, device, options)
            runners[key] = Runner(agent, batch, device, args.threads)
        if args.members > 1:
            runners.update(member_runners(args, preset, profile, batch))
        if args.split:
            agent = runners[(preset, f"{args.members} x tql+compile")].agent
            runners[(preset, f"split {args.split} x 1 thread")] = SplitRunner(args, agent, batch)
    info: dict[tuple[str, str], dict] = {}
    for key, runner in runners.items():
        t0 = time.perf_counter()
        runner.warm_up(args.warmup)
        info[key] = {"flops": runner.flops(), "warmup_s": time.perf_counter() - t0,
                     "critic_params": runner.critic_params}

    samples: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    peak_dtypes = sorted({r.dtype for r in runners.values()}, key=str)
    peaks: dict[torch.dtype, list[float]] = {d: [] for d in peak_dtypes}
    peaks_best: dict[torch.dtype, list[float]] = {d: [] for d in peak_dtypes}
    for r in range(args.repeats):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))  # alternate order
        for dtype in peak_dtypes:
            median_peak, best_peak = matmul_peak(device, peak_size, dtype)
            peaks[dtype].append(median_peak)
            peaks_best[dtype].append(best_peak)
        for key in order:
            samples[key].append(runners[key].time(args.inner))
    peak = {d: statistics.median(v) for d, v in peaks.items()}
    for runner in runners.values():
        if isinstance(runner, SplitRunner):
            runner.close()

    rows = []
    for key in runners:
        preset, variant = key
        sec = statistics.median(samples[key])
        flops = info[key]["flops"]
        def paired(other: tuple[str, str]) -> float | None:
            """Median over rounds of (other's time / this time), same round: robust to drift."""
            if other not in samples:
                return None
            return statistics.median(o / t for o, t in zip(samples[other], samples[key]))

        baseline = f"tql@{args.baseline_rev}" if args.baseline_rev else None
        rows.append({
            "preset": preset, "variant": variant, "critic_params": info[key]["critic_params"],
            "updates_per_s": 1.0 / sec, "ms_per_update": 1e3 * sec,
            "ms_samples": [1e3 * s for s in samples[key]],
            "gflop_per_update": flops / 1e9, "gflop_per_s": flops / sec / 1e9,
            "mfu": flops / sec / peak[runners[key].dtype], "matmul_dtype": str(runners[key].dtype),
            "speedup_vs_reference": paired((preset, "reference")),
            "speedup_vs_tql": paired((preset, "tql")) if variant != "tql" else None,
            "speedup_vs_baseline_rev": paired((preset, baseline)) if baseline else None,
            "speedup_vs_one_by_one": paired((preset, f"{args.members} x tql+compile")) if args.members > 1 else None,
            "threads": runners[key].threads, "members": runners[key].members,
            "warmup_s": info[key]["warmup_s"],
        })
    result = {
        "device": device, "threads": args.threads, "batch_size": args.batch_size,
        "obs_dim": args.obs_dim, "act_dim": args.act_dim, "n_tokens": 1 + args.obs_dim + args.act_dim,
        "bf16": args.bf16, "compile": args.compile, "repeats": args.repeats, "inner": args.inner,
        "peak_matmul": {str(d): {"size": peak_size, "gflop_per_s_median": peak[d] / 1e9,
                                 "gflop_per_s_samples": [x / 1e9 for x in peaks[d]],
                                 "best_call_gflop_per_s": max(peaks_best[d]) / 1e9} for d in peak_dtypes},
        "peak_note": "per round: median of the timed calls; MFU uses the median over rounds",
        "flop_count": "torch.utils.flop_counter.FlopCounterMode, one full update (matmul-type ops)",
        "load_avg": _loadavg(), "rows": rows,
    }
    print(f"device={device} threads={args.threads} batch={args.batch_size} n={result['n_tokens']} "
          f"bf16={args.bf16} compile={args.compile} repeats={args.repeats}x{args.inner} load_avg={result['load_avg']}")
    for d in peak_dtypes:
        print(f"matmul peak ({peak_size}^2 {d}): median {peak[d] / 1e9:.1f} GFLOP/s (rounds "
              f"{', '.join(f'{x / 1e9:.0f}' for x in peaks[d])}; best single call {max(peaks_best[d]) / 1e9:.0f})")
    print(f"{'preset':>6} {'variant':>18} {'thr':>3} {'params':>9} {'upd/s':>8} {'ms/upd':>9} {'GFLOP/upd':>9} "
          f"{'GFLOP/s':>8} {'MFU':>6} {'vs ref':>7} {'vs tql':>7} {'vs base':>7} {'vs 1by1':>7}")
    ratio = lambda x: f"{x:.2f}x" if x else "-"  # noqa: E731
    for row in rows:
        print(f"{row['preset']:>6} {row['variant']:>18} {row['threads']:>3} {row['critic_params']:>9,} "
              f"{row['updates_per_s']:>8.2f} {row['ms_per_update']:>9.1f} {row['gflop_per_update']:>9.2f} "
              f"{row['gflop_per_s']:>8.1f} {100 * row['mfu']:>5.1f}% {ratio(row['speedup_vs_reference']):>7} "
              f"{ratio(row['speedup_vs_tql']):>7} {ratio(row['speedup_vs_baseline_rev']):>7} "
              f"{ratio(row['speedup_vs_one_by_one']):>7}")
    print("vs ref / vs tql / vs base / vs 1by1: median over rounds of (that variant's time / this one's) in the same "
          "round; MFU against the peak of the variant's matmul dtype; thr: torch threads; "
          "members' rows: ms and GFLOP per step of all K members")
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


def _loadavg() -> list[float] | None:
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    main()
