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

On a CPU the population is compute-bound and no speedup is expected; the GPU goal is >= 8x:

    python benchmarks/batched_trials.py --trials 4 --steps 300            # CPU, reduced
    python benchmarks/batched_trials.py --device cuda --trials 16 --batch 16 --profile cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Runnable as a plain script from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from autotune import studies  # noqa: E402
from autotune.spec import load_spec  # noqa: E402
from tql.tasks import get_task  # noqa: E402


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
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def make_plan(args, spec, root: Path, batch: int, name: str) -> studies.RunPlan:
    overrides = {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "steps": args.steps}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    plan = studies.RunPlan(tasks=[get_task(args.task)], spec=spec, study=name, storage=f"sqlite:///{root / 's.db'}",
                           profile=args.profile, trials=args.trials, seeds=args.seeds, runs_dir=root / "runs",
                           data_dir=Path(args.data_dir), device=args.device, threads=args.threads,
                           train_overrides=overrides, batch=batch)
    if "eval_every" not in overrides:  # one evaluation per run, at its end: the same for both settings
        plan.train_overrides["eval_every"] = plan.train_config(plan.tasks[0], spec.rho_low, 0).steps
    return plan


def run_study(plan: studies.RunPlan, rhos: list[float]) -> tuple[float, dict[float, float]]:
    """Seconds of one worker filling the study, and each trial's value by rho."""
    study = studies.create_studies(plan, studies.open_storage(plan.storage))[0]
    for rho in rhos:
        study.enqueue_trial({"rho": rho})
    start = time.perf_counter()
    report = studies.work(plan)
    wall = time.perf_counter() - start
    if report.complete != len(rhos):
        raise SystemExit(f"{plan.study}: {report.complete} of {len(rhos)} trials complete ({report})")
    values = {t.params["rho"]: t.value for t in optuna.load_study(study_name=studies.study_name(plan.study,
              plan.tasks[0].name), storage=plan.storage).trials}
    return wall, values


def main(argv=None) -> None:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.toml"
        spec_file.write_text('version = 1\n[pruner]\nname = "none"\n')
        spec = load_spec(spec_file)
        rhos = [round(spec.rho_low + (spec.rho_high - spec.rho_low) * i / max(1, args.trials - 1), 6)
                for i in range(args.trials)]
        settings = {"one by one": 1, f"batched (K={args.batch})": args.batch}
        probe = make_plan(args, spec, Path(tmp), 1, "probe")
        kinds = studies.ensure_data(probe, say=lambda text: print(text.removeprefix("[yellow]")))
        walls: dict[str, list[float]] = {name: [] for name in settings}
        values: dict[str, dict[float, float]] = {}
        for r in range(args.rounds):
            order = list(settings) if r % 2 == 0 else list(reversed(settings))
            for name in order:
                root = Path(tmp) / f"{settings[name]}-{r}"
                root.mkdir()
                wall, values[name] = run_study(make_plan(args, spec, root, settings[name], f"b{settings[name]}"), rhos)
                walls[name].append(wall)
                print(f"round {r}: {name}: {wall:.1f} s", flush=True)
    config = probe.train_config(probe.tasks[0], rhos[0], 0)
    report(args, config, kinds, walls, values)


def report(args, config, kinds: dict, walls: dict[str, list[float]], values: dict[str, dict[float, float]]) -> None:
    import torch

    single, batched = list(walls)
    medians = {name: statistics.median(w) for name, w in walls.items()}
    diff = max(abs(values[single][rho] - values[batched][rho]) for rho in values[single])
    print(f"task {args.task} ({', '.join(kinds.values())} data), profile {args.profile}: {config.steps} steps, "
          f"batch {config.agent.batch_size}, critic {config.agent.size}, actor {tuple(config.agent.actor_hidden)}, "
          f"{config.eval_episodes} evaluation episodes every {config.eval_every} steps; {args.trials} trials x "
          f"{args.seeds} seed(s), no pruner; device {args.device}, threads {args.threads or torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(f"median of {args.rounds} round(s), settings alternating")
    print(f"{'setting':>16} {'wall s':>9} {'s/trial':>9}")
    for name, wall in medians.items():
        print(f"{name:>16} {wall:9.1f} {wall / args.trials:9.2f}")
    speedup = medians[single] / medians[batched]
    print(f"speedup (one by one / batched): {speedup:.2f}x; largest |value difference| between settings: {diff:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "walls": walls, "medians": medians,
                                               "speedup": speedup, "max_value_diff": diff}, indent=2) + "\n")


if __name__ == "__main__":
    main()
