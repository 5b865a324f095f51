"""Reports for ``tql-tune compare``: Markdown, a PNG figure, and rich tables for the terminal.

All three read a ``autotune.report.data.ComparisonData`` and compute their statistics with
``autotune.report.stats`` (same bootstrap seed, so the numbers agree across outputs). Files are
written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autotune.report.curves import rliable_summary
from autotune.report.data import GRADED, ComparisonData
from autotune.report.stats import aggregate, default_baseline, difference_ci, paired_tests, per_task_summary
from tql.errors import ConfigError
from tql.io import atomic_path, atomic_write_text

GENERATED_WARNING = ("**Generated data.** These runs used synthetic stand-in datasets, not the official "
                     "OGBench data: they check that the pipeline works and say nothing about the method.")


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _signed_pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def _signed_ci(point: float, low: float, high: float) -> str:
    """A difference with its CI, in percentage points."""
    return f"{_signed_pct(point)} [{_signed_pct(low)}, {_signed_pct(high)}]"


def _diff_text(test: dict[str, Any]) -> str:
    """A paired test's mean difference with its CI."""
    return _signed_ci(test["mean_diff"], test["diff_ci_low"], test["diff_ci_high"])


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _stats(data: ComparisonData, baseline: str | None, reps: int, confidence: float, seed: int):
    base = baseline or default_baseline(data)
    if base not in data.approaches:
        raise ConfigError(f"baseline {base!r} is not one of the approaches: {', '.join(data.approaches)}")
    agg = aggregate(data, reps=reps, confidence=confidence, seed=seed)
    tests = paired_tests(data, baseline=base, reps=reps, confidence=confidence, seed=seed)
    return base, agg, tests, per_task_summary(data)


def _meta_lines(data: ComparisonData) -> list[str]:
    meta = data.meta
    seeds = meta.get("seeds")
    lines = [
        f"- Command: `{meta['command']}`" if meta.get("command") else "- Command: (not recorded)",
        f"- Profile: {meta.get('profile', '(not recorded)')}",
        f"- Seeds: {', '.join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else seeds if seeds is not None else '(not recorded)'}",
        f"- Data kind: {meta.get('data_kind', '(not recorded)')}" + (" (GENERATED: not a real result)" if data.generated else ""),
        f"- Tasks: {len(data.tasks)}; seeds per task: {', '.join(sorted({str(data.n_seeds(t)) for t in data.tasks}))}",
    ]
    for key, value in meta.items():
        if key not in ("command", "profile", "seeds", "data_kind", "ties", "ties_idle", "progress", "progress_curves",
                       "gained", "collapse"):
            shown = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list, tuple)) else value
            lines.append(f"- {_md_escape(key)}: {_md_escape(shown)}")
    return lines


def _diff_cell(data: ComparisonData, approach: str, base: str, reps: int, confidence: float, seed: int) -> str:
    """``approach``'s mean minus ``base``'s in percentage points, with its bootstrap CI."""
    if approach == base:
        return "-"
    gap = difference_ci(data.scores[approach], data.scores[base], reps=reps, confidence=confidence, seed=seed)
    return _signed_ci(*gap)


# What each graded measure is, in the reports' words (autotune.report.data.GRADED): its name,
# the Markdown report's sentence and the terminal table's title.
GRADED_TITLES = {
    "progress": ("progress", "the fraction of each task's subtasks (cubes, buttons, drawer, window) done at the "
                             "episodes' ends, which grades runs that all score 0% success",
                 "Aggregate progress (%): the fraction of each task's subtasks done at the end"),
    "gained": ("gained progress", "only the subtasks the policy itself changed to done, counted from each "
                                  "episode's start state (progress credits subtasks already done when the "
                                  "episode starts; a policy that does nothing gains 0)",
               "Aggregate gained progress (%): subtasks the policy changed to done, from the start state"),
}


