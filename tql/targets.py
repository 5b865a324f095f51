"""Target entropy tables: H̄ per (layer, token group), the shape TQL's control acts on.

TQL holds each (layer l, group g) of the critic's attention near its own target H̄_{l,g}
(group 0: the [VALUE] query row, group 1: the other rows). A target is given as

- one number: every (layer, group) gets it;
- one number per layer ``[depth]``: both groups of a layer share it;
- a full table ``[depth, 2]``.

Either in nats (``H̄``) or as fractions ``rho = H̄ / log n`` of the maximum entropy, the form
that transfers across environments with different token counts n. Every table is checked
once, where it enters: each entry in (0, log n] (or (0, 1] for rho), shape as above.

The published per-domain targets (docs/published.md, the public TQL run scripts) are tables for a
depth-2 critic; ``published_targets`` spreads them over other depths linearly from the first
to the last layer, the same rule a depth profile schedule follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

from tql.errors import ConfigError

GROUPS = 2
GROUP_NAMES = ("value", "other")

# Nats, ((l0 value, l0 other), (l1 value, l1 other)), for a depth-2 critic (docs/published.md).
PUBLISHED_TARGETS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "cube-double": ((3.0, 3.0), (2.5, 2.5)),
    "scene": ((3.5, 3.5), (3.0, 3.0)),
    "puzzle-3x3": ((3.5, 3.5), (3.0, 3.0)),
    "puzzle-4x4": ((3.5, 3.5), (3.0, 3.0)),
    "cube-triple": ((3.5, 3.5), (3.0, 3.0)),
}
TARGET_SOURCES = ("published",)

Table = list[list[float]]
TargetValue = Union[float, Sequence[float], Sequence[Sequence[float]]]


def _shape_error(value, depth: int, what: str) -> ConfigError:
    return ConfigError(f"{what} {value!r} has the wrong shape for a depth-{depth} critic: give one number, "
                       f"{depth} numbers (one per layer) or a {depth} x {GROUPS} table (value, other per layer)")


def _number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ConfigError(f"{what}: {x!r} is not a number")
    return float(x)


def broadcast(value: TargetValue, depth: int, what: str = "target entropy") -> Table:
    """A number, ``[depth]`` or ``[depth, 2]`` as a ``depth x 2`` table of floats (no range check)."""
    if hasattr(value, "tolist"):  # numpy / torch
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return [[_number(value, what)] * GROUPS for _ in range(depth)]
    if len(value) != depth:
        raise _shape_error(value, depth, what)
    table = []
    for row in value:
        if isinstance(row, (list, tuple)):
            if len(row) != GROUPS:
                raise _shape_error(value, depth, what)
            table.append([_number(x, what) for x in row])
        else:
            table.append([_number(row, what)] * GROUPS)
    return table


def check_table(table: Table, max_entropy: float, what: str = "target entropy") -> Table:
    """Every entry in (0, log n]; ConfigError naming the first bad one otherwise."""
    return _check_range(table, max_entropy, what, f"(0, log n] = (0, {max_entropy:.4f}]; give rho in (0, 1] to "
                                                  "give it as a fraction of log n")


def in_range(value: float, high: float = 1.0) -> bool:
    """The one range check of a target: H̄ in (0, log n] (``high`` = log n), rho = H̄ / log n in
    (0, 1] (the default). 0 would ask for one-hot attention; ``high`` is uniform."""
    return math.isfinite(value) and 0.0 < value <= high + 1e-6


def _check_range(table: Table, high: float, what: str, valid: str) -> Table:
    for layer, row in enumerate(table):
        for group, value in enumerate(row):
            if not in_range(value, high):
                where = f" at layer {layer} ({GROUP_NAMES[group]})" if _varies(table) else ""
                raise ConfigError(f"{what} {value!r}{where} is outside {valid}")
    return table


def _varies(table: Table) -> bool:
    return len({v for row in table for v in row}) > 1


def target_table(value: TargetValue, depth: int, max_entropy: float, what: str = "target entropy") -> Table:
    """H̄ in nats as a checked ``depth x 2`` table."""
    return check_table(broadcast(value, depth, what), max_entropy, what)


def rho_table(rho: TargetValue, depth: int, max_entropy: float) -> Table:
    """H̄ = rho * log n as a checked ``depth x 2`` table; rho outside (0, 1] is refused."""
    fractions = broadcast(rho, depth, "rho")
    _check_range(fractions, 1.0, "rho", "(0, 1]; H̄ = rho * log n must lie in (0, log n]")
    return [[r * max_entropy for r in row] for row in fractions]


def layer_profile(first: float, last: float, depth: int) -> list[float]:
    """Values from ``first`` (layer 0) to ``last`` (layer depth-1), linear in between; a
    depth-1 critic gets ``first``. What a depth profile means at any depth."""
    if depth == 1:
        return [float(first)]
    return [first + (last - first) * layer / (depth - 1) for layer in range(depth)]


def published_targets(domain: str, depth: int, max_entropy: float) -> Table:
    """The published targets of ``domain`` (e.g. ``cube-double`` or ``cube-double-play``) in
    nats for a depth-``depth`` critic: the depth-2 table spread by ``layer_profile`` per group."""
    base = next((env for env in PUBLISHED_TARGETS if domain == env or domain.startswith(env + "-")), None)
    if base is None:
        raise ConfigError(f"no published targets for domain {domain!r}; published: "
                          f"{', '.join(PUBLISHED_TARGETS)} (give --rho or --target-entropy instead)")
    (v0, o0), (v1, o1) = PUBLISHED_TARGETS[base]
    table = [list(row) for row in zip(layer_profile(v0, v1, depth), layer_profile(o0, o1, depth))]
    return check_table(table, max_entropy, f"published target of {base}")


def parse_targets(text: str, what: str = "target entropy") -> float | list:
    """CLI form: ``3.0`` (all), ``3.0,2.5`` (per layer), ``3.0:2.8,2.5:2.4`` (value:other per layer)."""
    def num(token: str) -> float:
        try:
            return float(token)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: {token.strip()!r} is not a number (forms: 3.0 | 3.0,2.5 | "
                              "3.0:2.8,2.5:2.4 for value:other per layer)") from None

    parts = [p for p in text.split(",")]
    if len(parts) == 1 and ":" not in text:
        return num(text)
    return [[num(g) for g in p.split(":")] if ":" in p else num(p) for p in parts]


def table_mean(table: Table) -> float:
    """The mean of a table (a one-number summary for progress bars and plots)."""
    values = [v for row in table for v in row]
    return sum(values) / len(values) if values else float("nan")


__all__ = ["GROUPS", "GROUP_NAMES", "PUBLISHED_TARGETS", "TARGET_SOURCES", "broadcast", "check_table",
           "target_table", "rho_table", "layer_profile", "published_targets", "parse_targets", "table_mean"]
