"""A trained agent's evaluation episodes, in this process or spread over worker processes.

A final evaluation of 50 full-length episodes steps MuJoCo 50,000 times, one env after
another: on a GPU run that can take as long as the training. ``PolicyEvaluator`` spreads
the episodes over ``workers`` processes, each with its own env pool and batched policy
calls, and merges their results in episode order. Every evaluation of a run uses it (the
periodic ones too), with the processes started at the first evaluation and kept until the
trainer closes the evaluator: creating an OGBench env costs about 1 s.

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
from typing import Any

import numpy as np
import torch

from tql.data.generate import available_cpus as available_cores  # the cores this process may use
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


def split_episodes(episodes: int, workers: int) -> list[list[int]]:
    """Episode numbers per worker, dealt in turn (0, W, 2W, ... to the first), no empty share."""
    return [list(range(w, episodes, workers)) for w in range(min(workers, episodes))]


def _worker_main(conn: Any, task: TaskSpec, num_envs: int) -> None:
    """A worker process: one env pool, then (actor, episodes) requests until ``None``."""
    torch.set_num_threads(1)  # one core per worker: the parallelism is across processes
    try:
        pool = EnvPool(task.env_name, num_envs)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    with pool:
        while (request := conn.recv()) is not None:
            actor_bytes, numbers, seed, noise, max_steps = request
            try:
                result = run_episode_numbers(ActorPolicy.from_bytes(actor_bytes), pool, task, numbers, seed,
                                             max_steps, noise=noise)
                conn.send(("ok", result))
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

    def receive(self) -> EvalResult:
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
    """Runs an actor's evaluation episodes of one task with ``workers`` processes (1: here).

    ``episodes`` (a run's usual count) sizes the env pools: here ``min(episodes, 16)`` envs;
    with workers, ``ceil(episodes / workers)`` per worker (at most 16), so each worker runs
    its share in one wave. Pools and processes start at the first ``run`` and last until
    ``close`` (also a context manager).
    """

    def __init__(self, task: TaskSpec, episodes: int, workers: int = 1):
        check_eval_workers(workers)
        if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
            raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
        self.task, self.episodes, self.workers = task, episodes, max(1, min(int(workers), episodes))
        self._pool: EnvPool | None = None
        self._workers: list[_Worker] = []

    def run(self, actor: torch.nn.Module, episodes: int, seed: int, noise_seed: int,
            max_steps: int | None = None) -> EvalResult:
        """``episodes`` episodes of ``actor`` (env seeds from ``seed``, noise from ``noise_seed``)."""
        start = time.perf_counter()
        policy, noise = ActorPolicy(actor), EpisodeNoise(noise_seed, self.task.act_dim)
        if self.workers == 1:
            if self._pool is None:
                self._pool = EnvPool(self.task.env_name, min(self.episodes, DEFAULT_MAX_ENVS))
            result = run_episodes(policy, self._pool, self.task, episodes, seed, max_steps, noise=noise)
        else:
            result = self._run_in_workers(policy, episodes, seed, noise, max_steps)
        result.seconds = time.perf_counter() - start
        return result

    def _run_in_workers(self, policy: ActorPolicy, episodes: int, seed: int, noise: EpisodeNoise,
                        max_steps: int | None) -> EvalResult:
        if not self._workers:
            self._start_workers()
        shares = split_episodes(episodes, len(self._workers))
        actor_bytes = policy.to_bytes()
        try:
            for worker, numbers in zip(self._workers, shares):
                worker.send((actor_bytes, numbers, seed, noise, max_steps))
            parts = [(numbers, worker.receive()) for worker, numbers in zip(self._workers, shares)]
        except BaseException:
            self.close()  # replies left unread would answer the next request: start afresh
            raise
        return merge_results(self.task, parts, seconds=0.0)

    def _start_workers(self) -> None:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/CUDA/MuJoCo state
        envs_each = min(math.ceil(self.episodes / self.workers), DEFAULT_MAX_ENVS)
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
