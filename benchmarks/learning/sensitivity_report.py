"""The report of ``python -m benchmarks.learning.sensitivity``: one row per (H̄, layout) from its runs'
measurements (success with a CI over seeds and episodes, progress, held-out TD error, Q - MC,
attention per layer), two tests of each H̄'s successes against the rest of its layout, the
table, the terminal plot and the figure."""

from __future__ import annotations

import itertools
import math

import numpy as np

from autotune.report.power import coin_episodes, detectable_difference, seed_mean_draws
from autotune.report.stats import iqm
from benchmarks import common


def constant_rho(label: str) -> bool:
    """A row of a constant rho (plotted against rho), not ``published`` or a baseline arm."""
    try:
        float(label)
    except ValueError:
        return False
    return True


def bootstrap_cis(per_seed: list[np.ndarray], reps: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """95% CIs of the mean and of the IQM over seeds (of each seed's mean), from the same
    resamples (``seed_mean_draws``)."""
    draws = seed_mean_draws(per_seed, reps, rng)
    return {"mean": _percentile_95(draws.mean(axis=1)), "iqm": _percentile_95(iqm(draws, axis=1))}


def _percentile_95(values: np.ndarray) -> tuple[float, float]:
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def aggregate(runs: list[dict], log_n: float, reps: int) -> list[dict]:
    """One row per (H̄, layout), in the order of the grid."""
    rng, rows, episodes_of = np.random.default_rng(0), [], {}
    for name in dict.fromkeys(r["name"] for r in runs):
        group = [r for r in runs if r["name"] == name]
        episodes = [np.array(coin_episodes(r["success"], r["episodes"])) for r in group]
        progress = [np.array([r["progress"]]) for r in group if r["progress"] is not None]
        success_cis = bootstrap_cis(episodes, reps, rng)
        progress_cis = bootstrap_cis(progress, reps, rng) if progress else {"mean": None, "iqm": None}
        row = {"name": name, "label": group[0]["label"], "sharing": group[0]["sharing"], "seeds": len(group),
               "steps": group[0]["step"], "success": float(np.mean([e.mean() for e in episodes])),
               "successes": int(sum(e.sum() for e in episodes)), "episodes": int(sum(len(e) for e in episodes)),
               "success_ci": success_cis["mean"], "seed_success": [r["success"] for r in group],
               "success_iqm": iqm([e.mean() for e in episodes]), "success_iqm_ci": success_cis["iqm"],
               "progress": float(np.mean([p[0] for p in progress])) if progress else None,
               "progress_ci": progress_cis["mean"],
               "progress_iqm": iqm([p[0] for p in progress]) if progress else None,
               "progress_iqm_ci": progress_cis["iqm"],
               "engaged_at": [r["engaged_at"] for r in group],  # per seed (None: the control never engaged)
               "val_td": _mean(r["val_td"] for r in group),
               "overestimation": _mean(r["overestimation"] for r in group), "layers": _attention(group, log_n)}
        rows.append(row)
        episodes_of[name] = episodes
    for row, p_value in zip(rows, success_tests(rows)):
        row["success_p"] = p_value
    for row in rows:
        # H̄ against the other H̄ of its layout; the layout against the other layouts at its H̄
        row["seed_p"], row["seed_diff"], row["seed_diff_ci"] = _versus_rest(row, rows, "sharing", episodes_of, reps)
        row["layout_p"], row["layout_diff"], row["layout_diff_ci"] = _versus_rest(row, rows, "label", episodes_of,
                                                                                  reps)
        rest = [e for r in rows if r["sharing"] == row["sharing"] and r is not row for e in episodes_of[r["name"]]]
        row["detectable"] = detectable_difference(episodes_of[row["name"]], rest) if rest else None
    return rows


def _fmt_points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} points"