def _progress_lines(data: ComparisonData, base: str, reps: int, confidence: float, seed: int,
                    level: str) -> list[str]:
    """The aggregate once more, scored by progress and by gained progress, where the runs recorded them."""
    lines: list[str] = []
    for measure in GRADED:
        graded_data = data.graded_data(measure)
        if graded_data is None:
            continue
        name, what, _ = GRADED_TITLES[measure]
        graded = aggregate(graded_data, reps=reps, confidence=confidence, seed=seed)
        lines += [f"## Aggregate {name} over all tasks and seeds", "",
                  f"{name.capitalize()} in %: {what}. IQM and CI as above; the last column is the mean's "
                  f"difference from `{_md_escape(base)}` in percentage points, with its {level} CI (seeds "
                  "resampled within each task): the range of differences these runs cannot rule out.", "",
                  f"| approach | IQM | {level} CI | mean | vs {_md_escape(base)} [CI] |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {_md_escape(a)} | {_pct(graded[a]['iqm'])} | [{_pct(graded[a]['ci_low'])}, "
                  f"{_pct(graded[a]['ci_high'])}] | {_pct(graded[a]['mean'])} | "
                  f"{_diff_cell(graded_data, a, base, reps, confidence, seed)} |" for a in data.approaches]
        lines.append("")
        if measure == "progress" and graded_data.curves:
            lines += _curve_lines(graded_data, reps, confidence, seed, "progress")
    return lines


def detectable(data: ComparisonData, approach: str, base: str) -> float | None:
    """The smallest difference in success from ``base`` that these runs could detect (80% power,
    two-sided 5%; ``autotune.report.power``), each run's episodes rebuilt from its score and
    ``meta["episodes_per_score"]``; runs of all tasks pooled, so task-to-task spread counts as
    run-to-run spread (conservative for the paired tests). None where the episodes are unknown."""
    from autotune.report.power import coin_episodes, detectable_difference

    episodes = data.meta.get("episodes_per_score")
    if not episodes:
        return None

    def runs(name: str) -> list[list[float]]:
        return [coin_episodes(score, episodes) for task in data.tasks for score in data.scores[name][task]]

    return detectable_difference(runs(approach), runs(base))


def _detectable_text(data: ComparisonData, approach: str, base: str) -> str:
    value = detectable(data, approach, base)
    return "-" if value is None else f"{100 * value:.1f}"


def _collapse_lines(data: ComparisonData) -> list[str]:
    """The collapse alarm's runs (``meta["collapse"]``): attention below the alarm's threshold."""
    found = data.meta.get("collapse") or {}
    lines = []
    for approach, by_task in found.items():
        for task, steps in by_task.items():
            hit = [s for s in steps if s is not None]
            if hit:
                lines.append(f"{_md_escape(approach)} on {_md_escape(task)}: {len(hit)} of {len(steps)} seeds (first at "
                             f"update {min(hit):,})")
    if not lines:
        return []
    return [f"> **Attention collapsed** (the collapse alarm: some layer's attention below its threshold, 0.2 log n "
            f"by default) in: {'; '.join(lines)}.", ""]


def _tie_lines(data: ComparisonData) -> list[str]:
    """A warning per approach that used a study's tied best trials (``meta["ties"]``), naming
    those tied because H̄ never acted (``meta["ties_idle"]``) apart from those tied by result."""
    idle_by = data.meta.get("ties_idle", {})
    lines = []
    for a, tasks in data.meta.get("ties", {}).items():
        if not tasks:
            continue
        idle = [t for t in tasks if t in idle_by.get(a, [])]
        why = (f" Tied because H̄ never acted (the control engaged in no tied trial), not by result: "
               f"{', '.join(map(_md_escape, idle))}." if idle else "")
        lines.append(f"> **Tied best trials ({_md_escape(a)}).** In the study, the best trial of "
                     f"{', '.join(map(_md_escape, tasks))} is a tie: several trials with different H̄ share the best "
                     f"success, and the schedule used is the earliest of them, not a measured optimum.{why}")
    return [line for warning in lines for line in (warning, "")]


PROFILE_POINTS = (0.25, 0.5, 0.75)


