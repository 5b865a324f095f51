"""H̄ of each update, the same way in every training loop.

A hook's ``target_entropy(step, progress)`` gives nothing (the run's constant), a number, one
per layer, a ``[depth, 2]`` table or, in a population, one of those per member. The single-run
loop (``tql.trainer.loop``), the population loop (``tql.batched.pbt``) and the batched-trials
loop (``tql.batched.batch_runs``) turn it into the update's tensor with these two pieces:
``HookTable`` checks a value once per change (a bad one is a ConfigError naming the step), and
``DeviceTargets`` copies tables to the device once per change, not per update, with no copy
that waits for the device: a schedule may give a new value at every update.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tql.targets import Table, target_table
from tql.trainer.hooks import frozen_target


class HookTable:
    """One hook's H̄ as a checked, hashable ``[depth, 2]`` table, made again only when the
    hook's value changes; ``constant`` (the run's own table) when the hook gives None."""

    def __init__(self, depth: int, max_entropy: float, constant: Table):
        self.depth, self.max_entropy = depth, max_entropy
        self.constant = frozen_target(constant)
        self._last: tuple[Any, Any] = (object(), None)

    def at(self, value: Any, step: int) -> tuple:
        if value is None:
            return self.constant
        key = frozen_target(value)
        if key != self._last[0]:
            table = target_table(value, self.depth, self.max_entropy, f"H̄ (from a hook at step {step})")
            self._last = (key, frozen_target(table))
        return self._last[1]


class DeviceTargets:
    """The device tensor of the latest tables (one table, or a tuple of one per member),
    uploaded again only when they change."""

    def __init__(self, upload: Callable[[Any, tuple[int, ...]], torch.Tensor]):
        self.upload = upload
        self._last: tuple[Any, torch.Tensor | None] = (None, None)

    def __call__(self, tables: Any, shape: tuple[int, ...]) -> torch.Tensor:
        if tables is not self._last[0] and tables != self._last[0]:
            self._last = (tables, self.upload(tables, shape))
        return self._last[1]
