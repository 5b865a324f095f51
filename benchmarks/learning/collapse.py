"""Where does attention collapse cost results? Free attention (control off) against the
published control, over critic shape, critic learning rate and data size, with outcomes.

The paper's effect lives where attention left to itself collapses: at 26M parameters, and in a
4-layer critic, its transformer without the entropy control scores far below TQL. This script
trains both arms of each configuration on the same data, seeds and budget:

- ``off``: the entropy control switched off (no penalty, temperatures frozen): the paper's
  "transformer without TQL";
- ``on``: the published control at the default target (rho = 0.6, H̄ = 0.6 log n), alpha from
  1.0 unless ``--agent`` says otherwise.

Shapes are preset names (``0.03M``, ``0.4M``, ``1M-d5``, ...) or ``wWIDTH-dDEPTH[-hHEADS]``
(``w32-d4``: width 32, depth 4). Per run it reports:

- per layer, the lowest [VALUE]-row and other-row entropy (fraction of log n) and the first
  logged update at which any row group fell below 0.5 and 0.2 log n (``off`` runs have no
  "engaged" column: nothing engages without a control);
- the held-out TD error, Q - Monte-Carlo return on the validation data (``sensitivity.py``'s
  measures), the update at which the control first engaged (``on`` only);
- success, progress and progress from the episode's start state (``gained``: only subtasks the
  policy changed to done) at every evaluation (default: midway and at the end, 50 episodes each).

Per configuration it prints ``off - on`` with a 95% CI (seeds, and episodes within a seed,
resampled) and the smallest difference the seeds and episodes could detect (80% power,
two-sided 5%; ``autotune.report.power``).

``--price`` measures each shape's update (one thread, eager, shapes interleaved in rounds) and
one evaluation's episodes first, and prices the grid before anything trains; the estimate goes
into the result file. Runs are resumable (re-run the same command; a run's measures are kept in
its folder as ``collapse.json``) and spread over ``--jobs`` one-thread processes.

    python -m benchmarks.learning.collapse --shapes 0.03M,w32-d4 --rates 1e-3 --seeds 0,1,2 \\
        --steps 5000 --out /work/bench/runs/collapse --json benchmarks/learning/results/collapse.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common

CONTROLS = ("off", "on")
THRESHOLDS = (0.5, 0.2)  # fractions of log n whose first crossing is reported


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="cube-double-play-singletask-task1-v0")
    p.add_argument("--shapes", default="0.03M,w32-d4", help="critic presets or wWIDTH-dDEPTH[-hHEADS] shapes")
    p.add_argument("--rates", default="1e-3", help="critic learning rates (published: 1e-4)")
    p.add_argument("--episodes", default="40", help="generated dataset sizes, in episodes of 1001 steps")
    p.add_argument("--controls", default="off,on", help=f"arms: {', '.join(CONTROLS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--evals", type=int, default=2, help="evaluations per run, evenly spaced (the last at the end)")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--profile", default="cpu", help="budgets and the actor (the critic comes from --shapes)")
    p.add_argument("--agent", action="append", default=[], help="agent option KEY=VALUE for every run")
    p.add_argument("--horizon", type=int, default=300, help="steps left for a Monte-Carlo return to count")
    p.add_argument("--jobs", default="auto", help="runs trained at once, one-thread processes (auto: one per core)")
    p.add_argument("--price", action="store_true", help="measure and price the grid, then stop")
    p.add_argument("--price-seconds", type=float, default=8.0, help="seconds of updates timed per shape")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="runs/collapse")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    common.add_json_option(p, "the table, the contrasts and every run")
    p.add_argument("--from-json", help="report an earlier --json again, training nothing")
    p.add_argument("--finished-only", action="store_true",
                   help="report the grid's runs that have finished (their collapse.json), training nothing")
    return p.parse_args(argv)


def split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def grid(args) -> list[dict]:
    """Every run: (task, shape, rate, data episodes, arm, seed) and its folder."""
    runs = []
    # Seeds before arms: both arms of a seed finish close together, so a cut grid still pairs.
    for task, shape, rate, episodes, seed, control in itertools.product(
            split(args.tasks), split(args.shapes), split(args.rates), split(args.episodes), split(args.seeds),
            split(args.controls)):
        config = f"{shape}-lr{float(rate):g}-{int(episodes)}ep"
        runs.append({"task": task, "shape": shape, "rate": float(rate), "episodes": int(episodes),
                     "control": control, "seed": int(seed), "config": config,
                     "dir": str(Path(args.out) / task / config / control / f"seed-{seed}")})
    return runs


def train_config(args, run: dict):
    """One run's TrainConfig: the profile's budgets and actor, the run's critic, rate, data and arm."""
    from autotune.agent_options import agent_overrides
    from tql.errors import ConfigError
    from tql.trainer import TrainConfig

    if run["control"] not in CONTROLS:
        raise ConfigError(f"--controls {run['control']!r} is not one of: {', '.join(CONTROLS)}")
    agent = {**agent_overrides("published", args.agent), "size": run["shape"], "critic_lr": run["rate"],
             "entropy_control": run["control"] == "on"}
    if args.evals < 1 or args.steps < args.evals:
        raise ConfigError(f"--evals {args.evals} must be >= 1 and <= --steps {args.steps}")
    return TrainConfig.from_profile(run["task"], args.profile, agent, seed=run["seed"], steps=args.steps,
                                    eval_every=args.steps // args.evals, eval_episodes=args.eval_episodes,
                                    data_episodes=run["episodes"], data_dir=args.data_dir, make_data=True,
                                    threads=1, eval_workers=1)


