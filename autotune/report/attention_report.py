"""A run's attention over training, read from its ``metrics.jsonl``: per (layer, token group),
the entropy against its target with the temperature beside it, and the update at which the
control engaged (the entropy first within ``tql.engagement.ENGAGE_MARGIN`` of its target).

Works on any run folder: a `tql-tune train` run, a trial's seed (``runs/studies/...``) or a
population run (its rows are the population's mean member). Where the folder holds a single
agent's checkpoint, ``checkpoint_view`` adds the distributions behind the logged means: per
layer, the entropy and largest weight of every query row on a batch of the run's data, and
the [VALUE] query's split between observation and action tokens (``tql.attention``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

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


QUANTILES = (0.1, 0.5, 0.9)
HIST_BINS = 24
LARGEST_BINS = np.linspace(0.0, 1.0, HIST_BINS + 1)


def checkpoint_view(run_dir: str | Path, batch: int = 512, seed: int = 0) -> dict[str, Any] | None:
    """Per layer at the run's last checkpoint, on ``batch`` transitions of its training data:
    the 10/50/90% quantiles of the row entropies and largest weights of the [VALUE] query and
    of the other queries, and the [VALUE] row's weight split. None: no checkpoint here, or one
    without a single agent's attention (a population's, or the MLP critic's)."""
    import torch

    from tql.attention import checkpoint_critic, critic_attention, has_attention
    from tql.data import expected_size, load_task_data
    from tql.trainer import TrainConfig

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file() or not (run_dir / "config.json").is_file():
        return None
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    if not has_attention(state):
        return None
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["train"])
    task = config.spec
    data = load_task_data(task, config.data_dir, config.data_kind,
                          expect=expected_size(task, config.data_episodes, config.data_episode_length))
    rows = torch.randint(len(data.train["observations"]), (batch,), generator=torch.Generator().manual_seed(seed))
    obs = torch.as_tensor(data.train["observations"][rows.numpy()], dtype=torch.float32)
    act = torch.as_tensor(data.train["actions"][rows.numpy()], dtype=torch.float32)
    critic, step = checkpoint_critic(state, task.obs_dim, task.act_dim), state["step"]

    def spread(entropy: np.ndarray, largest: np.ndarray) -> dict[str, list]:
        """Quantiles for the table, and histograms (fractions of rows) for the PNG."""
        return {"entropy": [float(v) for v in np.quantile(entropy, QUANTILES)],
                "largest": [float(v) for v in np.quantile(largest, QUANTILES)],
                # rounding may put a uniform row a hair above log n: clipped into the last bin
                "entropy_hist": (np.histogram(np.clip(entropy, 0.0, entropy_bins[-1]), bins=entropy_bins)[0]
                                 / entropy.size).tolist(),
                "largest_hist": (np.histogram(largest, bins=LARGEST_BINS)[0] / largest.size).tolist()}

    entropy_bins = np.linspace(0.0, task.max_entropy, HIST_BINS + 1)
    layers = [{"layer": a.layer, "value_weight": a.value_weight, "value": spread(a.value_entropy, a.value_max),
               "other": spread(a.other_entropy, a.other_max)} for a in critic_attention(critic, obs, act)]
    n = task.n_tokens
    return {"step": step, "batch": batch, "quantiles": list(QUANTILES), "uniform_largest": 1.0 / n,
            "uniform_reads": [1.0 / n, task.obs_dim / n, task.act_dim / n], "layers": layers,
            "entropy_bins": entropy_bins.tolist(), "largest_bins": LARGEST_BINS.tolist()}


def checkpoint_rows(view: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (layer, group) of ``checkpoint_view`` for a table."""
    return [{"layer_group": f"l{layer['layer']}_{group}", "entropy": layer[group]["entropy"],
             "largest": layer[group]["largest"],
             "value_weight": layer["value_weight"] if group == "value" else None}
            for layer in view["layers"] for group in GROUP_NAMES]


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
    view = history.get("checkpoint")
    fig = Figure(figsize=(12.0, 8.5 if view else 4.5), dpi=dpi, layout="constrained")
    axes = fig.subplots(2 if view else 1, 2)
    (ax_h, ax_a), rows = (axes[0], axes[1:]) if view else (axes, [])
    for ax_e, ax_w in rows:
        _draw_checkpoint(ax_e, ax_w, view, history["log_n"])
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


def _draw_checkpoint(ax_e, ax_w, view: dict[str, Any], log_n: float | None) -> None:
    """Per (layer, group) at the last checkpoint: the histograms of the rows' entropies and of
    their largest weights (fractions of rows)."""
    rows = sorted(checkpoint_rows(view), key=lambda row: row["layer_group"])  # the colours of the panels above
    for i, row in enumerate(rows):
        layer = view["layers"][int(row["layer_group"][1:].split("_")[0])]
        spread = layer[row["layer_group"].split("_", 1)[1]]
        style = dict(color=f"C{i % 10}", label=row["layer_group"])
        ax_e.stairs(spread["entropy_hist"], view["entropy_bins"], **style)
        ax_w.stairs(spread["largest_hist"], view["largest_bins"], **style)
    if log_n:
        ax_e.axvline(log_n, color="grey", linewidth=0.8, label="log n (uniform)")
    ax_w.axvline(view["uniform_largest"], color="grey", linewidth=0.8, label="1/n (uniform)")
    ax_e.set_title(f"at update {view['step']:,}: entropy of each query row ({view['batch']} transitions, every head)")
    ax_e.set_xlabel("nats")
    ax_w.set_title("largest attention weight of each query row")
    ax_w.set_xlabel("weight")
    for ax in (ax_e, ax_w):
        ax.set_ylabel("fraction of rows")
        ax.legend(fontsize=7)
