"""Target tables: shapes, ranges, the published per-domain targets, depth profiles, CLI forms."""

from __future__ import annotations

import math

import pytest

from tql.errors import ConfigError
from tql.targets import (PUBLISHED_TARGETS, layer_profile, parse_targets, published_targets, rho_table,
                         target_table)
from tql.tasks import get_task

LOG_43 = math.log(43)

# docs/published.md: the published targets as rho = H̄ / log n, (layer 0, layer 1), per domain.
PUBLISHED_RHO = {"cube-double-play": (0.80, 0.66), "scene-play": (0.91, 0.78), "puzzle-3x3-play": (0.85, 0.73),
              "puzzle-4x4-play": (0.78, 0.67), "cube-triple-play": (0.89, 0.76)}


@pytest.mark.parametrize("domain", list(PUBLISHED_RHO))
def test_published_table_matches_design(domain):
    task = get_task(f"{domain}-singletask-task1-v0")
    table = published_targets(task.env_base, 2, task.max_entropy)
    for layer, rho in enumerate(PUBLISHED_RHO[domain]):
        assert table[layer][0] == table[layer][1]  # both token groups share a layer's target
        assert table[layer][0] / task.max_entropy == pytest.approx(rho, abs=0.005)
    assert set(PUBLISHED_TARGETS) == {get_task(f"{d}-singletask-task1-v0").env_base for d in PUBLISHED_RHO}


def test_published_targets_spread_over_other_depths():
    three = published_targets("cube-double", 3, LOG_43)
    assert three == [[3.0, 3.0], [2.75, 2.75], [2.5, 2.5]]
    assert published_targets("cube-double-play", 1, LOG_43) == [[3.0, 3.0]]
    with pytest.raises(ConfigError, match="no published targets for domain 'cube-single'; published: cube-double"):
        published_targets("cube-single", 2, math.log(34))


def test_broadcast_forms():
    assert target_table(2.0, 3, LOG_43) == [[2.0, 2.0]] * 3
    assert target_table([3.0, 2.5], 2, LOG_43) == [[3.0, 3.0], [2.5, 2.5]]
    assert target_table([[3.0, 2.8], [2.5, 2.4]], 2, LOG_43) == [[3.0, 2.8], [2.5, 2.4]]
    flat = [v for row in rho_table([1.0, 0.5], 2, LOG_43) for v in row]
    assert flat == pytest.approx([LOG_43, LOG_43, 0.5 * LOG_43, 0.5 * LOG_43])
    assert target_table(2.0, 0, LOG_43) == []  # an MLP critic has no attention


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], [[1.0], [2.0]], "x"])
def test_wrong_shapes_are_refused_in_one_line(value):
    with pytest.raises(ConfigError) as err:
        target_table(value, 2, LOG_43)
    message = str(err.value)
    assert "\n" not in message and ("wrong shape for a depth-2 critic" in message or "not a number" in message)


@pytest.mark.parametrize("value, where", [(0.0, ""), (LOG_43 + 0.01, ""), ([[3.0, 3.0], [2.5, 9.0]], "layer 1 (other)"),
                                          ([1.0, -1.0], "layer 1 (value)"), (float("nan"), "")])
def test_out_of_range_is_refused_naming_the_entry(value, where):
    with pytest.raises(ConfigError) as err:
        target_table(value, 2, LOG_43)
    message = str(err.value)
    assert "outside (0, log n] = (0, 3.7612]" in message and where in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"rho 1.5 is outside \(0, 1\]"):
        rho_table(1.5, 2, LOG_43)


def test_layer_profile():
    assert layer_profile(0.9, 0.5, 5) == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert layer_profile(0.9, 0.5, 1) == [0.9]


def test_parse_targets_cli_forms():
    assert parse_targets("3") == 3.0
    assert parse_targets("3.0,2.5") == [3.0, 2.5]
    assert parse_targets("3.0:2.8,2.5:2.4") == [[3.0, 2.8], [2.5, 2.4]]
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        parse_targets("3.0,abc")
