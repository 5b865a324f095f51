"""Draw ``autotune.report.curves.rliable_summary``: a PNG (``report_curves.png``) and a terminal plot.

Left panel: sample-efficiency curves (IQM of success vs training steps per run, one line per
approach, CI band). Right panel: performance profiles (fraction of runs above each success
threshold, CI band). The terminal shows the sample-efficiency curves with plotext on a
terminal, or as plain lines of numbers when the output is a file or a pipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.report.summary import fresh_plotext, titled_plot
from tql.errors import ConfigError
from tql.io import atomic_path

#: plotext's "clear" theme has no colours: each approach gets its own marker instead.
MARKERS = "ox+*#@%&"
NO_CURVES = "no per-run evaluation curves recorded (data from an older compare)"


def write_curves_png(summary: dict[str, Any], path: str | Path, title: str = "tql-tune compare",
                     generated: bool = False, dpi: int = 120, score: str = "success") -> Path:
    """Write both panels of ``score`` (success, or progress) to ``path`` atomically; return it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("the PNG report needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(12.0, 4.8), dpi=dpi, layout="constrained")
    ax_eff, ax_prof = fig.subplots(1, 2)
    level = f"{100 * summary['confidence']:g}%"
    _draw_efficiency(ax_eff, summary["sample_efficiency"], level, score)
    _draw_profiles(ax_prof, summary["performance_profile"], level, score)
    fig.suptitle(title + (": GENERATED DATA, not a real result" if generated else ""),
                 color="red" if generated else "black")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _draw_efficiency(ax, curves: dict[str, dict], level: str, score: str = "success") -> None:
    ax.set_title(f"Sample efficiency: IQM, {level} stratified bootstrap CI")
    ax.set_xlabel("training steps per run")
    ax.set_ylabel("success rate (%)" if score == "success" else "progress: subtasks done (%)")
    ax.set_ylim(-2, 105)  # an all-zero line stays visible above the axis
    if not curves:
        ax.text(0.5, 0.5, NO_CURVES, ha="center", va="center", transform=ax.transAxes, wrap=True)
        return
    for i, (approach, c) in enumerate(curves.items()):
        ax.plot(c["steps"], [100 * v for v in c["iqm"]], color=f"C{i % 10}", marker=".", label=approach)
        ax.fill_between(c["steps"], [100 * v for v in c["ci_low"]], [100 * v for v in c["ci_high"]],
                        color=f"C{i % 10}", alpha=0.2)
    ax.legend(fontsize="small")


def _draw_profiles(ax, profiles: dict[str, dict], level: str, score: str = "success") -> None:
    ax.set_title(f"Performance profile, {level} CI")
    ax.set_xlabel(f"{score} threshold tau (%)")
    ax.set_ylabel(f"fraction of runs with {score} > tau")
    ax.set_ylim(-0.02, 1.05)
    for i, (approach, p) in enumerate(profiles.items()):
        taus = [100 * t for t in p["thresholds"]]
        ax.plot(taus, p["fraction"], color=f"C{i % 10}", label=approach)
        ax.fill_between(taus, p["ci_low"], p["ci_high"], color=f"C{i % 10}", alpha=0.2)
    ax.legend(fontsize="small")


def efficiency_text(summary: dict[str, Any], plot: bool, width: int = 70, height: int = 16,
                    score: str = "success") -> str:
    """The sample-efficiency curves of ``score`` for the terminal: a plotext plot, or plain lines."""
    curves = summary["sample_efficiency"]
    title = f"Sample efficiency: IQM {score} % vs training steps ({100 * summary['confidence']:g}% CI)"
    if not curves:
        return f"{title}: {NO_CURVES}"
    if not plot:
        lines = [title]
        for approach, c in curves.items():
            points = ", ".join(f"{s}: {100 * v:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
                               for s, v, lo, hi in zip(c["steps"], c["iqm"], c["ci_low"], c["ci_high"]))
            lines.append(f"  {approach}: {points}")
        return "\n".join(lines)
    plt = fresh_plotext()
    plt.plotsize(width, height)
    for i, (approach, c) in enumerate(curves.items()):
        plt.plot(c["steps"], [100 * v for v in c["iqm"]], label=approach, marker=MARKERS[i % len(MARKERS)])
    plt.ylim(0, 100)
    plt.xlabel("training steps per run")
    plt.ylabel(f"IQM {score} %")
    return titled_plot(title, plt.build())
