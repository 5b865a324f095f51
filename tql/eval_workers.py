"""A trained agent's evaluation episodes, in this process or spread over worker processes.

A final evaluation of 50 full-length episodes steps MuJoCo 50,000 times, one env after
another: on a GPU run that can take as long as the training. ``PolicyEvaluator`` spreads
the episodes over ``workers`` processes, each with its own env pool and batched policy
calls, and merges their results in episode order. Every evaluation of a run uses it (the
periodic ones too), with the processes started at the first evaluation and kept until the
trainer closes the evaluator: creating an OGBench env costs about 1 s. ``run_many``
evaluates several policies at once (a batch's members): their episodes are dealt over the
processes together, so K evaluations of E < W episodes keep all W processes busy instead of
running one after another on E of them.

Results do not depend on the number of processes (nor on the training device):
- episode ``i`` is reset with ``episode_seed(seed, i)`` whichever process runs it;
- its policy noise comes from its own generator (``EpisodeNoise``), not from a batch's;
- the policy is a float64 CPU copy of the actor whose actions are rounded to float32.
  float32 matrix products differ in their last bits between batch sizes (different
  summation blocking), and MuJoCo turns such bits into different trajectories; float64
  differences (~1e-15) vanish when rounded to float32 (unless a value falls within 1e-15
  of a float32 rounding boundary: about once in 1e8 actions).
The float64 copy also evaluates a bf16-trained actor without bf16 rounding.
"""

from __future__ import annotations

import copy
import io
import math
import multiprocessing
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tql.data.collect import available_cpus as available_cores  # the cores this process may use
from tql.errors import ConfigError
from tql.evaluation import (DEFAULT_MAX_ENVS, EnvPool, EpisodeNoise, EvalResult, merge_results, run_episode_numbers,
                            run_episodes)
from tql.tasks import TaskSpec

EVAL_WORKERS_AUTO = "auto"


def check_eval_workers(value: Any) -> None:
    """``'auto'`` or an integer >= 1 (bools refused), else a ConfigError naming the value."""
    if value == EVAL_WORKERS_AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"eval_workers must be 'auto' or an integer >= 1, got {value!r}")


def parse_eval_workers(text: str) -> int | str:
    """The command line's ``--eval-workers`` value: ``auto`` or a positive integer."""
    value: int | str = int(text) if text.strip().lstrip("-").isdigit() else text.strip()
    check_eval_workers(value)
    return value


def resolve_eval_workers(value: int | str, device: torch.device, episodes: int, threads: int | None = None) -> int:
    """Processes an evaluation of ``episodes`` episodes uses.

    ``'auto'``: 1 (this process) when training on a CPU, whose cores the updates already
    use; on CUDA ``min(cores - 1, episodes, 16)``, the cores being the run's ``threads``
    share when it has one (several runs on one machine) else all this process may use.
    An integer is taken as given, at most one process per episode.
    """
    check_eval_workers(value)
    if value != EVAL_WORKERS_AUTO:
        return max(1, min(int(value), episodes))
    if device.type != "cuda" or multiprocessing.current_process().daemon:  # a daemon may not start processes
        return 1
    cores = threads or available_cores()
    return max(1, min(cores - 1, episodes, DEFAULT_MAX_ENVS))


