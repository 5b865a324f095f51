"""A few seconds' measurement of this machine's speeds, for sizing an experiment to a budget.

Measured: updates/s of the profile's agent (random batches, eager), the evaluation env's
steps/s under random actions and its creation time. Derived, not measured (to keep the probe
short):

- data generation at 3/4 of the env-step rate (the oracle's planning on top of MuJoCo:
  benchmarks/speed/results/data_speed.txt vs eval_speed.txt, ~450 vs ~590 per process);
- on a CPU, runs long enough to compile (``tql.agent.COMPILE_MIN_STEPS``): updates at 1.4x
  the eager rate, and 4 s more per run for the compilation, the inductor cache warm
  (benchmarks/speed/results/compile_cost.txt, `cpu` profile: 1.39x on one thread, 1.46x on
  two; 3.5-3.7 s warm. A machine's first compiled run per thread count takes about a minute
  more, cold, which the model leaves out);
- a CPU population member at the single-run rate / 1.2 eager (eager members are
  compute-bound: results/population_speed.txt, 1.1-1.4x slower), at the single-run rate
  compiled (a compiled population of 4 runs at 1.02x four compiled runs one after another:
  results/update_speed_cpu_cores.txt).

On CUDA the probe times eager updates, so it underestimates runs that replay CUDA graphs.

With ``workers`` W > 1 (the runs of ``--workers``, on a CPU) the update rate is one run's
while W - 1 others train beside it: W processes of cores / W threads time their updates at
once, and the rate is their mean (two one-thread runs on two cores each go slower than one
alone: they share the memory bandwidth and the caches).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

from autotune.experiment.spec import Machine
from tql.tasks import TaskSpec

DATA_PER_ENV_STEP = 0.75
CPU_POPULATION_SLOWDOWN = {"eager": 1.2, "compiled": 1.0}
CPU_COMPILED_SPEEDUP = 1.4
CPU_COMPILE_SECONDS = 4.0


def probe_machine(task: TaskSpec, profile: str, device: str = "auto", threads: int | None = None,
                  seconds: float = 2.0, workers: int = 1) -> Machine:
    """This machine's speeds for ``profile``'s agent on ``task`` (a few seconds in all), with
    the torch threads the runs will use (too many threads on a busy CPU are much slower) and
    ``workers`` runs side by side (a CPU's ``--workers``; CUDA: 1)."""
    import torch

    from tql.trainer import resolve_device

    torch_device = resolve_device(device)
    workers = 1 if torch_device.type != "cpu" else workers
    if workers > 1:
        from tql.data import available_cpus

        each = threads or max(1, available_cpus() // workers)
        updates = sum(update_rates_side_by_side(task, profile, workers, each, seconds)) / workers
    else:
        if threads:
            torch.set_num_threads(threads)
        updates = _update_rate(task, profile, torch_device, seconds)
    env_rate, env_startup = _env_rate(task, seconds / 2)
    where = "this machine" + (f" ({torch_device.type})" if torch_device.type != "cpu" else "")
    return Machine(name=where, **update_rates(updates, torch_device),
                   eval_env_steps_per_second=round(env_rate, 1), eval_processes=_eval_processes(torch_device),
                   data_transitions_per_second=round(DATA_PER_ENV_STEP * env_rate, 1),
                   processes=os.cpu_count() or 1, run_overhead_seconds=round(env_startup + 1.0, 2),
                   workers=workers)


def update_rates(eager: float, device) -> dict[str, Any]:
    """The Machine's update rates from the probe's eager updates/s: on a CPU a population
    member's, and from COMPILE_MIN_STEPS on the compiled rates and the compilation's seconds."""
    if device.type != "cpu":
        return {"updates_per_second": round(eager, 1), "member_updates_per_second": round(eager, 1)}
    from tql.agent import COMPILE_MIN_STEPS

    compiled = eager * CPU_COMPILED_SPEEDUP
    return {"updates_per_second": round(eager, 1),
            "member_updates_per_second": round(eager / CPU_POPULATION_SLOWDOWN["eager"], 1),
            "compile_min_steps": COMPILE_MIN_STEPS["cpu"], "compiled_updates_per_second": round(compiled, 1),
            "compiled_member_updates_per_second": round(compiled / CPU_POPULATION_SLOWDOWN["compiled"], 1),
            "compile_seconds": CPU_COMPILE_SECONDS}


def update_rates_side_by_side(task: TaskSpec, profile: str, workers: int, threads: int,
                              seconds: float) -> list[float]:
    """Updates/s of ``workers`` CPU processes (``threads`` torch threads each) timing their
    updates at the same time: each warms up, waits for the others, then times."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters, as the workers of `run` and `compare`
    queue, ready = ctx.Queue(), ctx.Barrier(workers)
    procs = [ctx.Process(target=_rate_in_worker, args=(task.name, profile, threads, seconds, ready, queue))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        answers = [queue.get(timeout=PROBE_TIMEOUT) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=PROBE_TIMEOUT)
            if proc.is_alive():
                proc.terminate()
    errors = [answer for answer in answers if isinstance(answer, str)]
    if errors:
        raise RuntimeError(f"the speed probe's worker failed: {errors[0]}")
    return answers


PROBE_TIMEOUT = 300.0  # seconds a probe worker may take to import, build, warm up and time


def _rate_in_worker(task_name: str, profile: str, threads: int, seconds: float, ready, queue) -> None:
    """One probe worker: its updates/s (a float) or its error (a string) into ``queue``."""
    try:
        import torch

        from tql.tasks import get_task

        torch.set_num_threads(threads)
        queue.put(_update_rate(get_task(task_name), profile, torch.device("cpu"), seconds,
                               before_timing=lambda: ready.wait(timeout=PROBE_TIMEOUT)))
    except BaseException as exc:  # the parent waits for an answer from every worker
        ready.abort()
        queue.put(f"{type(exc).__name__}: {exc}")


def _eval_processes(device) -> int:
    """What eval_workers 'auto' gives a run here (tql.eval_workers.resolve_eval_workers)."""
    from tql.eval_workers import resolve_eval_workers

    return resolve_eval_workers("auto", device, episodes=1_000)


def _update_rate(task: TaskSpec, profile: str, device, seconds: float,
                 before_timing: Callable[[], Any] | None = None) -> float:
    import torch

    from tql.agent import TQLAgent
    from tql.trainer import TrainConfig

    config = TrainConfig.from_profile(task.name, profile, {"compile": False}).agent
    torch.manual_seed(0)
    agent = TQLAgent(task.obs_dim, task.act_dim, config, device, total_steps=1000)
    batch = random_batch(config.batch_size, task, device)
    target = 0.6 * math.log(task.n_tokens)
    for _ in range(2):  # warm-up: allocator, first-call costs
        agent.update(batch, target)
    if before_timing is not None:
        before_timing()
    done, start = 0, time.perf_counter()
    while done < 3 or (time.perf_counter() - start < seconds and done < 200):
        metrics = agent.update(batch, target)
        done += 1
    float(next(iter(metrics.values())))  # wait for the device
    return done / (time.perf_counter() - start)


def random_batch(batch_size: int, task: TaskSpec, device) -> dict:
    import torch

    g = torch.Generator().manual_seed(1)
    batch = {"observations": torch.randn(batch_size, task.obs_dim, generator=g),
             "actions": torch.rand(batch_size, task.act_dim, generator=g) * 2 - 1,
             "next_observations": torch.randn(batch_size, task.obs_dim, generator=g),
             "rewards": -torch.rand(batch_size, generator=g).round(), "masks": torch.ones(batch_size)}
    return {k: v.to(device) for k, v in batch.items()}


def _env_rate(task: TaskSpec, seconds: float) -> tuple[float, float]:
    """(env steps/s under random actions, seconds to create the env and reset it once)."""
    import numpy as np

    import gymnasium  # noqa: F401  (imports are paid once per process, not per run)
    import ogbench  # noqa: F401

    from tql.evaluation import EnvPool

    start = time.perf_counter()
    with EnvPool(task.env_name, 1) as pool:
        env = pool.envs[0]
        env.reset(seed=0)
        startup = time.perf_counter() - start
        rng = np.random.default_rng(0)
        steps, start = 0, time.perf_counter()
        while steps < 50 or (time.perf_counter() - start < seconds and steps < 5000):
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, task.act_dim).astype(np.float32))
            steps += 1
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start), startup
