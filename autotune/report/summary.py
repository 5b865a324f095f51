"""Read studies back: per-task summaries (``tql-tune show``, ``--json``) and terminal plots."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune.tuning.storage import describe, open_storage
from autotune.tuning.studies import best_trial
from autotune.tuning.lifecycle import fail_kind, trial_counts
from tql.errors import ConfigError
from tql.io import read_jsonl


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "number": t.number, "state": t.state.name.lower(), "rho": t.params.get("rho", a.get("rho")),
        "schedule": a.get("schedule"),
        "target_entropy": a.get("target_entropy"), "value": t.value, "successes": a.get("successes", []),
        "progress": a.get("progress", []), "engaged_at": a.get("engaged_at"), "collapsed_at": a.get("collapsed_at"),
        "seeds": a.get("seeds"), "steps": a.get("steps", 0), "wall_seconds": a.get("wall_seconds"),
        "data_kind": a.get("data_kind"), "precision": a.get("precision", "fp32"),
        "metrics": a.get("metrics", []), "host": a.get("host"),
        "fail_kind": fail_kind(t), "fail_reason": a.get("fail_reason"), "retry_of": a.get("retry_of"),
        "batch_id": a.get("batch_id"), "temperature_sharing": a.get("temperature_sharing"),
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        **layer_rhos(t),
    }


def layer_rhos(t: FrozenTrial) -> dict[str, float]:
    """A layers trial's rho_first and rho_last (its "rho" is their mean); {} for other kinds,
    so summaries of constant and knots studies read as they did."""
    return {key: t.params.get(key, t.user_attrs.get(key)) for key in ("rho_first", "rho_last")
            if key in t.params or key in t.user_attrs}


def summarize_study(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    kinds = sorted({t.user_attrs["data_kind"] for t in trials if "data_kind" in t.user_attrs})
    attrs = study.user_attrs
    summary = {
        "study_name": study.study_name, "task": attrs.get("tql:task", study.study_name.split(":", 1)[-1]),
        "n_tokens": attrs.get("tql:n_tokens"), "profile": attrs.get("tql:profile"),
        "precision": attrs.get("tql:precision", "fp32"), "search": attrs.get("tql:search"),
        "objective": attrs.get("tql:objective", "success"),
        "data_signal": attrs.get("tql:data_signal"),  # tql.data.signal.DataSignal, recorded by run
        "engagement": attrs.get("tql:engagement"),  # tql.engagement.EngagementForecast, recorded by run
        "agent": attrs.get("tql:agent", {}),  # run --agent: AgentConfig overrides of every trial
        "data_kind": ",".join(kinds) or None,
        "counts": trial_counts(trials),
        # Compute spent: every training step any trial took, retried and pruned ones included.
        "steps_total": sum(t.user_attrs.get("steps", 0) for t in trials),
        "best": None, "trials": [trial_record(t) for t in trials],
    }
    if best is not None:
        successes, progress = best.user_attrs.get("successes", []), best.user_attrs.get("progress", [])
        tied = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value == best.value]
        summary["best"] = {
            "number": best.number, "rho": best.params.get("rho", best.user_attrs.get("rho")),
            "schedule": best.user_attrs.get("schedule"), "target_entropy": best.user_attrs.get("target_entropy"),
            "value": best.value,  # the study's objective, mean over seeds
            "success_mean": statistics.fmean(successes) if successes else best.value,
            "success_std": statistics.pstdev(successes) if successes else None, "successes": successes,
            "progress_mean": statistics.fmean(progress) if progress else None,
            "progress_std": statistics.pstdev(progress) if progress else None, "progress": progress,
            "metrics": best.user_attrs.get("metrics", []), "host": best.user_attrs.get("host"),
            # Complete trials sharing the best value (itself included): > 1 means the best rho
            # is only the earliest of equals (e.g. every trial at 0% success), not a finding.
            "tied": len(tied),
            "tied_idle": tied_idle(tied),
            "collapsed_at": best.user_attrs.get("collapsed_at"),  # the collapse alarm (tql.collapse)
            "temperature_sharing": best.params.get("temperature_sharing", best.user_attrs.get("temperature_sharing")),
            **layer_rhos(best),
        }
    return summary


def tied_idle(tied: list[FrozenTrial]) -> bool:
    """Whether the complete trials sharing the best value are tied because H̄ never acted on
    any of them (no layer's attention came within ``tql.engagement.ENGAGE_MARGIN`` of its
    target) rather than by result; False for trials recorded before this was."""
    return len(tied) > 1 and all("engaged_at" in t.user_attrs and t.user_attrs["engaged_at"] is None for t in tied)


def study_names(storage: optuna.storages.BaseStorage, study: str) -> list[str]:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    return sorted(n for n in names if n.startswith(f"{study}:"))


def summarize(storage_url: str | None, study: str, task: str | None = None) -> dict[str, Any]:
    """Per-task summaries of study ``study`` (optionally one task) in the storage."""
    storage = open_storage(storage_url, create=False)
    names = study_names(storage, study)
    if not names:
        groups = sorted({s.study_name.split(":", 1)[0] for s in optuna.get_all_study_summaries(storage, False)})
        raise ConfigError(f"no study {study!r} in {describe(storage_url)}; studies there: {', '.join(groups) or 'none'}")
    if task is not None:
        wanted = f"{study}:{task}"
        if wanted not in names:
            tasks = [n.split(":", 1)[1] for n in names]
            raise ConfigError(f"study {study!r} has no task {task!r}; its tasks: {', '.join(tasks)}")
        names = [wanted]
    tasks = [summarize_study(optuna.load_study(study_name=n, storage=storage)) for n in names]
    return {"study": study, "storage": describe(storage_url), "tasks": tasks}


# ----- terminal plots ----------------------------------------------------------------------------

def fresh_plotext():
    """plotext with a cleared figure and no colours, for one terminal plot."""
    import plotext as plt

    plt.clear_figure()
    plt.theme("clear")  # no ANSI colours: readable in logs and files
    return plt


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def titled_plot(title: str, canvas: str) -> str:
    """``title`` above a built plotext ``canvas`` without ANSI codes (plotext drops titles wider
    than the canvas, and ANSI resets would garble logs and files)."""
    return title + "\n" + ANSI.sub("", canvas).rstrip()


def objective_vs_rho_plot(task_summary: dict[str, Any], width: int = 70, height: int = 14) -> str:
    """The study's objective (success or progress) of each complete trial against its rho; a
    layers study's trials appear twice, at rho_first and at rho_last (labelled), as their mean
    would hide the profile."""
    complete = [t for t in task_summary["trials"] if t["state"] == "complete" and t["value"] is not None]
    if not complete:
        return f"{task_summary['task']}: no complete trials yet"
    plt = fresh_plotext()
    plt.plotsize(width, height)
    layered = all("rho_first" in t for t in complete)
    keys = (("rho_first", "first layer", "o"), ("rho_last", "last layer", "x")) if layered else (("rho", None, "o"),)
    for key, label, marker in keys:
        xs, ys = zip(*sorted((t[key], 100 * t["value"]) for t in complete))
        plt.scatter(xs, ys, marker=marker, label=label)
    search = task_summary.get("search") or {"rho_low": 0.0, "rho_high": 1.0}
    plt.xlim(search["rho_low"], search["rho_high"])
    plt.ylim(0, 100)
    plt.xlabel("rho = H̄ / log n")
    objective = task_summary.get("objective", "success")
    plt.ylabel(f"{objective} %")
    return titled_plot(f"{task_summary['task']}: {objective} % of complete trials vs rho", plt.build())


ENTROPY_KEY = re.compile(r"entropy/l(\d+)_(value|other)$")
TARGET_KEY = re.compile(r"target_entropy/(l\d+_(?:value|other))$")


def entropy_series(metrics_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Per-layer, per-group attention entropy and its target over training from a
    metrics.jsonl: ``l0_value`` ..., and ``target_entropy`` when every (layer, group) had the
    same target at every logged step, else one ``H̄ l0_value`` ... per (layer, group)."""
    series: dict[str, list[tuple[int, float]]] = {}
    targets: dict[str, list[tuple[int, float]]] = {}
    for row in read_jsonl(Path(metrics_path)):
        if row.get("type") != "train":
            continue
        for key, value in row.items():
            if ENTROPY_KEY.match(key) or key == "target_entropy":
                series.setdefault(key.removeprefix("entropy/"), []).append((row["step"], value))
            elif match := TARGET_KEY.match(key):
                targets.setdefault(f"H̄ {match[1]}", []).append((row["step"], value))
    mean = dict(series.get("target_entropy", []))
    if any(abs(value - mean.get(step, value)) > 1e-6 for points in targets.values() for step, value in points):
        series.pop("target_entropy", None)
        series.update(targets)
    return series