class ActorPolicy:
    """The evaluation policy: ``clip(mu(s, z), -1, 1)`` by a float64 CPU copy of the actor,
    actions rounded to float32 (see the module docstring for why float64)."""

    def __init__(self, actor: torch.nn.Module):
        self.actor = copy.deepcopy(actor).to(device="cpu", dtype=torch.float64).eval()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        obs64 = torch.from_numpy(np.asarray(obs, dtype=np.float64))
        noise64 = torch.from_numpy(np.asarray(noise, dtype=np.float64))
        return self.actor(obs64, noise64).clamp(-1.0, 1.0).to(torch.float32).numpy()

    def to_bytes(self) -> bytes:
        """The actor (structure and weights) as bytes for a worker process."""
        buffer = io.BytesIO()
        torch.save(self.actor, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ActorPolicy":
        policy = cls.__new__(cls)
        policy.actor = torch.load(io.BytesIO(data), weights_only=False)
        return policy


@dataclass(frozen=True)
class EvalRequest:
    """One policy's evaluation: ``episodes`` episodes (env seeds from ``seed``, action noise
    from ``noise_seed``, at most ``max_steps`` steps each)."""

    policy: ActorPolicy
    episodes: int
    seed: int
    noise_seed: int
    max_steps: int | None = None

    @classmethod
    def of(cls, actor: torch.nn.Module, episodes: int, seed: int, noise_seed: int,
           max_steps: int | None = None) -> "EvalRequest":
        """A request for ``actor`` as it is now (copied: the module may change afterwards)."""
        return cls(ActorPolicy(actor), episodes, seed, noise_seed, max_steps)


def split_episodes(episodes: int, workers: int) -> list[list[int]]:
    """Episode numbers per worker, dealt in turn (0, W, 2W, ... to the first), no empty share."""
    return [list(range(w, episodes, workers)) for w in range(min(workers, episodes))]


def deal_requests(counts: list[int], workers: int) -> list[list[tuple[int, list[int]]]]:
    """Every request's episodes over at most ``workers`` shares of near-equal size (sizes differ
    by at most one): share w is a list of ``(request index, its episode numbers)``. One request
    is dealt in turn (``split_episodes``); several are cut in request order, so a share holds
    runs of few requests (fewer actors to send)."""
    if len(counts) == 1:
        return [[(0, numbers)] for numbers in split_episodes(counts[0], workers)]
    pairs = [(r, n) for r, count in enumerate(counts) for n in range(count)]
    shares = min(workers, len(pairs))
    bounds = [len(pairs) * w // shares for w in range(shares + 1)]
    dealt = []
    for lo, hi in zip(bounds, bounds[1:]):
        grouped: dict[int, list[int]] = {}
        for r, n in pairs[lo:hi]:
            grouped.setdefault(r, []).append(n)
        dealt.append(list(grouped.items()))
    return dealt


def _worker_main(conn: Any, task: TaskSpec, num_envs: int) -> None:
    """A worker process: one env pool, then lists of (actor, episode numbers, ...) parts until
    ``None``; each list is answered with the parts' results, in order."""
    torch.set_num_threads(1)  # one core per worker: the parallelism is across processes
    try:
        pool = EnvPool(task.env_name, num_envs)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    with pool:
        while (parts := conn.recv()) is not None:
            try:
                results = [run_episode_numbers(ActorPolicy.from_bytes(actor_bytes), pool, task, numbers, seed,
                                               max_steps, noise=noise)
                           for actor_bytes, numbers, seed, noise, max_steps in parts]
                conn.send(("ok", results))
            except Exception:
                conn.send(("error", traceback.format_exc()))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any, task: TaskSpec, num_envs: int, index: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, task, num_envs), daemon=True,
                                       name=f"tql-eval-{index}")
        self.process.start()
        child.close()
        self.index = index

    def send(self, request: tuple) -> None:
        try:
            self.conn.send(request)
        except OSError:
            pass  # a worker that failed has already sent why: ``receive`` reads it

    def receive(self) -> list[EvalResult]:
        try:
            status, payload = self.conn.recv()
        except EOFError:
            self.process.join(timeout=5)
            raise RuntimeError(f"evaluation worker {self.index} exited (exit code {self.process.exitcode})") from None
        if status != "ok":
            raise RuntimeError(f"evaluation worker {self.index} failed:\n{payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


class PolicyEvaluator:
    """Runs actors' evaluation episodes of one task with ``workers`` processes (1: here).

    ``episodes`` (one actor's usual count) and ``members`` (how many actors an evaluation asks
    at once, ``run_many``) size it: at most ``episodes x members`` processes; here one pool
    of ``min(episodes, 16)`` envs (the actors run one after another); with workers,
    ``ceil(episodes x members / workers)`` envs per worker (at most 16), so each worker runs
    its share in one wave. Pools and processes start at the first ``run`` and last until
    ``close`` (also a context manager).
    """

    def __init__(self, task: TaskSpec, episodes: int, workers: int = 1, members: int = 1):
        check_eval_workers(workers)
        for name, value in (("episodes", episodes), ("members", members)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self.task, self.episodes, self.members = task, episodes, members
        self.workers = max(1, min(int(workers), episodes * members))
        self._pool: EnvPool | None = None
        self._workers: list[_Worker] = []

    def run(self, actor: torch.nn.Module, episodes: int, seed: int, noise_seed: int,
            max_steps: int | None = None) -> EvalResult:
        """``episodes`` episodes of ``actor`` (env seeds from ``seed``, noise from ``noise_seed``)."""
        return self.run_many([EvalRequest.of(actor, episodes, seed, noise_seed, max_steps)])[0]

    def run_many(self, requests: list[EvalRequest]) -> list[EvalResult]:
        """Each request's result, as ``run`` gives it alone, its episodes run together with the
        others' over the processes. ``seconds`` of every result is this call's wall time."""
        if not requests:
            return []
        start = time.perf_counter()
        if self.workers == 1:
            results = [self._run_here(request) for request in requests]
        else:
            results = self._run_in_workers(requests)
        seconds = time.perf_counter() - start
        for result in results:
            result.seconds = seconds
        return results

    def _run_here(self, request: EvalRequest) -> EvalResult:
        if self._pool is None:
            self._pool = EnvPool(self.task.env_name, min(self.episodes, DEFAULT_MAX_ENVS))
        return run_episodes(request.policy, self._pool, self.task, request.episodes, request.seed, request.max_steps,
                            noise=EpisodeNoise(request.noise_seed, self.task.act_dim))

    def _run_in_workers(self, requests: list[EvalRequest]) -> list[EvalResult]:
        if not self._workers:
            self._start_workers()
        shares = deal_requests([r.episodes for r in requests], len(self._workers))
        actor_bytes: dict[int, bytes] = {}

        def part(index: int, numbers: list[int]) -> tuple:
            request = requests[index]
            if index not in actor_bytes:
                actor_bytes[index] = request.policy.to_bytes()
            noise = EpisodeNoise(request.noise_seed, self.task.act_dim)
            return actor_bytes[index], numbers, request.seed, noise, request.max_steps

        try:
            for worker, share in zip(self._workers, shares):
                worker.send([part(index, numbers) for index, numbers in share])
            replies = [worker.receive() for worker, _ in zip(self._workers, shares)]
        except BaseException:
            self.close()  # replies left unread would answer the next request: start afresh
            raise
        parts: list[list[tuple[list[int], EvalResult]]] = [[] for _ in requests]
        for share, results in zip(shares, replies):
            for (index, numbers), result in zip(share, results):
                parts[index].append((numbers, result))
        return [merge_results(self.task, request_parts, seconds=0.0) for request_parts in parts]

    def _start_workers(self) -> None:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/CUDA/MuJoCo state
        envs_each = min(math.ceil(self.episodes * self.members / self.workers), DEFAULT_MAX_ENVS)
        try:
            for index in range(self.workers):
                self._workers.append(_Worker(context, self.task, envs_each, index))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Closes the env pool and stops the worker processes (idempotent)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        while self._workers:
            self._workers.pop().close()

    def __enter__(self) -> "PolicyEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