def _curve_lines(data: ComparisonData, reps: int, confidence: float, seed: int,
                 score: str = "success") -> list[str]:
    """Sample efficiency (IQM at each approach's last common evaluation step) and the
    performance profile at a few thresholds, of ``score``; the full curves are in
    report_curves.png (report_progress_curves.png) and data.json ("derived")."""
    summary = rliable_summary(data, reps=reps, confidence=confidence, seed=seed)
    level = f"{100 * confidence:g}%"
    picks = [summary["performance_profile"][data.approaches[0]]["thresholds"].index(t) for t in PROFILE_POINTS]
    png, key = ("report_curves.png", "`derived`") if score == "success" else ("report_progress_curves.png",
                                                                             "`derived.progress`")
    out = [f"## Sample efficiency and performance profiles{'' if score == 'success' else ' of progress'}", "",
           f"Full curves with their CI bands: `{png}`; numbers: `data.json` ({key}). Sample "
           f"efficiency = IQM of the runs' {score} at each evaluation step every run of the approach reached; "
           f"profile = fraction of runs whose final {score} is above a threshold. Both with "
           f"{level} stratified bootstrap CIs.", "",
           "| approach | IQM at last common step [CI] | " + " | ".join(f"runs > {100 * t:g}% [CI]" for t in PROFILE_POINTS)
           + " |", "|---|---:|" + "---:|" * len(PROFILE_POINTS)]
    for a in data.approaches:
        curve, profile = summary["sample_efficiency"].get(a), summary["performance_profile"][a]
        last = (f"{_pct(curve['iqm'][-1])} [{_pct(curve['ci_low'][-1])}, {_pct(curve['ci_high'][-1])}] "
                f"at {curve['steps'][-1]:,}" if curve and curve["steps"] else "n/a")
        cells = [f"{profile['fraction'][i]:.2f} [{profile['ci_low'][i]:.2f}, {profile['ci_high'][i]:.2f}]" for i in picks]
        out.append(f"| {_md_escape(a)} | {last} | " + " | ".join(cells) + " |")
    return [*out, ""]


