"""What mirroring a run into TensorBoard and W&B costs it: "logging never slows an update",
measured. The same `tql-tune train` run (`autotune.api.train`) with `log=[]`, `["tensorboard"]`,
`["wandb"]` and both, each a fresh process, interleaved round by round.

Two numbers per run:

    ms per update   = (time/wall_seconds of the last train row - of the first)
                      / (their steps' difference), from metrics.jsonl
    whole call      = seconds of the whole `train(...)` call in the child process

The first excludes the start (imports of the loggers, W&B's service process, data loading,
the compilation in the first update) and the final evaluation: it answers whether logging
slows an update (the writers are called once per logged row and queue their work off the
training thread). The second includes everything, so it shows the one-off cost of opening
and closing the loggers. Each run's `summary.json` `wall_seconds` (the trainer's own clock)
is recorded too.

W&B runs offline (`WANDB_MODE=offline`, its folders in a temporary directory), so nothing
leaves the machine. Before the timed rounds one untimed `none` run fills the inductor cache
and the dataset (`--no-warm-up` skips it); the order of the variants rotates each round.

    python -m benchmarks.speed.logging_cost --steps 2000 --rounds 2 \\
        --json benchmarks/speed/results/logging_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from benchmarks import common

VARIANTS = {"none": (), "tensorboard": ("tensorboard",), "wandb": ("wandb",),
            "tensorboard+wandb": ("tensorboard", "wandb")}
BASELINE = "none"


def parse_variants(text: str) -> list[str]:
    """``"none,wandb"`` -> ``["none", "wandb"]``; an unknown or repeated name is an error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"--variants {text!r}: a comma list of distinct names from {', '.join(VARIANTS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-single-play-singletask-task1-v0")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=2000, help="updates per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--eval-every", type=int, default=None, help="default: --steps (one evaluation, at the end)")
    p.add_argument("--eval-episodes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                   help="skip the untimed run that fills the inductor cache and the dataset first")
    common.add_json_option(p)
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.eval_episodes < 1 or args.threads < 1:
        p.error("--rounds, --steps, --eval-episodes and --threads must be >= 1")
    if args.eval_every is None:
        args.eval_every = args.steps
    try:
        args.variant_list = parse_variants(args.variants)
    except ValueError as exc:
        p.error(str(exc))
    return args


# ----- what one run's files say ---------------------------------------------------------------
def train_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The train rows of a metrics.jsonl, by step."""
    rows = [json.loads(line) for line in lines if line.strip()]
    return sorted((row for row in rows if row.get("type") == "train"), key=lambda row: row["step"])


def per_update_ms(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ms per update between the first and the last train row (``time/wall_seconds``), and the
    median over the intervals between consecutive rows; None without two rows."""
    if len(rows) < 2:
        return {"ms_per_update": None, "interval_median_ms": None, "rows": len(rows)}
    first, last = rows[0], rows[-1]
    span = last["time/wall_seconds"] - first["time/wall_seconds"]
    intervals = [1000 * (b["time/wall_seconds"] - a["time/wall_seconds"]) / (b["step"] - a["step"])
                 for a, b in zip(rows, rows[1:])]
    return {"ms_per_update": 1000 * span / (last["step"] - first["step"]),
            "interval_median_ms": statistics.median(intervals), "rows": len(rows),
            "first_step": first["step"], "last_step": last["step"]}


def logger_files(out: Path) -> dict[str, int]:
    """What the loggers left in a run's folder: TensorBoard event files, W&B offline runs."""
    return {"tensorboard": len(list(out.glob("events.out.tfevents.*"))),
            "wandb": len([p for p in (out / "wandb").glob("offline-run-*") if p.is_dir()])}


def child(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: one run of ``args.child``, its timings and what its loggers wrote."""
    import warnings

    from autotune import api
    from tql.agent import compile_pays

    out = Path(args.out)
    loggers = list(VARIANTS[args.child])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        start = time.perf_counter()
        api.train(args.task, profile=args.profile, steps=args.steps, seed=0, out=out, data_dir=args.data_dir,
                  make_data=True, eval_every=args.eval_every, eval_episodes=args.eval_episodes, log=loggers,
                  progress=False, threads=args.threads, fresh=True)
        call_seconds = time.perf_counter() - start
    stopped = [str(w.message) for w in caught if "logging stopped" in str(w.message)]
    files = logger_files(out)
    missing = [logger for logger in loggers if files[logger] == 0]
    if stopped or missing:
        why = "; ".join(stopped) or "no files: " + ", ".join(missing)
        raise SystemExit(f"{args.child}: a logger did not log ({why})")
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "metrics.jsonl") as f:
        timing = per_update_ms(train_rows(f))
    return {"variant": args.child, "loggers": loggers, "call_seconds": call_seconds,
            "summary_wall_seconds": summary["wall_seconds"], "steps": summary["steps"],
            "compiled": compile_pays("cpu", args.steps), "logger_files": files, **timing}


# ----- the parent: fresh processes, side by side ----------------------------------------------
def round_order(variants: Sequence[str], r: int) -> list[str]:
    """Round ``r``'s order: the variants rotated by ``r``, so none always runs first."""
    k = r % len(variants)
    return list(variants[k:]) + list(variants[:k])


def child_env(wandb_home: Path) -> dict[str, str]:
    """The environment of a child: W&B offline, its folders under ``wandb_home``."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(wandb_home),
           "WANDB_CONFIG_DIR": str(wandb_home / "config"), "WANDB_CACHE_DIR": str(wandb_home / "cache"),
           "WANDB_DATA_DIR": str(wandb_home / "data")}
    env.pop("WANDB_API_KEY", None)
    return env


def measure(args: argparse.Namespace, variant: str, out: Path, env: dict[str, str]) -> dict[str, Any]:
    child_args = [variant, "--out", str(out), "--task", args.task, "--profile", args.profile,
                  "--steps", str(args.steps), "--eval-every", str(args.eval_every),
                  "--eval-episodes", str(args.eval_episodes), "--threads", str(args.threads),
                  "--data-dir", str(Path(args.data_dir).resolve())]
    start = time.perf_counter()
    try:
        result = common.run_child(__file__, child_args, env)
    except common.ChildFailed as exc:
        raise SystemExit(str(exc)) from None
    return {**result, "process_seconds": time.perf_counter() - start}


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant: the medians over rounds, each round's values, and the time vs ``none``."""
    rows = {}
    for variant, records in runs.items():
        records = sorted(records, key=lambda rec: rec["round"])
        rows[variant] = {"ms_per_update": _median(rec["ms_per_update"] for rec in records),
                         "call_seconds": _median(rec["call_seconds"] for rec in records),
                         "summary_wall_seconds": _median(rec["summary_wall_seconds"] for rec in records),
                         "rounds_ms": [rec["ms_per_update"] for rec in records],
                         "rounds_call_seconds": [rec["call_seconds"] for rec in records]}
    base = rows.get(BASELINE, {})
    for row in rows.values():
        for key, ratio in (("ms_per_update", "vs_none"), ("call_seconds", "call_vs_none")):
            row[ratio] = (row[key] / base[key]) if base.get(key) and row[key] is not None else None
    return rows


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The printed table: medians, time vs none (> 1: slower), each round's values."""
    lines = ["| variant | ms per update (train rows) | time vs none | per round | whole call s | "
             "whole call vs none | per round s | summary wall s |", "|---|---|---|---|---|---|---|---|"]
    for variant, row in rows.items():
        lines.append(
            f"| {variant} | {_num(row['ms_per_update'], '.2f')} | {_num(row['vs_none'], '.3f', 'x')} | "
            f"{', '.join(_num(v, '.2f') for v in row['rounds_ms'])} | {_num(row['call_seconds'], '.1f')} | "
            f"{_num(row['call_vs_none'], '.3f', 'x')} | "
            f"{', '.join(_num(v, '.1f') for v in row['rounds_call_seconds'])} | "
            f"{_num(row['summary_wall_seconds'], '.1f')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return common.print_child_result(child(args))
    header = common.print_header(__file__, argv)
    variants = args.variant_list
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    warm = None
    with tempfile.TemporaryDirectory(prefix="logging_cost-") as tmp:
        tmp = Path(tmp)
        env = child_env(tmp / "wandb-home")
        if args.warm_up:
            warm = measure(args, BASELINE, tmp / "warm-up", env)
            print(f"warm-up ({BASELINE}, untimed): {warm['call_seconds']:.1f} s", flush=True)
        for r in range(args.rounds):
            for variant in round_order(variants, r):
                record = {**measure(args, variant, tmp / f"{variant}-r{r}", env), "round": r}
                runs[variant].append(record)
                print(f"round {r}, {variant}: {_num(record['ms_per_update'], '.2f')} ms per update "
                      f"({record['rows']} train rows), whole call {record['call_seconds']:.1f} s, "
                      f"summary {record['summary_wall_seconds']:.1f} s, process {record['process_seconds']:.1f} s",
                      flush=True)
    rows = summarize(runs)
    print(f"task {args.task}, profile {args.profile}, {args.steps} updates per run, {args.threads} thread(s), "
          f"one evaluation of {args.eval_episodes} episode(s) every {args.eval_every} updates; median of "
          f"{args.rounds} round(s), each run a fresh process; time vs none > 1 is slower")
    for line in table(rows):
        print(line)
    common.write_json(args.json, {"args": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
                                  "warm_up": warm, "variants": rows, "runs": runs}, __file__, argv, header=header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
