"""Where the time of one `cpu`-profile update goes: by component, by operator, and against
the speed its matmuls reach at their own shapes.

An update (``TQLAgent.update`` on a sampled batch) is cut into the components below. Each is
timed on its own, eager and compiled (torch.compile of the component's forward and loss;
AOTAutograd compiles its backward), in interleaved rounds (medians), beside the whole update:

- ``sample``: a batch from a ``ReplaySampler`` of the profile's dataset size + the noise draws;
- ``td_target``: mu(s', z') and the target critic's forward (no grad), the TD target;
- ``critic``: the online critic's forward with entropies, TD loss + entropy penalty +
  temperature loss, backward;
- ``flow_bc``: the flow-matching loss, forward and backward;
- ``flow_teacher``: the 10-step (``flow_steps``) Euler integration of the flow (no grad);
- ``one_step``: mu(s, z), distillation to the teacher, Q through the frozen critic, backward;
- ``optimizer``: zero_grad, the fused AdamW step, temperature clip, schedule, target EMA.

**Matmul floor.** Every matmul-type call of a component (mm / addmm / bmm / baddbmm, forward
and backward, as the eager component dispatches them) is recorded with its shapes and strides;
each distinct call is then timed alone on tensors of the same layout with its operands in
cache (median of 20): the time the component's arithmetic takes at the shapes it runs at, at
its best (small matmuls do not reach the large matmul peak: this measures what they reach),
rounded once per round so it sees the same contention as the components. ``component time - floor`` is what is not
arithmetic (elementwise ops, reductions, copies, dispatch, Python).

**Matmul chain.** The whole update's recorded matmuls (those the compiled update makes too:
inductor computes a few small ones in its own kernels) replayed one after another with nothing
between them, on buffers laid out as the update's own (``MatmulChain``), timed in the same
rounds: the matmuls with operands that no kernel has just written into cache. Inside the update
they run faster than that (``update_limit.py`` times them there), so ``compiled update / chain``
is not a bound on what removing the other ops could gain; ``update_limit.py`` gives that.

**Operators.** ``torch.profiler`` over ``--profile-updates`` whole updates, eager and
compiled: self CPU time per update of the top operators. ``--kernel-names`` has inductor record
each of its fused C++ kernels by name (``cpp.enable_kernel_profile``: about 1 us per kernel call
more), so that the compiled table names them instead of one "CompiledFxGraph" row per graph,
and sums every table by kind of work (``KINDS``: matmuls, GELU, softmax and entropies, layer
norms, copies and layout changes, the optimiser, the rest).

    python -m benchmarks.speed.update_profile --threads 2 --repeats 7 \\
        --json benchmarks/speed/results/update_profile.json
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import common
from tql.agent import AgentConfig, TQLAgent, flow_matching_loss, td_target
from tql.data.sampler import ReplaySampler
from tql.trainer import PROFILES

MATMUL_OPS = {"mm": torch.mm, "addmm": torch.addmm, "bmm": torch.bmm, "baddbmm": torch.baddbmm}
MATMULS = set(MATMUL_OPS)
COMPONENTS = ("sample", "td_target", "critic", "flow_bc", "flow_teacher", "one_step", "optimizer")


def profile_agent(profile: str, obs_dim: int, act_dim: int, compile_: bool) -> tuple[TQLAgent, int]:
    """The profile's agent (seed 0) and its dataset size in transitions."""
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    spec = PROFILES[profile]
    torch.manual_seed(0)
    config = AgentConfig(**{**spec["agent"], "alpha_fql": 300.0, "compile": compile_})
    transitions = (spec["data_episodes"] or 1000) * spec["data_episode_length"]
    return TQLAgent(obs_dim, act_dim, config, "cpu", total_steps=spec["steps"]), transitions


def random_sampler(transitions: int, obs_dim: int, act_dim: int) -> ReplaySampler:
    rng = np.random.default_rng(0)
    data = {"observations": rng.standard_normal((transitions, obs_dim), dtype=np.float32),
            "actions": rng.uniform(-1, 1, (transitions, act_dim)).astype(np.float32),
            "rewards": -rng.integers(0, 2, transitions).astype(np.float32),
            "masks": np.ones(transitions, np.float32),
            "next_observations": rng.standard_normal((transitions, obs_dim), dtype=np.float32)}
    return ReplaySampler(data)


