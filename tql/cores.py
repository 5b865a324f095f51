"""How one process spreads an update over the CPU cores it is given.

A `cpu`-profile update is a chain of small ops (matrices of 128 x 256 or 5,504 x 32). Two
intra-op threads share each of them badly: every op forks and joins the thread team, and
the elementwise ops are too short to amortise it. The update has two independent halves
(the critic branch and the policy branch, ``TQLAgent.critic_losses`` / ``policy_losses``),
so on a CPU with two or more threads they run at the same time, each on half the threads
(benchmarks/speed/update_profile.py measures it; the figures are in benchmarks/speed/README.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["CorePlan", "branch_plan", "apply_plan", "available_cpus", "release_gil_in_compiled_kernels"]


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CorePlan:
    """``threads``: torch's intra-op threads; ``concurrent_branches``: the update's two
    branches at the same time (each then runs on ``threads`` threads of its own)."""

    threads: int
    concurrent_branches: bool

    @property
    def cores(self) -> int:
        return self.threads * (2 if self.concurrent_branches else 1)


def branch_plan(device: torch.device | str, threads: int | None = None) -> CorePlan:
    """The plan for ``threads`` cores (default: the cores this process may use) on ``device``:
    on a CPU with >= 2 of them, two concurrent branches on half the threads each; otherwise
    (one core, a GPU) one branch on all of them."""
    cores = threads or available_cpus()
    if torch.device(device).type == "cpu" and cores >= 2:
        return CorePlan(threads=cores // 2, concurrent_branches=True)
    return CorePlan(threads=cores, concurrent_branches=False)


def apply_plan(plan: CorePlan) -> None:
    """Sets torch's intra-op threads (process-wide; threads started later inherit it)."""
    torch.set_num_threads(plan.threads)


# Inductor's Python binding of a compiled CPU kernel, as torch 2.13 writes it: the kernel runs
# holding the GIL. The replacement parses the arguments with the GIL (they are Python objects),
# then runs the kernel without it (it touches raw tensor memory only); RAII re-takes the GIL
# even if the kernel throws.
_INDUCTOR_CALL = "kernel({}); Py_RETURN_NONE;"
_NO_GIL_HELPER = """
struct TqlNoGil {{ PyThreadState* state; TqlNoGil() : state(PyEval_SaveThread()) {{}}
                   ~TqlNoGil() {{ PyEval_RestoreThread(state); }} }};
template <typename F, typename... A> static inline void tql_call_without_gil(F f, A... a) {{ TqlNoGil g; f(a...); }}
"""


def release_gil_in_compiled_kernels() -> bool:
    """Let torch.compile's CPU kernels run without the GIL (process-wide, for kernels compiled
    from now on), so two threads' compiled code runs at the same time; otherwise the
    concurrent branches of an update take turns in every fused kernel. Returns whether it is
    in effect: only where inductor writes its bindings as this code expects (torch 2.13), so
    another torch keeps its own (correct, slower) bindings."""
    try:
        from torch._inductor.codecache import CppPythonBindingsCodeCache as bindings
    except ImportError:
        return False
    if bindings.call_entry_function == _INDUCTOR_CALL and bindings.extra_parse_arg == "":
        bindings.extra_parse_arg = _NO_GIL_HELPER
        bindings.call_entry_function = "tql_call_without_gil(kernel, {}); Py_RETURN_NONE;"
    return "tql_call_without_gil" in bindings.call_entry_function