def crossings(train_rows: list[dict], depth: int, log_n: float) -> list[dict]:
    """Per layer: the lowest entropy of each row group (fraction of log n) and the first
    logged update at which either group fell below each of ``THRESHOLDS`` (None: never)."""
    layers = []
    for layer in range(depth):
        keys = {group: f"entropy/l{layer}_{group}" for group in ("value", "other")}
        series = [(row["step"], {g: row[k] / log_n for g, k in keys.items()}) for row in train_rows
                  if all(k in row for k in keys.values())]
        entry = {f"lowest_{g}": min((v[g] for _, v in series), default=None) for g in keys}
        for threshold in THRESHOLDS:
            entry[f"below_{threshold:g}"] = next((step for step, v in series if min(v.values()) < threshold), None)
        layers.append(entry)
    return layers


def measure(args, run: dict) -> dict:
    """A finished run's measures (kept in its folder: a re-run reads them back)."""
    from benchmarks.learning.sensitivity import measure as outcome
    from tql.agent import critic_depth
    from tql.io import read_jsonl

    kept = Path(run["dir"]) / "collapse.json"
    if kept.is_file():
        return kept_measures(kept)
    config = train_config(args, run)
    rows = read_jsonl(Path(run["dir"]) / "metrics.jsonl")
    evals = [{k: r.get(k) for k in ("step", "success_rate", "episodes", "progress", "gained", "gained_episodes")}
             for r in rows if r.get("type") == "eval"]
    train_rows = [r for r in rows if r.get("type") == "train"]
    result = {**outcome(config, Path(run["dir"]), args.horizon), "evals": evals,
              "layers": crossings(train_rows, critic_depth(config.agent), config.spec.max_entropy)}
    if run["control"] == "off":
        result["engaged_at"] = None  # no control: nothing engages (the column is not shown for off runs)
    common.write_json(kept, result, __file__)  # the header: the sweep that measured it
    return result


