"""A run's attention over training, read from its ``metrics.jsonl``: per (layer, token group),
the entropy against its target with the temperature beside it, and the update at which the
control engaged (the entropy first within ``tql.engagement.ENGAGE_MARGIN`` of its target).

Works on any run folder: a `tql-tune train` run, a trial's seed (``runs/studies/...``) or a
population run (its rows are the population's mean member).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from autotune.report.summary import fresh_plotext, titled_plot
from tql.engagement import ENGAGE_MARGIN, engagement_steps
from tql.errors import ConfigError
from tql.io import atomic_path, read_jsonl
from tql.targets import GROUP_NAMES


def attention_history(run_dir: str | Path) -> dict[str, Any]:
    """Per (layer, group): the logged steps' entropy, target and alpha, and when it engaged."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise ConfigError(f"{run_dir} holds no metrics.jsonl: give a run folder (tql-tune train --out, or a "
                          "trial's seed-N folder under runs/studies)")
    rows = [r for r in read_jsonl(metrics) if r.get("type") == "train"]
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    layers = sorted({int(k.split("/l")[1].split("_")[0]) for r in rows for k in r if k.startswith("entropy/l")})
    engaged = engagement_steps(rows)
    series = {}
    for layer in layers:
        for group in GROUP_NAMES:
            key = f"l{layer}_{group}"
            points = [(r["step"], r[f"entropy/{key}"], r.get(f"target_entropy/{key}"), r.get(f"alpha/{key}"))
                      for r in rows if f"entropy/{key}" in r]
            series[key] = {"steps": [p[0] for p in points], "entropy": [p[1] for p in points],
                           "target": [p[2] for p in points], "alpha": [p[3] for p in points],
                           "engaged": engaged.get(key)}
    n_tokens = config.get("n_tokens")
    return {"run_dir": str(run_dir), "task": config.get("task"), "n_tokens": n_tokens,
            "log_n": math.log(n_tokens) if n_tokens else None, "steps": rows[-1]["step"] if rows else 0,
            "margin": ENGAGE_MARGIN, "series": series}


def attention_rows(history: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (layer, group) for a table: target, entropies first/lowest/last, alpha, engaged."""
    rows = []
    for key, s in history["series"].items():
        if not s["steps"]:
            continue
        rows.append({"layer_group": key, "target_last": s["target"][-1], "entropy_first": s["entropy"][0],
                     "entropy_lowest": min(s["entropy"]), "entropy_last": s["entropy"][-1],
                     "alpha_first": s["alpha"][0], "alpha_last": s["alpha"][-1], "engaged": s["engaged"]})
    return rows


def attention_plot(history: dict[str, Any], width: int = 78, height: int = 16) -> str:
    """Every (layer, group)'s entropy over training, with its target dotted, in the terminal."""
    plt = fresh_plotext()
    plt.plotsize(width, height)
    for key, s in sorted(history["series"].items()):
        if not s["steps"]:
            continue
        plt.plot(s["steps"], s["entropy"], label=f"H {key}")
        if all(t is not None for t in s["target"]):
            plt.plot(s["steps"], s["target"], label=f"H̄ {key}", marker="dot")
    if history["log_n"]:
        plt.hline(history["log_n"])
    plt.xlabel("training step")
    log_n = f" (log n = {history['log_n']:.3f}: uniform attention)" if history["log_n"] else ""
    return titled_plot(f"{history['task'] or history['run_dir']}: attention entropy vs target, nats{log_n}",
                       plt.build())


def write_attention_png(history: dict[str, Any], path: str | Path, dpi: int = 110) -> Path:
    """Entropy against target (left) and the temperatures (right, log scale), written atomically."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("the attention PNG needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(12.0, 4.5), dpi=dpi, layout="constrained")
    ax_h, ax_a = fig.subplots(1, 2)
    for key, s in sorted(history["series"].items()):
        if not s["steps"]:
            continue
        line, = ax_h.plot(s["steps"], s["entropy"], label=f"H {key}")
        if all(t is not None for t in s["target"]):
            ax_h.plot(s["steps"], s["target"], linestyle=":", color=line.get_color())
        if s["engaged"] is not None:
            ax_h.axvline(s["engaged"], linestyle="--", linewidth=0.8, color=line.get_color())
        if all(a is not None for a in s["alpha"]):
            ax_a.plot(s["steps"], s["alpha"], label=f"alpha {key}", color=line.get_color())
    if history["log_n"]:
        ax_h.axhline(history["log_n"], color="grey", linewidth=0.8, label="log n (uniform)")
    ax_h.set_title("attention entropy (solid) vs target H̄ (dotted); dashed: engaged")
    ax_h.set_xlabel("training step")
    ax_h.set_ylabel("nats")
    ax_h.legend(fontsize=7)
    ax_a.set_title("temperatures alpha")
    ax_a.set_xlabel("training step")
    ax_a.set_yscale("log")
    ax_a.legend(fontsize=7)
    fig.suptitle(history["task"] or history["run_dir"])
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