def _versus_rest(row: dict, rows: list[dict], same: str, episodes_of: dict, reps: int) -> tuple:
    """The seed-level p and the difference with its CI of a row against the other rows that
    share its ``same`` key (p = 1 and no difference when there are none)."""
    rest = [r for r in rows if r[same] == row[same] and r is not row]
    if not rest:
        return 1.0, None, None
    p_value = seed_permutation_p(row["seed_success"], [v for r in rest for v in r["seed_success"]])
    diff, ci = difference_from_rest(episodes_of[row["name"]], [e for r in rest for e in episodes_of[r["name"]]], reps)
    return p_value, diff, ci


def difference_from_rest(own: list[np.ndarray], rest: list[np.ndarray], reps: int) -> tuple[float, tuple[float, float]]:
    """Mean success over one row's seeds minus that over the rest (the other H̄ of its layout, or
    the other layouts at its H̄), with a 95% CI from resampling both groups hierarchically
    (seeds, then episodes within each seed): how large a gap these runs allow, which a p-value
    does not say. Episodes are resampled too, because with 2 seeds of equal success a
    seeds-only bootstrap would see no spread at all."""
    rng = np.random.default_rng(1)  # its own stream: the other CIs stay as they were
    point = float(np.mean([e.mean() for e in own]) - np.mean([e.mean() for e in rest]))
    gaps = seed_mean_draws(own, reps, rng).mean(axis=1) - seed_mean_draws(rest, reps, rng).mean(axis=1)
    return point, _percentile_95(gaps)


def success_tests(rows: list[dict]) -> list[float]:
    """Per row: Fisher's exact test (two-sided) of its successful episodes against those of the
    other H̄ of its layout, pooled. It counts episodes as independent, which episodes of one
    seed are not, and it is one of several comparisons: a lead to confirm, not a verdict."""
    from scipy.stats import fisher_exact

    p_values = []
    for row in rows:
        others = [r for r in rows if r["sharing"] == row["sharing"] and r is not row]
        won, lost = sum(r["successes"] for r in others), sum(r["episodes"] - r["successes"] for r in others)
        table = [[row["successes"], row["episodes"] - row["successes"]], [won, lost]]
        p_values.append(float(fisher_exact(table).pvalue) if others else 1.0)
    return p_values


EXACT_LIMIT = 200_000  # assignments enumerated; above, a fixed-seed sample of MONTE_CARLO of them
MONTE_CARLO = 20_000


def seed_permutation_p(own: list[float], others: list[float]) -> float:
    """Two-sided permutation test of mean success over seeds, one H̄'s seeds against the others':
    the share of all ways to split the pooled seeds into groups of these sizes whose difference
    in means is at least as large (in absolute value) as the observed one. Seeds, not episodes,
    are the units here, so it does not assume that a seed's episodes are independent; with few
    seeds it cannot reach small p (2 seeds against 10: p >= 1/66)."""
    pooled, k = np.array(list(own) + list(others), float), len(own)
    observed = abs(np.mean(own) - np.mean(others)) - 1e-12  # float ties count as "as large"
    if math.comb(len(pooled), k) <= EXACT_LIMIT:
        splits = np.array(list(itertools.combinations(range(len(pooled)), k)))
    else:
        rng = np.random.default_rng(0)
        splits = np.array([rng.permutation(len(pooled))[:k] for _ in range(MONTE_CARLO)])
    picked = np.zeros((len(splits), len(pooled)), bool)
    np.put_along_axis(picked, splits, True, axis=1)
    own_mean = (picked * pooled).sum(axis=1) / k
    rest_mean = (~picked * pooled).sum(axis=1) / (len(pooled) - k)
    return float(np.mean(np.abs(own_mean - rest_mean) >= observed))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _attention(group: list[dict], log_n: float) -> list[dict]:
    """Per layer, over seeds: medians of the row statistics, the [VALUE] row's weight split."""
    views = [r["attention"] for r in group if r.get("attention")]
    if not views:
        return []
    layers = []
    for index in range(len(views[0])):
        per_seed = [v[index] for v in views]
        layers.append({
            "value_entropy": float(np.mean([v["value"]["entropy"][1] for v in per_seed])) / log_n,
            "other_entropy": float(np.mean([v["other"]["entropy"][1] for v in per_seed])) / log_n,
            "value_largest": float(np.mean([v["value"]["largest"][1] for v in per_seed])),
            "on_action": float(np.mean([v["value_weight"]["action"] for v in per_seed])),
            "on_observation": float(np.mean([v["value_weight"]["observation"] for v in per_seed])),
        })
    return layers


