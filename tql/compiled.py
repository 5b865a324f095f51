"""A function through torch.compile that falls back to eager when a default compile fails."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["CompiledOrEager"]


class CompiledOrEager:
    """``fn`` through ``torch.compile`` (``dynamic=False``: a run's shapes are fixed) when
    ``compile_``; eager otherwise.

    A compile the caller did not ask for explicitly (``explicit=False``: a default, e.g. the
    trainer's ``compile_pays``) that fails at its first call (no C++ compiler, an unsupported
    op) warns once and runs ``fn`` eagerly from then on; ``fn`` is pure, so computing it again
    is safe. An explicit compile lets the error through: it is the user's.
    """

    def __init__(self, fn: Callable, compile_: bool, explicit: bool = False) -> None:
        self.eager = fn
        self.compiled = bool(compile_)
        self._fn = torch.compile(fn, dynamic=False) if compile_ else fn
        self.checked = not compile_ or explicit  # nothing left to find out at the first call

    def __call__(self, *args, **kwargs):
        if self.checked:
            return self._fn(*args, **kwargs)
        try:
            out = self._fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - fn is pure: computing it eagerly is safe
            warnings.warn(f"torch.compile of the loss failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); continuing eagerly", RuntimeWarning, stacklevel=3)
            self._fn, self.compiled = self.eager, False
            out = self.eager(*args, **kwargs)
        self.checked = True
        return out