def kept_measures(path: Path) -> dict:
    """A run's measures kept in its folder, without the file's header (older files have none)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "header"}


def train_and_measure(args, run: dict) -> dict:
    import torch

    from tql.trainer import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    summary = Path(run["dir"]) / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("steps") == args.steps):
        train(train_config(args, run), run["dir"], progress=False)
    done = {**run, **measure(args, run), "seconds": round(time.perf_counter() - start)}
    print(f"{run['config']} {run['control']} seed {run['seed']}: success {100 * done['success']:.0f}%, "
          f"gained {_pct(done['evals'][-1].get('gained'))}, {done['seconds']} s", flush=True)
    return done


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# ----- pricing ------------------------------------------------------------------------------------

def price(args, runs: list[dict], say=print) -> dict:
    """Each shape's one-thread update time (eager, shapes interleaved in rounds), one evaluation
    step's time, and the grid's estimated wall time over ``args.jobs`` processes."""
    import torch

    from autotune.experiment.probe import CPU_COMPILE_SECONDS, CPU_COMPILED_SPEEDUP, random_batch
    from tql.agent import COMPILE_MIN_STEPS, TQLAgent
    from tql.evaluation import evaluate
    from tql.tasks import get_task

    torch.set_num_threads(1)
    agents = {}
    for run in runs:
        key = (run["task"], run["shape"])
        if key not in agents:
            config = train_config(args, {**run, "control": "on"}).agent.replace(compile=False)
            task = get_task(run["task"])
            torch.manual_seed(0)
            agents[key] = (TQLAgent(task.obs_dim, task.act_dim, config, "cpu", total_steps=args.steps),
                           random_batch(config.batch_size, task, "cpu"), 0.6 * math.log(task.n_tokens))
    times = {key: [] for key in agents}
    rounds = 3
    for _ in range(rounds):
        for key, (agent, batch, target) in agents.items():
            agent.update(batch, target)  # warm
            done, start = 0, time.perf_counter()
            while done < 2 or time.perf_counter() - start < args.price_seconds / rounds:
                agent.update(batch, target)
                done += 1
            times[key].append((time.perf_counter() - start) / done)
    per_update = {f"{task} {shape}": float(np.median(t)) for (task, shape), t in times.items()}
    eval_step = {}
    for task_name in dict.fromkeys(r["task"] for r in runs):
        task = get_task(task_name)
        agent = next(a for (t, _), (a, _, _) in agents.items() if t == task_name)
        policy = lambda obs, agent=agent: agent.actor(  # noqa: E731
            torch.as_tensor(obs), torch.randn(len(obs), task.act_dim)).detach().numpy()
        result = evaluate(policy, task, episodes=2, num_envs=1, max_steps=100)
        eval_step[task_name] = result.seconds / max(1, result.env_steps)
    compiled = args.steps >= COMPILE_MIN_STEPS["cpu"]
    seconds = []
    for run in runs:
        update = per_update[f"{run['task']} {run['shape']}"] / (CPU_COMPILED_SPEEDUP if compiled else 1.0)
        episode_steps = get_task(run["task"]).episode_length
        seconds.append(args.steps * update + (CPU_COMPILE_SECONDS if compiled else 0.0)
                       + args.evals * args.eval_episodes * episode_steps * eval_step[run["task"]])
    wall = _makespan(seconds, args.jobs)
    for key, value in per_update.items():
        say(f"update {key}: {1000 * value:.1f} ms eager on one thread"
            f"{f', ~{1000 * value / CPU_COMPILED_SPEEDUP:.1f} ms compiled' if compiled else ''}")
    for key, value in eval_step.items():
        say(f"evaluation {key}: {1000 * value:.2f} ms per env step (episodes run to their end: an upper bound)")
    say(f"{len(runs)} runs: {sum(seconds) / 60:.0f} run-minutes, ~{wall / 60:.0f} minutes on {args.jobs} "
        f"process(es)")
    return {"update_seconds": per_update, "eval_step_seconds": eval_step, "run_seconds": seconds,
            "wall_minutes": round(wall / 60, 1), "compiled": compiled}


def _makespan(seconds: list[float], jobs: int) -> float:
    """Wall time of runs handed in order to the first free of ``jobs`` processes."""
    free = [0.0] * max(1, jobs)
    for s in seconds:
        free[free.index(min(free))] += s
    return max(free)


# ----- the report ---------------------------------------------------------------------------------

def arm_table(runs: list[dict]) -> list[dict]:
    """One row per (task, config, arm): outcomes and attention over its seeds."""
    rows = []
    for key in dict.fromkeys((r["task"], r["config"], r["control"]) for r in runs):
        group = [r for r in runs if (r["task"], r["config"], r["control"]) == key]
        last = [r["evals"][-1] for r in group]
        depth = len(group[0]["layers"])
        rows.append({
            "task": key[0], "config": key[1], "control": key[2], "seeds": len(group),
            "success": float(np.mean([e["success_rate"] for e in last])),
            "gained": _mean([e.get("gained") for e in last]), "progress": _mean([e.get("progress") for e in last]),
            "midway_success": _mean([r["evals"][0]["success_rate"] for r in group]) if len(group[0]["evals"]) > 1
            else None,
            "lowest": [min(min(r["layers"][layer]["lowest_value"], r["layers"][layer]["lowest_other"])
                           for r in group) for layer in range(depth)],
            "lowest_value_median": [float(np.median([r["layers"][layer]["lowest_value"] for r in group]))
                                    for layer in range(depth)],
            **{f"below_{t:g}": [_first(r["layers"], t) for r in group] for t in THRESHOLDS},
            "engaged_at": [r.get("engaged_at") for r in group] if key[2] == "on" else None,
            "val_td": _mean([r.get("val_td") for r in group]),
            "q_minus_mc": _mean([r.get("overestimation") for r in group]),
        })
    return rows


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _first(layers: list[dict], threshold: float) -> int | None:
    steps = [layer[f"below_{threshold:g}"] for layer in layers if layer[f"below_{threshold:g}"] is not None]
    return min(steps) if steps else None


def contrasts(runs: list[dict], reps: int) -> list[dict]:
    """``off - on`` per (task, config), matched seeds: success and gained progress, each with a
    bootstrap CI over seeds and episodes and its minimum detectable difference."""
    from autotune.report.power import difference_ci, detectable_difference

    found = []
    for task, config in dict.fromkeys((r["task"], r["config"]) for r in runs):
        arms = {c: [r for r in runs if (r["task"], r["config"], r["control"]) == (task, config, c)]
                for c in CONTROLS}
        if not all(arms.values()):
            continue
        entry = {"task": task, "config": config}
        for measure_name in ("success", "gained"):
            samples = {c: [_episodes(r["evals"][-1], measure_name) for r in arms[c]] for c in CONTROLS}
            if any(s is None for c in CONTROLS for s in samples[c]):
                continue
            diff, low, high = difference_ci(samples["off"], samples["on"], reps=reps)
            entry[measure_name] = {"off_minus_on": diff, "ci": [low, high],
                                   "detectable": detectable_difference(samples["off"], samples["on"])}
        pairs = {c: {r["seed"]: r["val_td"] for r in arms[c] if r.get("val_td")} for c in CONTROLS}
        seeds = sorted(set(pairs["off"]) & set(pairs["on"]))
        if seeds:
            entry["val_td"] = td_ratio([pairs["off"][s] for s in seeds], [pairs["on"][s] for s in seeds], reps)
        found.append(entry)
    return found


def td_ratio(off: list[float], on: list[float], reps: int, seed: int = 0) -> dict:
    """How much worse free attention's critic predicts held-out TD targets: the geometric mean
    over seeds of ``off / on`` held-out TD error (same seed, same data), with a 95% bootstrap CI
    resampling seeds, and the number of seeds where ``off`` is the larger."""
    import numpy as np

    logs = np.log(np.asarray(off, float) / np.asarray(on, float))
    draws = np.random.default_rng(seed).choice(logs, size=(reps, len(logs)), replace=True).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"ratio": float(np.exp(logs.mean())), "ci": [float(np.exp(low)), float(np.exp(high))],
            "seeds_higher": int((logs > 0).sum()), "seeds": len(logs)}


def _episodes(evaluation: dict, measure_name: str) -> list[float] | None:
    """One evaluation's per-episode values: successes rebuilt from its rate and episode count
    (their order does not matter to the statistics), gained progress as recorded."""
    from autotune.report.power import coin_episodes

    if measure_name == "success":
        return coin_episodes(evaluation["success_rate"], evaluation["episodes"])
    return evaluation.get("gained_episodes")


def report(args, runs: list[dict], priced: dict | None, console) -> dict:
    from rich.table import Table

    arms = arm_table(runs)
    table = Table(title="attention and outcomes per arm (last evaluation; entropies as fractions of log n)")
    for name in ("task", "config", "arm", "seeds", "success %", "mid success %", "gained %", "progress %",
                 "lowest H per layer", "below 0.5 at", "below 0.2 at", "engaged at", "val TD", "Q - MC"):
        table.add_column(name, overflow="fold")
    for row in arms:
        table.add_row(row["task"].replace("-singletask", ""), row["config"], row["control"], str(row["seeds"]),
                      f"{100 * row['success']:.1f}", _pct_or(row["midway_success"]), _pct_or(row["gained"]),
                      _pct_or(row["progress"]), " ".join(f"{v:.2f}" for v in row["lowest"]),
                      _steps(row["below_0.5"]), _steps(row["below_0.2"]),
                      "-" if row["engaged_at"] is None else _steps(row["engaged_at"]),
                      _num(row["val_td"]), _num(row["q_minus_mc"]))
    console.print(table)
    diffs = contrasts(runs, args.reps)
    for entry in diffs:
        for name in ("success", "gained"):
            if name in entry:
                d = entry[name]
                console.print(f"{entry['task']} {entry['config']}: {name} off - on = {100 * d['off_minus_on']:+.1f} "
                              f"points, 95% CI [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]; detectable with "
                              f"80% power: {100 * d['detectable']:.1f} points", soft_wrap=True)
        if "val_td" in entry:
            t = entry["val_td"]
            console.print(f"{entry['task']} {entry['config']}: held-out TD error off / on = {t['ratio']:.2f}x "
                          f"(geometric mean over seeds), 95% CI [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}]; off higher in "
                          f"{t['seeds_higher']} of {t['seeds']} seeds", soft_wrap=True)
    return {"priced": priced, "arms": arms, "contrasts": diffs, "runs": runs}


def _pct_or(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _steps(values: list) -> str:
    return ", ".join("never" if v is None else f"{v:,}" for v in values)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from autotune.tuning.trials import resolve_workers
    from benchmarks.learning.side_by_side import side_by_side
    from tql.errors import ConfigError

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 220)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for line in common.header_lines(saved["header"]):  # the saved run's (older files: a list of lines)
            print(line, flush=True)
        report(args, saved["runs"], saved.get("priced"), console)
        return 0
    runs = grid(args)
    try:
        args.jobs = resolve_workers(args.jobs, "cpu", len(runs), option="--jobs")
        for run in runs:  # bad settings fail here, in one line, before any data or training
            train_config(args, run)
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)
        return 2
    header = common.print_header(__file__, argv)
    if args.finished_only:
        done = [{**run, **kept_measures(Path(run["dir"]) / "collapse.json")} for run in runs
                if (Path(run["dir"]) / "collapse.json").is_file()]
        console.print(f"{len(done)} of {len(runs)} runs finished")
        if done:
            common.write_json(args.json, report(args, done, None, console), __file__, argv, header=header)
        return 0
    priced = price(args, runs, console.print) if args.price else None
    if args.price:
        common.write_json(args.json, {"priced": priced, "runs": []}, __file__, argv, header=header)
        return 0
    from tql.data import expected_size, provide_task_data

    for run in {(r["task"], r["episodes"]): r for r in runs}.values():  # each dataset once, before the runs share it
        config = train_config(args, run)
        provide_task_data(config.spec, config.data_dir, config.data_kind,
                          expected_size(config.spec, config.data_episodes, config.data_episode_length), True,
                          console.print, progress=False)
    console.print(f"{len(runs)} runs of {args.steps:,} updates, {args.jobs} at once (1 thread each)")
    done = side_by_side(args, train_and_measure, [(run,) for run in runs])
    common.write_json(args.json, report(args, done, priced, console), __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