def markdown_report(data: ComparisonData, baseline: str | None = None, reps: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> str:
    """The Markdown report as a string (see ``write_markdown``)."""
    base, agg, tests, summary = _stats(data, baseline, reps, confidence, seed)
    level = f"{100 * confidence:g}%"
    out = [f"# Comparison: {', '.join(data.approaches)}", ""]
    if data.generated:
        out += [f"> {GENERATED_WARNING}", ""]
    out += [*_tie_lines(data), *_collapse_lines(data), "## Setup", "", *_meta_lines(data), ""]

    out += ["## Aggregate over all tasks and seeds", "",
            f"Success rate in %. IQM = interquartile mean of all task x seed runs; CI = {level} stratified "
            f"bootstrap ({reps} resamples of seeds within each task).", "",
            f"| approach | IQM | {level} CI | mean | runs | training steps |", "|---|---:|---:|---:|---:|---:|"]
    for a in data.approaches:
        g = agg[a]
        out.append(f"| {_md_escape(a)} | {_pct(g['iqm'])} | [{_pct(g['ci_low'])}, {_pct(g['ci_high'])}] | "
                   f"{_pct(g['mean'])} | {g['n_runs']} | {g['steps']:,} |")
    out.append("")
    out += _progress_lines(data, base, reps, confidence, seed, level)

    out += ["## Per task", "", "Mean ± sample std of the success rate (%) over seeds; best mean per task in bold.", "",
            "| task | " + " | ".join(_md_escape(a) for a in data.approaches) + " |",
            "|---|" + "---:|" * len(data.approaches)]
    for t in data.tasks:
        best = max(summary[a][t]["mean"] for a in data.approaches)
        cells = []
        for a in data.approaches:
            s = summary[a][t]
            cell = f"{_pct(s['mean'])} ± {_pct(s['std'])}"
            cells.append(f"**{cell}**" if abs(s["mean"] - best) <= 1e-9 else cell)
        out.append(f"| {_md_escape(t)} | " + " | ".join(cells) + " |")
    out.append("")

    out += [f"## Paired tests against `{base}`", ""]
    if not tests:
        out += ["Only one approach: nothing to test.", ""]
    else:
        out += [f"Per-task mean success, paired by task ({len(data.tasks)} tasks). Differences in percentage points, "
                f"with the {level} CI of the mean difference (seeds resampled within each task).", "",
                "The last column is the smallest difference these runs could detect (80% power, two-sided 5%, from "
                "the seeds' and episodes' measured variance): a tie says nothing about differences below it.", "",
                f"| approach | mean diff [CI] | won / tied / lost | Wilcoxon p | t-test p | P(approach > {_md_escape(base)}) [{level} CI] | detectable (pp) |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for a, r in tests.items():
            out.append(f"| {_md_escape(a)} | {_diff_text(r)} | {r['wins']} / {r['ties']} / {r['losses']} | "
                       f"{_p(r['wilcoxon_p'])} | {_p(r['ttest_p'])} | {r['prob_improvement']:.2f} "
                       f"[{r['poi_ci_low']:.2f}, {r['poi_ci_high']:.2f}] | {_detectable_text(data, a, base)} |")
        # A note every approach shares (e.g. too few tasks) is printed once.
        shared = [n for n in next(iter(tests.values()))["notes"] if all(n in r["notes"] for r in tests.values())]
        notes = [f"- {n}" for n in shared]
        notes += [f"- {_md_escape(a)}: {n}" for a, r in tests.items() for n in r["notes"] if n not in shared]
        out.append("")
        if notes:
            out += ["Notes:", "", *notes, ""]

    out += _curve_lines(data, reps, confidence, seed)

    out += ["## How to read this", "",
            "- The IQM drops the best and worst quarter of runs and averages the rest: less noisy than the mean, "
            "less wasteful than the median. Widely overlapping CIs mean these runs cannot tell the approaches apart.",
            "- Training steps count everything an approach spent, tuning trials included: a higher score bought "
            "with many more steps is a different trade-off, not a free win.",
            f"- Paired tests compare each approach with `{base}` task by task. The Wilcoxon signed-rank test uses "
            "only signs and ranks of the differences; the paired t-test assumes they are roughly normal. With few "
            "tasks both have little power, and p-values are not corrected for comparing several approaches.",
            "- P(X > Y) is the chance that a run of X beats a run of Y on the same task (ties count half), "
            "averaged over tasks; 0.5 means no difference. A CI excluding 0.5 is evidence of a difference.",
            ""]
    if data.generated:
        out += [f"> {GENERATED_WARNING}", ""]
    return "\n".join(out)


def write_markdown(data: ComparisonData, path: str | Path, baseline: str | None = None, reps: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> Path:
    """Write the Markdown report atomically; return its path.

    Sections: setup (meta; generated data flagged), aggregate table (IQM with stratified
    bootstrap CI, mean, runs, training steps), per-task table (mean ± std over seeds),
    paired tests against ``baseline`` (default: ``"default"`` if present, else the first
    approach), sample efficiency and performance profiles at a few points (``autotune.report.curves``;
    the full curves are drawn by ``autotune.report.curve_plots``), and a "how to read this" note.
    Approaches that used a study's tied best trials (``meta["ties"]``) get a notice on top.
    """
    path = Path(path)
    atomic_write_text(path, markdown_report(data, baseline=baseline, reps=reps, confidence=confidence, seed=seed))
    return path


def write_png(data: ComparisonData, path: str | Path, reps: int = 2000, confidence: float = 0.95,
              seed: int = 0, dpi: int = 120) -> Path:
    """Write a PNG figure atomically; return its path.

    Left: IQM per approach with its stratified bootstrap CI as error bars. Right: per-task
    grouped bars of the mean success with the sample std over seeds as error bars. Uses
    matplotlib's object API with the Agg renderer (no pyplot, no global backend switch).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("the PNG report needs matplotlib: pip install matplotlib") from None
    import numpy as np

    agg = aggregate(data, reps=reps, confidence=confidence, seed=seed)
    summary = per_task_summary(data)
    approaches, tasks = data.approaches, data.tasks
    colors = [f"C{i % 10}" for i in range(len(approaches))]

    width = max(10.0, 4.0 + 0.35 * len(tasks) * len(approaches) + 1.0 * len(tasks))
    fig = Figure(figsize=(min(width, 40.0), 5.0), dpi=dpi, layout="constrained")
    ax_agg, ax_task = fig.subplots(1, 2, width_ratios=[1, max(1.5, 0.8 * len(tasks))])

    x = np.arange(len(approaches))
    vals = np.array([100 * agg[a]["iqm"] for a in approaches])
    err = np.array([[100 * (agg[a]["iqm"] - agg[a]["ci_low"]) for a in approaches],
                    [100 * (agg[a]["ci_high"] - agg[a]["iqm"]) for a in approaches]]).clip(min=0)
    ax_agg.bar(x, vals, color=colors, yerr=err, capsize=4)
    ax_agg.set_xticks(x, approaches, rotation=30, ha="right")
    ax_agg.set_ylabel("success rate (%)")
    ax_agg.set_ylim(0, 105)
    ax_agg.set_title(f"IQM, {100 * confidence:g}% stratified bootstrap CI")

    xt = np.arange(len(tasks))
    bar_w = 0.8 / len(approaches)
    for i, a in enumerate(approaches):
        means = [100 * summary[a][t]["mean"] for t in tasks]
        stds = [100 * summary[a][t]["std"] for t in tasks]
        ax_task.bar(xt - 0.4 + bar_w * (i + 0.5), means, bar_w, yerr=stds, capsize=2, color=colors[i], label=a)
    ax_task.set_xticks(xt, [_short_task(t) for t in tasks], rotation=30, ha="right")
    ax_task.set_ylim(0, 120)  # headroom for the legend above 100%
    ax_task.set_yticks(range(0, 101, 20))
    ax_task.set_title("Per task: mean ± std over seeds")
    ax_task.legend(fontsize="small", ncols=min(len(approaches), 5), loc="upper right")

    title = "tql-tune compare"
    if data.meta.get("profile"):
        title += f" (profile {data.meta['profile']})"
    if data.generated:
        title += ": GENERATED DATA, not a real result"
    fig.suptitle(title, color="red" if data.generated else "black")

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _short_task(task: str) -> str:
    return task.replace("-singletask", "").removesuffix("-v0")


def rich_tables(data: ComparisonData, baseline: str | None = None, reps: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> list:
    """``[aggregate, per-task, paired tests]`` as ``rich.table.Table`` (paired tests omitted with one approach)."""
    from rich.markup import escape
    from rich.table import Table

    base, agg, tests, summary = _stats(data, baseline, reps, confidence, seed)
    level = f"{100 * confidence:g}%"
    caption = "GENERATED DATA: not a real result" if data.generated else None

    t_agg = Table(title="Aggregate success (%) over tasks x seeds", caption=caption, caption_style="bold red")
    for col in ("approach", "IQM", f"{level} CI", "mean", "runs", "steps"):
        t_agg.add_column(col, justify="left" if col == "approach" else "right")
    for a in data.approaches:
        g = agg[a]
        t_agg.add_row(escape(a), _pct(g["iqm"]), f"[{_pct(g['ci_low'])}, {_pct(g['ci_high'])}]", _pct(g["mean"]),
                      str(g["n_runs"]), f"{g['steps']:,}")

    t_task = Table(title="Per task: mean ± std success (%) over seeds")
    t_task.add_column("task")
    for a in data.approaches:
        t_task.add_column(escape(a), justify="right")
    for t in data.tasks:
        best = max(summary[a][t]["mean"] for a in data.approaches)
        cells = []
        for a in data.approaches:
            s = summary[a][t]
            cell = f"{_pct(s['mean'])} ± {_pct(s['std'])}"
            cells.append(f"[bold]{cell}[/bold]" if abs(s["mean"] - best) <= 1e-9 else cell)
        t_task.add_row(escape(t), *cells)

    tables = [t_agg, t_task]
    for measure in reversed(GRADED):  # inserted after the success table, progress first
        graded_data = data.graded_data(measure)
        if graded_data is None:
            continue
        graded = aggregate(graded_data, reps=reps, confidence=confidence, seed=seed)
        t_prog = Table(title=GRADED_TITLES[measure][2])
        for col in ("approach", "IQM", f"{level} CI", "mean", f"vs {escape(base)} (pp) \\[CI]"):
            t_prog.add_column(col, justify="left" if col == "approach" else "right")
        for a in data.approaches:
            g = graded[a]
            t_prog.add_row(escape(a), _pct(g["iqm"]), f"[{_pct(g['ci_low'])}, {_pct(g['ci_high'])}]", _pct(g["mean"]),
                           escape(_diff_cell(graded_data, a, base, reps, confidence, seed)))
        tables.insert(1, t_prog)
    if tests:
        t_test = Table(title=f"Paired tests vs {escape(base)} ({len(data.tasks)} tasks)")
        t_test.caption = "detectable: the smallest difference these runs could detect (80% power, two-sided 5%)"
        for col in ("approach", "mean diff (pp) \\[CI]", "won/tied/lost", "Wilcoxon p", "t-test p", f"P(> {escape(base)}) \\[{level} CI]", "detectable (pp)", "notes"):
            t_test.add_column(col, justify="left" if col in ("approach", "notes") else "right")
        for a, r in tests.items():
            t_test.add_row(escape(a), escape(_diff_text(r)), f"{r['wins']}/{r['ties']}/{r['losses']}", _p(r["wilcoxon_p"]),
                           _p(r["ttest_p"]), f"{r['prob_improvement']:.2f} [{r['poi_ci_low']:.2f}, {r['poi_ci_high']:.2f}]",
                           _detectable_text(data, a, base), escape("; ".join(r["notes"])))
        tables.append(t_test)
    return tables
