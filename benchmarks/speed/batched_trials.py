"""Wall time of one task's Optuna study trained batched (`tql-tune run --batch K`) vs one trial
at a time (`--batch 1`), side by side in one run.

Both settings run the same study: ``--trials`` trials at the same fixed rhos (evenly spaced
over the spec's range, queued in the same order), ``--seeds`` seeds each, no pruner (so both
train every trial to the end and the work is equal), each in a fresh SQLite storage and run
folder. ``--rounds`` rounds alternate which setting goes first, so drift in machine load hits
both alike. Printed per setting: the median wall time of ``work()`` (claiming, training,
evaluating, recording), seconds per trial, and

    speedup = t(one by one) / t(batched)

plus the largest difference between the two settings' trial values (batched members compute
what their trial would alone, so it should be 0 or evaluation noise from float rounding).

``--workers W`` (W > 1) adds two settings: W worker processes on the same device, one trial
at a time each, and W workers each with its own batch of K (``run --workers W --batch K``),
so the gain of workers over one worker's batch is measured in the same run.

``--skip-one-by-one`` leaves the one-by-one settings out (with ``--workers``, when one by one
was measured already); ``--skip-batched`` the batched ones (the workers' gain one by one: what
``run --workers auto`` chooses on a CPU).

``--concurrent`` runs the settings at the same time, each in its own process (give each its
share of the cores with ``--threads``), instead of one after another: half the wall time on a
CPU, and load from anything else on the machine hits every setting alike. Not with
``--workers``, whose processes would compete with the other settings for the device.

On a CPU the population is compute-bound and no speedup is expected; the GPU goal is >= 8x:

    python -m benchmarks.speed.batched_trials --trials 4 --steps 300            # CPU, reduced
    python -m benchmarks.speed.batched_trials --device cuda --trials 16 --batch 16 --profile cpu
    python -m benchmarks.speed.batched_trials --device cuda --trials 32 --batch 8 --workers 4 --profile cpu
    python -m benchmarks.speed.batched_trials --trials 16 --batch 16 --threads 1 --concurrent   # 2-core CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from autotune.tuning import studies
from autotune.tuning.study_spec import load_spec
from autotune.tuning.trials import RunPlan, study_name
from benchmarks import common
from tql.tasks import get_task


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cube-double-play-singletask-task2-v0")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="trials per batch of the batched setting")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the profile's)")
    parser.add_argument("--eval-every", type=int, default=None, help="default: one evaluation, at the end")
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="W > 1 adds W worker processes, one by one and batched, as settings")
    parser.add_argument("--concurrent", action="store_true", help="run the settings at the same time")
    parser.add_argument("--skip-one-by-one", action="store_true",
                        help="leave out the one-by-one settings (with --workers: the workers' gain only)")
    parser.add_argument("--skip-batched", action="store_true",
                        help="leave out the batched settings (with --workers: the workers' gain one by one only)")
    parser.add_argument("--warm-up", action="store_true",
                        help="first train each setting's workers one untimed run each, so that every thread count "
                             "finds inductor's cache warm (a cold compile costs a CPU run ~1 minute once per "
                             "thread count: compile_cost.py)")
    parser.add_argument("--data-dir", default="data")
    common.add_json_option(parser, "the numbers")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Setting:
    name: str
    batch: int
    workers: int = 1


def settings_of(args) -> list[Setting]:
    settings = [Setting("one by one", 1), Setting(f"batched (K={args.batch})", args.batch)]
    if args.workers > 1:
        settings += [Setting(f"one by one x {args.workers} workers", 1, args.workers),
                     Setting(f"batched (K={args.batch}) x {args.workers} workers", args.batch, args.workers)]
    if args.skip_one_by_one:
        settings = [s for s in settings if s.batch > 1]
    if args.skip_batched:
        settings = [s for s in settings if s.batch == 1]
    return settings


def check_args(args) -> None:
    for name in ("trials", "batch", "seeds", "rounds", "workers"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: must be >= 1")
    for flag in ("skip_one_by_one", "skip_batched"):
        if getattr(args, flag) and args.workers == 1:
            raise SystemExit(f"--{flag.replace('_', '-')} needs --workers W > 1 (else only one setting is left)")
    if args.skip_one_by_one and args.skip_batched:
        raise SystemExit("--skip-one-by-one and --skip-batched together leave no setting")
    if args.concurrent and args.workers > 1:
        raise SystemExit(f"--concurrent with --workers {args.workers}: choose one (the workers' processes "
                         "would compete with the other settings)")


def make_plan(args, spec, root: Path, setting: Setting, name: str) -> RunPlan:
    overrides = {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "steps": args.steps}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    plan = RunPlan(tasks=[get_task(args.task)], spec=spec, study=name, storage=f"sqlite:///{root / 's.db'}",
                           profile=args.profile, trials=args.trials, seeds=args.seeds, runs_dir=root / "runs",
                           data_dir=Path(args.data_dir), device=args.device, threads=args.threads,
                           train_overrides=overrides, batch=setting.batch, workers=setting.workers)
    if "eval_every" not in overrides:  # one evaluation per run, at its end: the same for both settings
        plan.train_overrides["eval_every"] = plan.train_config(plan.tasks[0], spec.rho_low, 0).steps
    return plan


def run_study(plan: RunPlan, rhos: list[float]) -> tuple[float, dict[float, float]]:
    """Seconds of the plan's workers filling the study, and each trial's value by rho."""
    study = studies.create_studies(plan, studies.open_storage(plan.storage))[0]
    for rho in rhos:
        study.enqueue_trial({"rho": rho})
    start = time.perf_counter()
    if plan.workers == 1:
        studies.work(plan)
    elif any(code != 0 for code in studies.run_workers(plan)):
        raise SystemExit(f"{plan.study}: a worker failed")
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=study_name(plan.study, plan.tasks[0].name),
                               storage=plan.storage).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) != len(rhos):
        raise SystemExit(f"{plan.study}: {len(complete)} of {len(rhos)} trials complete")
    return wall, {t.params["rho"]: t.value for t in complete}


def run_setting(args, spec, root: Path, setting: Setting, rhos: list[float], results=None):
    """One setting's study in a fresh folder; with ``results`` (a queue: concurrent mode, run in a
    child process) the outcome is put there instead of returned."""
    import warnings

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root.mkdir()
    plan = make_plan(args, spec, root, setting, f"b{setting.batch}w{setting.workers}")
    outcome = (setting.name,) + run_study(plan, rhos)
    if results is None:
        return outcome
    results.put(outcome)


def run_round(args, spec, tmp: Path, settings: list[Setting], rhos: list[float], r: int) -> list[tuple]:
    """One round: every setting once, one after another (order alternating between rounds) or,
    with ``--concurrent``, all at the same time in their own processes."""
    order = settings if r % 2 == 0 else list(reversed(settings))
    roots = {s.name: tmp / f"{s.batch}-{s.workers}-{r}" for s in settings}
    if not args.concurrent:
        outcomes = []
        for s in order:
            outcomes.append(run_setting(args, spec, roots[s.name], s, rhos))
            print(f"round {r}: {s.name}: {outcomes[-1][1]:.1f} s", flush=True)
        return outcomes
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=run_setting, args=(args, spec, roots[s.name], s, rhos, results)) for s in order]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]  # before join: a child's queue must drain first
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs) or len(outcomes) != len(procs):
        raise SystemExit(f"round {r}: a setting failed (exit codes {[p.exitcode for p in procs]})")
    for name, wall, _ in outcomes:
        print(f"round {r}: {name}: {wall:.1f} s (concurrent)", flush=True)
    return outcomes


def warm_up(args, spec, tmp: Path, settings: list[Setting], rhos: list[float]) -> None:
    """One untimed run per worker of each setting (each process compiles what its runs will)."""
    for s in settings:
        runs = s.workers * s.batch
        short = argparse.Namespace(**{**vars(args), "trials": runs, "seeds": 1})
        _, wall, _ = run_setting(short, spec, tmp / f"warm-{s.batch}-{s.workers}", s,
                                 [rhos[i % len(rhos)] for i in range(runs)])
        print(f"warm-up: {s.name}: {runs} run(s), {wall:.1f} s (not counted)", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_args(args)
    header = common.print_header(__file__, argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = settings_of(args)
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.toml"
        spec_file.write_text('version = 1\n[pruner]\nname = "none"\n')
        spec = load_spec(spec_file)
        rhos = [round(spec.rho_low + (spec.rho_high - spec.rho_low) * i / max(1, args.trials - 1), 6)
                for i in range(args.trials)]
        probe = make_plan(args, spec, Path(tmp), settings[0], "probe")
        kinds = studies.ensure_data(probe, say=lambda text: print(text.removeprefix("[yellow]")))
        walls: dict[str, list[float]] = {s.name: [] for s in settings}
        values: dict[str, dict[float, float]] = {}
        if args.warm_up:
            warm_up(args, spec, Path(tmp), settings, rhos)
        for r in range(args.rounds):
            for name, wall, trial_values in run_round(args, spec, Path(tmp), settings, rhos, r):
                walls[name].append(wall)
                values[name] = trial_values
    config = probe.train_config(probe.tasks[0], rhos[0], 0)
    result = report(args, config, kinds, walls, values)
    common.write_json(args.json, result, __file__, argv, header=header)


def report(args, config, kinds: dict, walls: dict[str, list[float]], values: dict[str, dict[float, float]]) -> dict:
    """Print the settings' medians and speedups; returns them as the JSON result."""
    import torch

    names = list(walls)
    reference = names[0]  # one by one, or with --skip-one-by-one one worker's batch
    medians = {name: statistics.median(w) for name, w in walls.items()}
    diff = max(abs(values[reference][rho] - values[name][rho]) for name in names[1:] for rho in values[reference])
    print(f"task {args.task} ({', '.join(kinds.values())} data), profile {args.profile}: {config.steps} steps, "
          f"batch {config.agent.batch_size}, critic {config.agent.size}, actor {tuple(config.agent.actor_hidden)}, "
          f"{config.eval_episodes} evaluation episodes every {config.eval_every} steps; {args.trials} trials x "
          f"{args.seeds} seed(s), no pruner; device {args.device}, threads {args.threads or torch.get_num_threads()}")
    print(f"median of {args.rounds} round(s), settings {'at the same time' if args.concurrent else 'alternating'}")
    width = max(len(name) for name in names)
    print(f"{'setting':>{width}} {'wall s':>9} {'s/trial':>9} {'speedup':>8}")
    speedups = {name: medians[reference] / medians[name] for name in names}
    for name in names:
        print(f"{name:>{width}} {medians[name]:9.1f} {medians[name] / args.trials:9.2f} {speedups[name]:7.2f}x")
    if args.skip_batched:
        print(f"speedup (one by one / {args.workers} workers): {speedups[names[1]]:.2f}x")
    elif not args.skip_one_by_one:
        print(f"speedup (one by one / batched): {speedups[names[1]]:.2f}x")
    if args.workers > 1 and not args.skip_batched:
        batch = next(name for name in names if name.startswith("batched") and "workers" not in name)
        print(f"workers' gain over one worker's batch: {medians[batch] / medians[names[-1]]:.2f}x")
    print(f"largest |value difference| between settings: {diff:.4f}")
    return {"args": vars(args), "walls": walls, "medians": medians,
            "speedup": None if args.skip_one_by_one else speedups[names[1]], "speedups": speedups,
            "max_value_diff": diff}


if __name__ == "__main__":
    main()
