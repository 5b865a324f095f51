"""Dataset generation speed (transitions/s, 1 vs W processes) and the loaded dataset's memory.

Generates a small dataset with ``tql.data.generate_dataset`` (OGBench's scripted oracles in
MuJoCo) into a temporary folder, once with one process and once with ``--workers`` W
processes (default: every core), timing both; prints the parallel speed-up and its ratio to
W (the goal is >= 0.8), and checks that both files hold the same arrays. Loads it with
``tql.data.load_task_data`` and builds a ``tql.data.ReplaySampler``; reports bytes per
transition of the loaded ``TaskData.train`` arrays (all keys; with ``--keep-info`` also
qpos / qvel) and of the sampler's float32 tensors, and extrapolates both to OGBench's 1M
transitions (``--extrapolate``). Also times ``ReplaySampler.sample(batch)`` (batches/s),
the only data work inside the training loop.

    python -m benchmarks.speed.data_speed --task cube-double-play-singletask-task2-v0 \\
        --episodes 2 --episode-length 201 --json benchmarks/speed/results/data_speed.json

For a meaningful speed-up give every worker many episodes (e.g. ``--episodes 160`` for 16
workers): process start-up (imports, MuJoCo compilation) is paid once per worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from tql.data import (
    META_KEY,
    ReplaySampler,
    available_cpus,
    generate_dataset,
    load_task_data,
    read_generated_meta,
)
from tql.tasks import get_task


def _arrays_nbytes(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    return {k: int(v.nbytes) for k, v in arrays.items() if isinstance(v, np.ndarray)}


def _same_arrays(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        keys = [k for k in x.files if k != META_KEY]
        return keys == [k for k in y.files if k != META_KEY] and all(np.array_equal(x[k], y[k]) for k in keys)


def _time_generation(task, out: Path, args, seed: int, workers: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    paths = generate_dataset(task, out, episodes=args.episodes, episode_length=args.episode_length, seed=seed,
                             progress=False, workers=workers)
    return time.perf_counter() - t0, paths


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    p.add_argument("--episodes", type=int, default=2, help="training episodes (+ max(1, episodes // 10) val)")
    p.add_argument("--episode-length", type=int, default=201)
    p.add_argument("--repeats", type=int, default=1, help="generations per worker count (medians reported)")
    p.add_argument("--workers", type=int, default=available_cpus(),
                   help="processes of the parallel generation (default: every core), timed against one")
    p.add_argument("--keep-info", action="store_true", help="load qpos/qvel too (as evaluation relabelling does)")
    p.add_argument("--batch-size", type=int, default=256, help="for the sampling rate")
    p.add_argument("--extrapolate", type=int, default=1_000_000, help="transitions to extrapolate memory to")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="ReplaySampler device")
    common.add_json_option(p, "the numbers")
    args = p.parse_args(argv)
    header = common.print_header(__file__, argv)
    torch.set_num_threads(args.threads)
    task = get_task(args.task)

    gen_s: list[float] = []
    par_s: list[float] = []
    loop_s: list[float] = []
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            seconds, paths = _time_generation(task, Path(tmp) / f"run{r}", args, r, 1)
            gen_s.append(seconds)
            # The generator's own timing: env creation and collection (no writing).
            loop_s.append(float(read_generated_meta(paths.train)["generation_seconds"]))
            seconds, parallel = _time_generation(task, Path(tmp) / f"par{r}", args, r, args.workers)
            par_s.append(seconds)
            same = same and all(_same_arrays(a, b) for a, b in zip(paths, parallel))
        n_val = max(1, args.episodes // 10)
        generated = (args.episodes + n_val) * args.episode_length  # steps recorded (as generate reports)
        file_bytes = sum(f.stat().st_size for f in (Path(tmp) / "run0").rglob("*.npz"))
        t0 = time.perf_counter()
        data = load_task_data(task, Path(tmp) / "run0", kind="generated", keep_info=args.keep_info)
        load_s = time.perf_counter() - t0

    train = data.train
    n_train = len(train["observations"])
    by_key = _arrays_nbytes(train)
    task_bytes = sum(by_key.values())
    sampler = ReplaySampler(train, args.device)
    sampler_bytes = sampler.nbytes

    gen = torch.Generator(device=args.device).manual_seed(0)
    for _ in range(10):
        sampler.sample(args.batch_size, gen)
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(200):
            batch = sampler.sample(args.batch_size, gen)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(200 / (time.perf_counter() - t0))
    del batch

    sec, loop, par = statistics.median(gen_s), statistics.median(loop_s), statistics.median(par_s)
    workers = min(args.workers, args.episodes + n_val)
    speedup = sec / par
    x = args.extrapolate
    result = {
        "task": task.name, "obs_dim": task.obs_dim, "act_dim": task.act_dim,
        "episodes": args.episodes, "val_episodes": n_val, "episode_length": args.episode_length,
        "generated_steps": generated, "generation_s": sec, "generation_s_samples": gen_s,
        "transitions_per_s": generated / sec,
        "workers": workers, "parallel_generation_s": par, "parallel_generation_s_samples": par_s,
        "parallel_transitions_per_s": generated / par, "parallel_speedup": speedup,
        "parallel_efficiency": speedup / workers, "parallel_same_arrays": same,
        "loop_s": loop, "loop_transitions_per_s": generated / loop,
        "hours_for_extrapolated": x / (generated / loop) / 3600,
        "parallel_minutes_for_extrapolated": x / (generated / par) / 60,
        "npz_file_bytes": file_bytes, "load_s": load_s,
        "train_transitions": n_train, "keep_info": args.keep_info,
        "taskdata_train_bytes_by_key": by_key,
        "taskdata_bytes_per_transition": task_bytes / n_train,
        "sampler_bytes_per_transition": sampler_bytes / n_train,
        "extrapolate_transitions": x,
        "taskdata_mb_extrapolated": task_bytes / n_train * x / 2**20,
        "sampler_mb_extrapolated": sampler_bytes / n_train * x / 2**20,
        "sample_batch_size": args.batch_size, "sample_batches_per_s": statistics.median(rates),
        "device": args.device, "threads": args.threads, "load_avg": [round(v, 2) for v in os.getloadavg()],
    }
    print(f"task={task.name} obs_dim={task.obs_dim} act_dim={task.act_dim} load_avg={result['load_avg']}")
    print(f"generation: {generated} steps ({args.episodes}+{n_val} episodes x {args.episode_length}) in "
          f"{sec:.1f} s end to end -> {result['transitions_per_s']:.0f} transitions/s; generator's own timing "
          f"{loop:.1f} s -> {result['loop_transitions_per_s']:.0f} transitions/s "
          f"({result['hours_for_extrapolated']:.1f} h for {x:,} in one process)")
    print(f"parallel: {workers} workers {par:.1f} s -> {result['parallel_transitions_per_s']:.0f} transitions/s, "
          f"{speedup:.2f}x one process = {speedup / workers:.2f} x W (goal >= 0.8); "
          f"{result['parallel_minutes_for_extrapolated']:.1f} min for {x:,}; "
          f"same arrays as one process: {'yes' if same else 'NO'}")
    print(f"loaded train split: {n_train} transitions; load {load_s:.2f} s; npz files {file_bytes / 2**20:.2f} MB")
    print(f"TaskData.train: {result['taskdata_bytes_per_transition']:.0f} B/transition -> "
          f"{result['taskdata_mb_extrapolated']:.0f} MB per {x:,} "
          f"({', '.join(f'{k} {v / n_train:.0f}' for k, v in by_key.items())})")
    print(f"ReplaySampler tensors (float32): {result['sampler_bytes_per_transition']:.0f} B/transition -> "
          f"{result['sampler_mb_extrapolated']:.0f} MB per {x:,}")
    print(f"ReplaySampler.sample({args.batch_size}): {result['sample_batches_per_s']:.0f} batches/s on {args.device}")
    common.write_json(args.json, result, __file__, argv, header=header)
    return result


if __name__ == "__main__":
    main()