def print_table(rows: list[dict], args, console) -> None:
    from rich.table import Table

    table = Table(title=f"H̄ sensitivity: {args.task}, profile {args.profile}, {args.steps:,} updates, agent "
                        f"{' '.join(args.agent)}")
    table.caption = ("engaged at: per seed; success: mean [95% CI over seeds and episodes], below it the IQM "
                     "over seeds [CI]; progress: the same, CIs over seeds; Q - MC: mean Q minus the data's "
                     "discounted return; attention per layer l: median row entropy of the [VALUE] query / of "
                     "the other queries (fractions of log n), the [VALUE] row's median largest weight and its "
                     "weight on action tokens")
    for column in ("rho", "temperatures", "engaged at", "success %", "progress %", "held-out TD", "Q - MC",
                   *[f"l{i}: H V / other, max, on act" for i in range(max(len(r["layers"]) for r in rows))]):
        table.add_column(column, justify="left" if column in ("rho", "temperatures") else "right")
    for row in rows:
        progress = "-" if row["progress"] is None else _percent_cell(row, "progress")
        layers = [f"{la['value_entropy']:.2f}/{la['other_entropy']:.2f}, {la['value_largest']:.3f}, "
                  f"{la['on_action']:.3f}" for la in row["layers"]]
        layers += ["-"] * (max(len(r["layers"]) for r in rows) - len(layers))  # fql: no attention
        engaged = ", ".join("never" if e is None else f"{e:,}" for e in row["engaged_at"])
        table.add_row(row["label"], row["sharing"], engaged,
                      _percent_cell(row, "success"), progress,
                      _fmt(row["val_td"]), _fmt(row["overestimation"]), *layers)
    console.print(table)


def terminal_plot(rows: list[dict], width: int = 90, height: int = 16) -> str:
    """The figure's content in the terminal: success, progress and each layer's [VALUE]-row
    median entropy (fractions of log n), all in percent, against rho (constant-H̄ rows)."""
    from autotune.report.summary import fresh_plotext, titled_plot

    plt = fresh_plotext()
    plt.plotsize(width, height)
    for sharing in dict.fromkeys(r["sharing"] for r in rows):
        constant = [r for r in rows if r["sharing"] == sharing and constant_rho(r["label"])]
        x = [float(r["label"]) for r in constant]
        plt.plot(x, [100 * r["success"] for r in constant], marker="o", label=f"success ({sharing})")
        if all(r["progress"] is not None for r in constant):
            plt.plot(x, [100 * r["progress"] for r in constant], marker="s", label=f"progress ({sharing})")
        for layer in range(len(constant[0]["layers"]) if constant and constant[0]["layers"] else 0):
            plt.plot(x, [100 * r["layers"][layer]["value_entropy"] for r in constant], marker="x",
                     label=f"l{layer} [VALUE] entropy / log n ({sharing})")
    plt.ylim(0, 100)
    plt.xlabel("rho = H̄ / log n")
    return titled_plot("success %, progress % and attention entropy % of log n vs rho", plt.build())


def _percent_cell(row: dict, key: str) -> str:
    """'mean [CI]' over 'IQM [CI]' of a row's success or progress, in percent."""
    def one(point: float, ci: tuple[float, float]) -> str:
        return f"{100 * point:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    return f"{one(row[key], row[f'{key}_ci'])}\nIQM {one(row[f'{key}_iqm'], row[f'{key}_iqm_ci'])}"


