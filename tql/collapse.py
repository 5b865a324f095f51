"""The collapse alarm: when a run's attention has collapsed, and where.

Attention collapse is what the entropy control exists to prevent: left to itself, a critic's
attention rows sharpen until each query looks at one or two tokens, and the paper's deep and
wide critics without the control then score far below TQL (docs/collapse.md). A run whose
entropy falls below a small fraction of log n (``DEFAULT_ALARM`` = 0.2 by default) is flagged
once: in one line while it trains, in its ``summary.json`` (``extra["collapse"]``), as a
study trial's attribute and in the reports. The alarm reads the logged rows only (the
per-(layer, group) mean entropies ``entropy/l{layer}_{group}``), so it costs nothing per
update and works on any finished run's ``metrics.jsonl``.

A mean entropy over a group's rows hides single rows that collapse while others stay broad;
the alarm is about the group mean, which is what the control acts on.
"""

from __future__ import annotations

from collections.abc import Iterable

from tql.targets import GROUP_NAMES

DEFAULT_ALARM = 0.2  # fraction of log n


def lowest_group(row: dict, depth: int, log_n: float) -> tuple[float, int, str] | None:
    """(lowest entropy as a fraction of log n, its layer, its group) of one logged row; None
    when the row holds no entropies (a depth-0 critic)."""
    found = [(row[key] / log_n, layer, group) for layer in range(depth) for group in GROUP_NAMES
             if (key := f"entropy/l{layer}_{group}") in row]
    return min(found) if found else None


def first_collapse(rows: Iterable[dict], depth: int, log_n: float, threshold: float = DEFAULT_ALARM) -> dict | None:
    """The first logged train row whose lowest group entropy is below ``threshold`` log n:
    ``{"step", "layer", "group", "fraction", "threshold"}``; None when none is (or the alarm is
    off: ``threshold`` <= 0)."""
    if threshold <= 0 or depth == 0:
        return None
    for row in rows:
        if row.get("type", "train") != "train":
            continue
        lowest = lowest_group(row, depth, log_n)
        if lowest is not None and lowest[0] < threshold:
            fraction, layer, group = lowest
            return {"step": row["step"], "layer": layer, "group": group, "fraction": round(fraction, 4),
                    "threshold": threshold}
    return None


def alarm_line(collapse: dict) -> str:
    """The one line a run prints when its alarm goes off."""
    row = "[VALUE]" if collapse["group"] == "value" else "other"
    return (f"attention collapsed: layer {collapse['layer']} {row} rows at {collapse['fraction']:.2f} log n "
            f"(< {collapse['threshold']:g} log n) at update {collapse['step']:,}; the run goes on "
            "(collapse_alarm sets the threshold, 0 turns it off)")


__all__ = ["DEFAULT_ALARM", "lowest_group", "first_collapse", "alarm_line"]