class Components:
    """One closure per component over a fixed batch and noise (``compiled``: each loss part
    through torch.compile)."""

    def __init__(self, agent: TQLAgent, sampler: ReplaySampler, compiled: bool) -> None:
        self.agent, self.sampler = agent, sampler
        self.batch = sampler.sample(agent.config.batch_size, torch.Generator().manual_seed(1))
        self.noise = agent.sample_noise(self.batch)
        self.target = torch.full((agent.critic.depth, 2), 0.9 * math.log(agent.critic.n_tokens))
        wrap = (lambda f: torch.compile(f, dynamic=False)) if compiled else (lambda f: f)
        self._td_target = wrap(self._td_target_fn)
        self._critic = wrap(self._critic_fn)
        self._flow_bc = wrap(self._flow_bc_fn)
        self._teacher = wrap(self._teacher_fn)
        self._one_step = wrap(self._one_step_fn)

    def _td_target_fn(self, batch, noise):
        a = self.agent
        with torch.no_grad():
            next_actions = a.actor(batch["next_observations"], noise["next"]).clamp(-1.0, 1.0)
            next_qs, _ = a.target_critic(batch["next_observations"], next_actions, entropies=False)
            return td_target(batch["rewards"], batch["masks"], next_qs, a.config.gamma, a.config.q_agg)

    def _critic_fn(self, batch, target_q, target):
        a = self.agent
        qs, entropies = a.critic(batch["observations"], batch["actions"])
        loss = (qs - target_q).pow(2).mean() + a.temperatures.critic_penalty(entropies, target)
        return loss + a.temperatures.temperature_loss(entropies.detach(), target)

    def _flow_bc_fn(self, batch, noise):
        return flow_matching_loss(self.agent.flow, batch["observations"], batch["actions"], noise["flow"],
                                  noise["flow_t"])

    def _teacher_fn(self, batch, noise):
        with torch.no_grad():
            return self.agent.flow.sample(batch["observations"], noise["actor"], self.agent.config.flow_steps)

    def _one_step_fn(self, batch, noise, teacher):
        a = self.agent
        student = a.actor(batch["observations"], noise["actor"])
        frozen = {k: v.detach() for k, v in a.critic.named_parameters()}
        qs, _ = torch.func.functional_call(a.critic, frozen, (batch["observations"], student.clamp(-1.0, 1.0)),
                                           {"entropies": False})
        return a.config.alpha_fql * (student - teacher).pow(2).mean() - qs.mean()

    def closures(self) -> dict[str, Callable[[], object]]:
        a, b, n = self.agent, self.batch, self.noise
        target_q = self._td_target_fn(b, n)
        teacher = self._teacher_fn(b, n)

        def sample():
            a.sample_noise(self.sampler.sample(a.config.batch_size))

        def optimizer():
            a.optimizer.step()
            a.after_step()

        for p in a.parameters():  # gradients for the optimiser component to step on
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        return {
            "sample": sample,
            "td_target": lambda: self._td_target(b, n),
            "critic": lambda: self._critic(b, target_q, self.target).backward(),
            "flow_bc": lambda: self._flow_bc(b, n).backward(),
            "flow_teacher": lambda: self._teacher(b, n),
            "one_step": lambda: self._one_step(b, n, teacher).backward(),
            "optimizer": optimizer,
        }


