"""One training step replayed from a CUDA graph: the update without Python or launch overhead.

On a GPU a small agent's eager update is bound by Python and kernel launches, not by the
GPU (docs/published.md: ~50 updates/s at 0.4M whatever the batch size). ``GraphedStep`` runs a
step function (sample a batch on the device, draw the noise, losses, backward, fused Adam(W)
with the schedule as device tensors, temperature clip, target EMA) eagerly for a few warm-up
calls, captures one call into a CUDA graph, and from then on replays the graph. Replaying
runs the recorded kernels on the same memory: the parameters, optimiser state and schedule
counter change in place, and the returned metrics are static tensors overwritten by every
replay (the loop reads them only at log intervals, which is the only host sync).

What may change between replays is copied into static tensors in place: H̄ (the step's one
input, ``[depth, 2]`` or ``[K, depth, 2]``), and anything the caller itself changes in place
(PBT's member copies). Random draws come from the device generators, which the graph
advances on every replay (custom generators are registered with the graph).

Guards, never a wrong result: a step that cannot be replayed as captured - an input of
another shape, a capture that fails - runs eagerly from then on, after one warning line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tql.errors import ConfigError

CUDA_GRAPH_MODES = ("auto", "on", "off")
WARMUP_STEPS = 3  # eager calls before capture: lazy optimiser state, compilation, cuBLAS workspaces

Step = Callable[[Tensor], dict[str, Tensor]]


def use_cuda_graph(mode: str, device: torch.device) -> bool:
    """Whether a run on ``device`` captures its step: ``auto`` does on CUDA, ``on`` must."""
    if mode not in CUDA_GRAPH_MODES:
        raise ConfigError(f"cuda_graph {mode!r} is not one of: {', '.join(CUDA_GRAPH_MODES)}")
    if mode == "on" and device.type != "cuda":
        raise ConfigError(f"--cuda-graph on needs a CUDA device, this run is on {device}; use auto or off")
    return mode != "off" and device.type == "cuda"


class CudaCapture:
    """Captures with ``torch.cuda.CUDAGraph``; warm-up calls run on a side stream, as the
    torch documentation's whole-network capture does."""

    def __init__(self, device: torch.device, generators: Sequence[torch.Generator] = ()) -> None:
        self.device, self.generators = device, list(generators)
        self.graph: Any = None

    def warm_up(self, run: Callable[[], Any]) -> Any:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def capture(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        """Record ``run`` (nothing executes) and return (replay, the recorded outputs).

        A capture that fails leaves every generator it registered (ours and the device's
        default one) in capture mode: torch marks them as capturing when the capture begins
        and clears the mark only when it ends well, so every later draw, eager ones too,
        raises "Offset increment outside graph capture". Each generator's state is therefore
        cloned before, and put back in its place when the capture fails: the eager updates
        that follow draw exactly what they would have drawn had no capture been tried."""
        self.graph = torch.cuda.CUDAGraph()
        generators = [g for g in self.generators if g.device.type == "cuda"]
        for generator in generators:
            self.graph.register_generator_state(generator)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        generators.append(torch.cuda.default_generators[index])
        saved = [generator.clone_state() for generator in generators]
        try:
            with torch.cuda.graph(self.graph):
                out = run()
        except BaseException:
            for generator, state in zip(generators, saved):
                generator.graphsafe_set_state(state)
            self.graph = None
            raise
        return self.graph.replay, out


class GraphedStep:
    """``step(target) -> metrics``, eager for ``warmup`` calls, then replayed from a graph.

    ``capture``: the capture backend (``CudaCapture`` for a CUDA device; tests pass a
    stand-in with the same two methods). ``warn``: where the one fallback line goes.
    Every call, warm-up and replay alike, is one real update.
    """

    def __init__(self, step: Step, capture: Any, warmup: int = WARMUP_STEPS,
                 warn: Callable[[str], None] | None = None) -> None:
        if warmup < 1:
            raise ValueError(f"warmup={warmup} must be >= 1 (the first calls initialise what the graph records)")
        self.step, self.backend, self.warmup = step, capture, warmup
        self.warn = warn or (lambda text: warnings.warn(text, RuntimeWarning, stacklevel=3))
        self.calls, self.eager_only = 0, False
        self._static: Tensor | None = None
        self._replay: Callable[[], None] | None = None
        self._outputs: dict[str, Tensor] | None = None

    @property
    def captured(self) -> bool:
        return self._replay is not None

    def __call__(self, target: Tensor) -> dict[str, Tensor]:
        if self.eager_only:
            return self.step(target)
        if self._static is None:
            self._static = target.detach().clone()
        elif (target.shape, target.dtype, target.device) != (self._static.shape, self._static.dtype, self._static.device):
            self._fall_back(self.calls + 1, f"H̄ changed from {tuple(self._static.shape)} {self._static.dtype} to "
                                            f"{tuple(target.shape)} {target.dtype}")
            return self.step(target)
        if target is not self._static:
            self._static.copy_(target)
        self.calls += 1
        if self.calls <= self.warmup:
            return self.backend.warm_up(lambda: self.step(self._static))
        if self._replay is None:
            try:
                self._replay, self._outputs = self.backend.capture(lambda: self.step(self._static))
            except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly, correctly
                self._fall_back(self.calls, f"capture failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                return self.step(self._static)
        self._replay()
        return self._outputs

    def _fall_back(self, update: int, why: str) -> None:
        self.warn(f"CUDA graph off from update {update}: {why}; continuing eagerly")
        self.eager_only, self._replay, self._outputs = True, None, None


class Uploader:
    """Host values (H̄ tables) to fresh device tensors without a host sync.

    A copy from ordinary (pageable) host memory to a GPU waits for the device to finish its
    queued work first; with a schedule that moves H̄ at every update that would be one sync
    per update. Here each value goes into one of ``slots`` pinned host buffers and is copied
    asynchronously; a buffer is rewritten only after its last copy has run (a CUDA event),
    so the host may run up to ``slots`` updates ahead of the device. On a CPU: a plain tensor.
    """

    def __init__(self, device: torch.device, slots: int = 8) -> None:
        self.device, self.slots, self.next = device, slots, 0
        self._buffers: dict[tuple[int, tuple[int, ...]], Tensor] = {}
        self._events: list[Any] = [None] * slots

    def __call__(self, values: Any, shape: tuple[int, ...]) -> Tensor:
        host = torch.tensor(values, dtype=torch.float32).reshape(shape)
        if self.device.type != "cuda":
            return host.to(self.device)
        slot, self.next = self.next, (self.next + 1) % self.slots
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # only waits if the device is `slots` updates behind
        key = (slot, tuple(host.shape))
        if key not in self._buffers:
            self._buffers[key] = torch.empty(host.shape, dtype=torch.float32, pin_memory=True)
        staged = self._buffers[key].copy_(host)
        out = torch.empty(host.shape, dtype=torch.float32, device=self.device).copy_(staged, non_blocking=True)
        self._events[slot] = torch.cuda.Event()
        self._events[slot].record()
        return out


def make_step(step: Step, device: torch.device, mode: str, generators: Sequence[torch.Generator] = (),
              warn: Callable[[str], None] | None = None) -> Step:
    """``step`` itself, or a ``GraphedStep`` around it when ``mode`` and ``device`` say so."""
    if not use_cuda_graph(mode, device):
        return step
    return GraphedStep(step, CudaCapture(device, generators), warn=warn)


__all__ = ["CUDA_GRAPH_MODES", "WARMUP_STEPS", "CudaCapture", "GraphedStep", "Uploader", "make_step",
           "use_cuda_graph"]
