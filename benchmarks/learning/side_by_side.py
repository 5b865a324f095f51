"""The learning sweeps' runs, in this process or side by side in ``--jobs`` processes."""

from __future__ import annotations

from collections.abc import Callable


def side_by_side(args, fn: Callable, calls: list[tuple]) -> list:
    """``fn(args, *call)`` for every call, in order: here when ``args.jobs`` is 1, otherwise in
    ``args.jobs`` spawned processes (each run sets its own threads, one in the sweeps)."""
    if args.jobs == 1:
        return [fn(args, *call) for call in calls]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(fn, [args] * len(calls), *zip(*calls)))