def entropy_plot(task_summary: dict[str, Any], width: int = 70, height: int = 14) -> str:
    best = task_summary.get("best")
    if best is None or not best["metrics"]:
        return f"{task_summary['task']}: no complete trial to plot entropies for"
    path = Path(best["metrics"][0])
    if not path.is_file():
        return f"{task_summary['task']}: metrics of the best trial are on host {best.get('host')}: {path}"
    series = entropy_series(path)
    if not series:
        return f"{task_summary['task']}: {path} has no logged entropies yet"
    plt = fresh_plotext()
    plt.plotsize(width, height)
    for name, points in sorted(series.items()):
        steps, values = zip(*points)
        plt.plot(steps, values, label="H̄ (target)" if name == "target_entropy" else name)
    plt.xlabel("training step")
    return titled_plot(f"{task_summary['task']}: attention entropy per layer/group (nats) of the best trial "
                   f"#{best['number']}, first seed", plt.build())


def fmt_success(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}"


def counts_text(counts: dict[str, int]) -> str:
    text = f"{counts['complete']}/{counts['pruned']}/{counts['failed']}"
    extra = [f"{counts[k]} {k}" for k in ("running", "waiting", "retried") if counts[k]]
    return text + (f" ({', '.join(extra)})" if extra else "")


__all__ = ["summarize", "summarize_study", "objective_vs_rho_plot", "entropy_plot", "entropy_series",
           "fmt_success", "counts_text"]
