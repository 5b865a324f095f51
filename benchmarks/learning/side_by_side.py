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

    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        return list(pool.map(fn, [args] * len(calls), *zip(*calls)))


def die_with_parent() -> None:
    """In a worker: end when the sweep's process ends. A killed sweep otherwise leaves its
    workers training the runs already handed to them, beside the sweep that resumes it
    (Linux's PR_SET_PDEATHSIG; elsewhere nothing changes)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