def _difference(row: dict, key: str = "seed") -> str:
    if row[f"{key}_diff"] is None:
        return ""
    low, high = row[f"{key}_diff_ci"]
    return f", {100 * row[f'{key}_diff']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for sharing in dict.fromkeys(r["sharing"] for r in rows):
        constant = [r for r in rows if r["sharing"] == sharing and constant_rho(r["label"])]
        x = [float(r["label"]) for r in constant]
        for key, marker in (("success", "o"), ("progress", "s")):
            y = [r[key] for r in constant if r[key] is not None]
            if len(y) == len(x):
                low = [r[key] - r[f"{key}_ci"][0] for r in constant]
                high = [r[f"{key}_ci"][1] - r[key] for r in constant]
                axes[0].errorbar(x, y, yerr=[low, high], marker=marker, capsize=3, label=f"{key} ({sharing})")
        for layer in range(len(constant[0]["layers"]) if constant and constant[0]["layers"] else 0):
            axes[1].plot(x, [r["layers"][layer]["value_entropy"] for r in constant], marker="o",
                         label=f"layer {layer} [VALUE] rows ({sharing})")
    axes[0].set(xlabel="rho = H̄ / log n", ylabel="final success / progress", title="results")
    axes[1].plot([0.3, 1.0], [0.3, 1.0], "k--", lw=0.8, label="the target")
    axes[1].set(xlabel="rho = H̄ / log n", ylabel="median row entropy / log n", title="attention")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(args, done: list[dict], command: str, console, json_path: str | None, png_path: str | None,
           header: dict[str, str]) -> int:
    """The table, the success tests, the terminal plot; ``--json`` and ``--png`` if asked. ``command``
    is the one that trained the runs (several joined by " + " when pooled: ``--from-json`` reads
    the settings from it), ``header`` this report's own (it starts the JSON)."""
    from tql.tasks import get_task

    log_n = get_task(args.task).max_entropy
    rows = aggregate(done, log_n, args.reps)
    print_table(rows, args, console)
    console.print("success vs the other H̄ of its layout pooled (Fisher's exact test; episodes counted as "
                  "independent, which episodes of one seed are not): " +
                  "; ".join(f"{r['label']} {r['sharing']} {r['successes']}/{r['episodes']} p = {r['success_p']:.3g}"
                            for r in rows))
    console.print("the same with seeds as the units (permutation test of mean success over seeds; the mean "
                  "difference from the rest in points, with its 95% CI resampling seeds and episodes): " +
                  "; ".join(f"{r['label']} {r['sharing']} {len(r['seed_success'])} seeds p = {r['seed_p']:.3g}"
                            + _difference(r) for r in rows))
    if len({r["sharing"] for r in rows}) > 1:
        compared = [r for r in rows if r["layout_diff"] is not None]
        console.print("each temperature layout against the other layouts at its H̄ (the same permutation test and "
                      "difference): " + "; ".join(f"{r['label']} {r['sharing']} p = {r['layout_p']:.3g}"
                                                  + _difference(r, "layout") for r in compared))
    console.print("the smallest difference from the rest of its layout that these seeds and episodes could detect "
                  "(80% power, two-sided 5%; autotune.report.power): " +
                  "; ".join(f"{r['label']} {r['sharing']} {_fmt_points(r['detectable'])}" for r in rows))
    if len({r["label"] for r in rows if constant_rho(r["label"])}) > 1:
        print(terminal_plot(rows))
    common.write_json(json_path, {"command": command, "task": args.task, "log_n": log_n, "runs": done, "rows": rows},
                      common.ROOT / "benchmarks" / "learning" / "sensitivity.py", header=header)
    if png_path:
        plot(rows, png_path, f"{args.task}: {args.steps:,} updates, {' '.join(args.agent)}")
    return 0