class MatmulRecorder(TorchDispatchMode):
    """Records every matmul-type call: (op, [(shape, stride) of each tensor argument]) in
    ``calls``, and the arguments' memory addresses (``data_ptr``) in ``addresses``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.addresses: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in MATMULS:
            tensors = [x for x in args if isinstance(x, torch.Tensor)]
            self.calls.append((name, tuple((tuple(x.shape), tuple(x.stride())) for x in tensors)))
            self.addresses.append(tuple(x.data_ptr() for x in tensors))
        return func(*args, **(kwargs or {}))


class MatmulChain:
    """An update's recorded matmuls replayed one after another, nothing between them (no
    elementwise work, copies, dispatch or optimiser).

    Operands are views of one buffer per address the update used (arguments that shared memory
    in the update share it here: weights read by several calls, an activation read by its
    forward and backward matmuls, the allocator's reuse of freed blocks), so the chain moves
    about the data the update's matmuls moved. Unlike ``matmul_floor_ms`` an operand is not in
    cache unless the chain itself left it there.
    """

    def __init__(self, calls: list[tuple], addresses: list[tuple[int, ...]]) -> None:
        self.calls = calls  # (op, layout) per step, as ``MatmulRecorder`` records them
        spans: dict[int, int] = {}
        for (_, layout), ptrs in zip(calls, addresses):
            for (shape, stride), ptr in zip(layout, ptrs):
                span = 1 + sum((size - 1) * step for size, step in zip(shape, stride))
                spans[ptr] = max(spans.get(ptr, 0), span)
        self.buffers = {ptr: torch.randn(span) for ptr, span in spans.items()}
        self.steps = [(MATMUL_OPS[name], [self.buffers[ptr].as_strided(shape, stride)
                                        for (shape, stride), ptr in zip(layout, ptrs)])
                      for (name, layout), ptrs in zip(calls, addresses)]

    @classmethod
    def of_calls_made(cls, calls: list[tuple], addresses: list[tuple[int, ...]], made: Counter) -> "MatmulChain":
        """The chain of those recorded calls that another run of the same update made too:
        ``made`` counts ``(op, shapes of the two matrix operands)`` of that run (a compiled
        update: inductor computes some small matmuls, e.g. a bmm whose inner size is 1, in its
        own kernels)."""
        left, kept = Counter(made), []
        for call, ptrs in zip(calls, addresses):
            key = (call[0], tuple(shape for shape, _ in call[1][-2:]))
            if left[key] > 0:
                left[key] -= 1
                kept.append((call, ptrs))
        missing = +left
        if missing:
            raise ValueError(f"matmuls the other run made that the recorded one did not: {dict(missing)}")
        return cls([c for c, _ in kept], [p for _, p in kept])

    @property
    def megabytes(self) -> float:
        return sum(b.numel() * b.element_size() for b in self.buffers.values()) / 1e6

    def __call__(self) -> None:
        for op, operands in self.steps:
            op(*operands)


def matmul_flops(name: str, layout: tuple) -> int:
    shapes = [s for s, _ in layout]
    if name in ("mm", "addmm"):
        (m, k), (_, n) = shapes[-2], shapes[-1]
        return 2 * m * k * n
    (b, m, k), (_, _, n) = shapes[-2], shapes[-1]
    return 2 * b * m * k * n


def matmul_floor_ms(calls: list[tuple], repeats: int = 20) -> float:
    """The recorded matmuls' time at their best: each distinct call (op, shapes, strides)
    timed ``repeats`` times on the same fresh tensors (operands in cache, as in an update
    where the previous op has just written them), median, times how often it occurs."""
    total = 0.0
    for (name, layout), count in Counter(calls).items():
        tensors = [torch.empty_strided(shape, stride).normal_() for shape, stride in layout]
        op = MATMUL_OPS[name]
        op(*tensors)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            op(*tensors)
            times.append(time.perf_counter() - t0)
        total += count * statistics.median(times)
    return 1e3 * total


def matmuls_made(update: Callable[[], object]) -> Counter:
    """``(op, shapes of the two matrix operands)`` of every matmul-type call one ``update``
    makes, counted, as ``torch.profiler`` sees them (a compiled update's too, unlike a dispatch
    mode, under which dynamo runs the function eagerly). The added term of addmm / baddbmm is
    left out: a compiled update may pass it expanded where eager broadcasts it."""
    from torch.profiler import ProfilerActivity, profile

    operands = {"mm": 2, "bmm": 2, "addmm": 3, "baddbmm": 3}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        update()
    made: Counter = Counter()
    for event in prof.events():
        op = event.name.removeprefix("aten::")
        if op in operands:
            shapes = [tuple(shape) for shape in event.input_shapes if shape][:operands[op]]
            made[(op, tuple(shapes[-2:]))] += 1
    return made


def timed(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


# Kind of work of an operator or fused kernel, by the first pattern its name contains (inductor
# names a fused kernel after the ATen ops in it: GELU is a sigmoid form there, tql.model.gelu_tanh).
KINDS = (("matmul", ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")),
         ("softmax and entropies", ("softmax",)),
         ("GELU", ("gelu", "sigmoid")),
         ("layer norm", ("layer_norm",)),
         ("optimiser", ("adam", "optimizer", "lerp", "zero_grad")),
         ("copies and layout changes", ("clone", "permute", "transpose", "aten::copy_", "cat")))


def kind_of(op: str) -> str:
    name = op.lower()
    for kind, patterns in KINDS:
        if any(pattern in name for pattern in patterns):
            return kind
    return "other (elementwise, dispatch, autograd, Python)"


def by_kind(rows: list[dict]) -> list[dict]:
    """``operator_table``'s rows (all of them) summed by ``kind_of``, largest first."""
    totals: Counter = Counter()
    for row in rows:
        if row["op"] != "(all)":
            totals[kind_of(row["op"])] += row["ms_per_update"]
    whole = sum(totals.values())
    return [{"kind": kind, "ms_per_update": ms, "share": ms / whole} for kind, ms in totals.most_common()]


def operator_table(agent: TQLAgent, sampler: ReplaySampler, target: torch.Tensor, updates: int,
                   top: int | None) -> list[dict]:
    """Self CPU time per update of the ``top`` operators (all with None), and their sum."""
    from torch.profiler import ProfilerActivity, profile

    step = lambda: agent.update(sampler.sample(agent.config.batch_size), target)  # noqa: E731
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [{"op": e.key, "ms_per_update": e.self_cpu_time_total / 1e3 / updates,
             "calls_per_update": e.count / updates, "share": e.self_cpu_time_total / total} for e in events[:top]]
    rows.append({"op": "(all)", "ms_per_update": total / 1e3 / updates,
                 "calls_per_update": sum(e.count for e in events) / updates, "share": 1.0})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="training profile whose agent and batch are measured")
    p.add_argument("--obs-dim", type=int, default=37, help="cube-double: 37 (n = 43 tokens)")
    p.add_argument("--act-dim", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (medians)")
    p.add_argument("--inner", type=int, default=10, help="calls per timed sample")
    p.add_argument("--profile-updates", type=int, default=20, help="updates under torch.profiler")
    p.add_argument("--top", type=int, default=15, help="operators listed")
    p.add_argument("--kernel-names", action="store_true", help="name inductor's fused kernels in the compiled table")
    common.add_json_option(p)
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    if args.kernel_names:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
        inductor_config.cpp.descriptive_names = "original_aten"

    agents, parts, updates = {}, {}, {}
    for mode in ("eager", "compiled"):
        agent, transitions = profile_agent(args.profile, args.obs_dim, args.act_dim, mode == "compiled")
        sampler = random_sampler(transitions, args.obs_dim, args.act_dim)
        comps = Components(agent, sampler, mode == "compiled")
        agents[mode] = (agent, sampler, comps.target)
        parts[mode] = comps.closures()
        updates[mode] = lambda a=agent, s=sampler, t=comps.target: a.update(s.sample(a.config.batch_size), t)
    calls, flops = {}, {}
    for name, fn in [*parts["eager"].items(), ("update", updates["eager"])]:
        with MatmulRecorder() as rec:
            fn()
        calls[name], flops[name] = rec.calls, sum(matmul_flops(*c) for c in rec.calls)
    for _ in range(3):  # compiled before its matmuls are counted
        updates["compiled"]()
    # The whole update's matmuls (recorded last), as many of them as the compiled update makes.
    chain = MatmulChain.of_calls_made(rec.calls, rec.addresses, matmuls_made(updates["compiled"]))

    fns = {("update", "eager"): updates["eager"], ("update", "compiled"): updates["compiled"],
           ("update", "chain"): chain}
    for name in COMPONENTS:
        fns[(name, "eager")], fns[(name, "compiled")] = parts["eager"][name], parts["compiled"][name]
    warm = {}
    for key, fn in fns.items():  # warm-up (compilation) untimed
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        warm[key] = time.perf_counter() - t0
    samples: dict = {k: [] for k in fns}
    for r in range(args.repeats):
        for key in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            samples[key].append(timed(fns[key], args.inner))
        for name in (*COMPONENTS, "update"):
            samples.setdefault((name, "floor"), []).append(matmul_floor_ms(calls[name]) / 1e3)
    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    over_chain = statistics.median(c / m for c, m in zip(samples[("update", "compiled")], samples[("update", "chain")]))

    rows = []
    for name in (*COMPONENTS, "update"):
        floor = ms[(name, "floor")] if flops[name] else 0.0
        rows.append({"component": name, "eager_ms": ms[(name, "eager")], "compiled_ms": ms[(name, "compiled")],
                     "gflop": flops[name] / 1e9, "matmul_floor_ms": floor,
                     "floor_gflop_per_s": flops[name] / floor / 1e6 if floor else None,
                     "not_arithmetic_compiled_ms": ms[(name, "compiled")] - floor})
    every_op = {mode: operator_table(*agents[mode], args.profile_updates, None) for mode in ("eager", "compiled")}
    ops = {mode: table[:args.top] + table[-1:] for mode, table in every_op.items()}
    kinds = {mode: by_kind(table) for mode, table in every_op.items()}
    result = {"profile": args.profile, "threads": args.threads,
              "load_avg": [round(x, 2) for x in os.getloadavg()],
              "kernel_names": args.kernel_names, "components": rows, "operators": ops, "kinds": kinds,
              "matmul_chain": {"calls": len(chain.steps), "operand_mb": chain.megabytes,
                               "ms": ms[("update", "chain")], "compiled_over_chain": over_chain,
                               "calls_by_op": dict(Counter(name for name, _ in chain.calls)),
                               "eager_calls": len(calls["update"])},
              "ms_samples": {f"{k[0]}/{k[1]}": [1e3 * s for s in v] for k, v in samples.items()}}
    print_result(result)
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


def print_result(result: dict) -> None:
    print(f"profile={result['profile']} threads={result['threads']} load_avg={result['load_avg']}")
    print(f"{'component':>13} {'eager ms':>9} {'compiled':>9} {'GFLOP':>7} {'mm floor':>9} {'floor GF/s':>10} "
          f"{'compiled - floor':>16}")
    for r in result["components"]:
        rate = f"{r['floor_gflop_per_s']:.0f}" if r["floor_gflop_per_s"] else "-"
        if r["component"] == "update":
            print("-" * 80)
        print(f"{r['component']:>13} {r['eager_ms']:>9.2f} {r['compiled_ms']:>9.2f} {r['gflop']:>7.3f} "
              f"{r['matmul_floor_ms']:>9.2f} {rate:>10} {r['not_arithmetic_compiled_ms']:>16.2f}")
    print("components timed alone (their sum exceeds the update: each call pays its own dispatch); mm floor: the "
          "component's recorded matmuls, each at its best at its own shapes (operands in cache)")
    chain = result.get("matmul_chain")
    if chain:
        compiled = next(r["compiled_ms"] for r in result["components"] if r["component"] == "update")
        by_op = ", ".join(f"{n} {name}" for name, n in chain["calls_by_op"].items())
        print(f"matmul chain: the compiled update's {chain['calls']} matmuls ({by_op}; the eager update makes "
              f"{chain['eager_calls']}) one after another on buffers laid out as the update's own "
              f"({chain['operand_mb']:.0f} MB), nothing else: {chain['ms']:.2f} ms.\n"
              f"  compiled update / chain: {chain['compiled_over_chain']:.2f}x (median of rounds); inside the update "
              f"the matmuls find operands in cache (update_limit.py); 1.8x the update: {compiled / 1.8:.2f} ms")
    for mode, rows in result["operators"].items():
        print(f"\noperators, {mode} update (torch.profiler, self CPU time per update)")
        for r in rows:
            print(f"  {r['op'][:70]:<70} {r['ms_per_update']:>8.2f} ms {r['calls_per_update']:>7.1f} calls "
                  f"{100 * r['share']:>5.1f}%")
    for mode, rows in result.get("kinds", {}).items():
        print(f"\nby kind of work, {mode} update (every operator and kernel above and below the top ones)")
        for r in rows:
            print(f"  {r['kind']:<50} {r['ms_per_update']:>8.2f} ms {100 * r['share']:>5.1f}%")


if __name__ == "__main__":
    main()
