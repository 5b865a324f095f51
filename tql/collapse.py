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
from dataclasses import dataclass

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
    ``{"step", "layer", "group", "fraction", "threshold"}``, plus ``"member"`` for a population
    run's rows (one per member); None when none is (or the alarm is off: ``threshold`` <= 0)."""
    if threshold <= 0 or depth == 0:
        return None
    for row in rows:
        if row.get("type", "train") != "train":
            continue
        lowest = lowest_group(row, depth, log_n)
        if lowest is not None and lowest[0] < threshold:
            fraction, layer, group = lowest
            found = {"step": row["step"], "layer": layer, "group": group, "fraction": round(fraction, 4),
                     "threshold": threshold}
            return found if "member" not in row else {**found, "member": row["member"]}
    return None


def alarm_line(collapse: dict) -> str:
    """The one line a run prints when its alarm goes off."""
    row = "[VALUE]" if collapse["group"] == "value" else "other"
    member = f"member {collapse['member']}: " if "member" in collapse else ""
    return (f"attention collapsed: {member}layer {collapse['layer']} {row} rows at {collapse['fraction']:.2f} log n "
            f"(< {collapse['threshold']:g} log n) at update {collapse['step']:,}; the run goes on "
            "(collapse_alarm sets the threshold, 0 turns it off)")


# ----- what the collapse map measured ------------------------------------------------------------

@dataclass(frozen=True)
class MeasuredCollapse:
    """Free attention (control off) measured for one configuration of the `cpu` profile's
    budgets (batch 128): the median over seeds of the lowest group entropy (fraction of log n)
    within ``steps`` updates, and how many seeds fell below 0.2 log n. ``source``: the result file
    under benchmarks/learning/results/ that holds the runs."""

    domain: str  # TaskSpec.domain, e.g. cube-double-play
    size: str
    critic_lr: float
    data_episodes: int
    steps: int
    lowest: float
    seeds: int
    below_alarm: int
    source: str


# The configurations measured so far (docs/collapse.md has the map and its outcomes).
MEASURED: tuple[MeasuredCollapse, ...] = (
    MeasuredCollapse("cube-double-play", "0.03M", 1e-3, 40, 3000, 0.122, 1, 1, "engagement_free.txt"),
    MeasuredCollapse("cube-double-play", "0.03M", 1e-3, 40, 6000, 0.34, 5, 0, "collapse_cube-double.txt"),
    MeasuredCollapse("cube-double-play", "0.03M", 3e-4, 40, 3000, 0.789, 1, 0, "engagement_free.txt"),
    MeasuredCollapse("cube-double-play", "0.03M", 1e-4, 40, 3000, 0.987, 1, 0, "engagement_free.txt"),
    MeasuredCollapse("cube-double-play", "0.03M", 1e-3, 200, 3000, 0.357, 1, 0, "engagement_free_200ep.txt"),
    MeasuredCollapse("cube-double-play", "0.4M", 1e-3, 40, 3000, 0.030, 1, 1, "engagement_free_04M.txt"),
    MeasuredCollapse("cube-single-play", "0.03M", 1e-3, 40, 3000, 0.49, 5, 0, "collapse_cube-single.txt"),
    MeasuredCollapse("cube-single-play", "w32-d4", 1e-3, 40, 3000, 0.49, 4, 0, "collapse_cube-single.txt"),
)


def measured_collapse(domain: str, size: str, critic_lr: float, data_episodes: int | None, batch_size: int,
                      steps: int) -> MeasuredCollapse | None:
    """The measured configuration a run falls inside (same domain, critic, rate, data and
    batch 128; no more updates than were measured), or None: outside the map, no prediction."""
    if batch_size != 128:
        return None
    found = [m for m in MEASURED if (m.domain, m.size, m.data_episodes) == (domain, size, data_episodes)
             and abs(m.critic_lr - critic_lr) <= 1e-12 and steps <= m.steps]
    return found[0] if found else None


__all__ = ["DEFAULT_ALARM", "lowest_group", "first_collapse", "alarm_line", "MeasuredCollapse", "MEASURED",
           "measured_collapse"]
