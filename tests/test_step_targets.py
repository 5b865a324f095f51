"""H̄ of each update (tql.trainer.step_targets): a hook's value checked once per change and
copied to the device once per change, the same in all three training loops."""

from __future__ import annotations

import math

import pytest
import torch

from tql.errors import ConfigError
from tql.trainer.step_targets import DeviceTargets, HookTable

LOG_N = math.log(43)


def test_a_hook_table_is_the_constant_without_a_value_and_rebuilt_only_when_the_value_changes():
    tables = HookTable(2, LOG_N, [[3.0, 3.0], [2.5, 2.5]])
    assert tables.at(None, 0) == ((3.0, 3.0), (2.5, 2.5))
    first = tables.at([2.0, 1.5], 10)  # one per layer: both groups of a layer share it
    assert first == ((2.0, 2.0), (1.5, 1.5))
    assert tables.at([2.0, 1.5], 11) is first  # the same value: the same table, not a new one
    assert tables.at(1.0, 12) == ((1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ConfigError, match=r"H̄ \(from a hook at step 13\) 9.0 is outside \(0, log n\]"):
        tables.at(9.0, 13)


def test_device_targets_upload_once_per_change():
    calls = []

    def upload(tables, shape):
        calls.append(tables)
        return torch.tensor(tables, dtype=torch.float32).reshape(shape)

    device = DeviceTargets(upload)
    one = ((2.0, 2.0), (1.5, 1.5))
    a = device(one, (-1, 2))
    assert device(one, (-1, 2)) is a and device(((2.0, 2.0), (1.5, 1.5)), (-1, 2)) is a  # equal: no new copy
    assert len(calls) == 1 and a.tolist() == [[2.0, 2.0], [1.5, 1.5]]
    members = (one, ((1.0, 1.0), (1.0, 1.0)))
    assert device(members, (2, -1, 2)).shape == (2, 2, 2) and len(calls) == 2
