"""How sensitive are a run's results and its attention to H̄, where the target bites?

One task, H̄ at several constant fractions rho of log n plus the published per-layer table
(``published``), optionally several temperature layouts (``--sharings``: one temperature per
(layer, group), per layer, or for the whole critic), several seeds; every run is a normal
``tql.train`` run (``--profile``, with ``--agent`` options: by default the early-engaging
regime of benchmarks/learning/results/engagement_*.txt, alpha from 0.01 at critic rate 1e-3).
Per H̄ (and layout) it reports, from each run's last evaluation and checkpoint:

- success (mean, 95% bootstrap CI over seeds and, within a seed, over its evaluation
  episodes) and progress (mean, 95% bootstrap CI over seeds: the runs log one mean per
  evaluation);
- the held-out TD error (last logged ``val/td_loss``);
- Q overestimation: mean of Q(s, a) (mean over heads) minus the discounted Monte-Carlo return
  of the validation data, over transitions with >= ``--horizon`` steps left in their
  episode (or a terminal before: the truncation error is below gamma^horizon);
- attention per layer (``tql.attention`` on 512 training transitions): the median entropy of
  the [VALUE] query's rows and of the other rows (as fractions of log n), the [VALUE] row's
  median largest weight, and the [VALUE] row's weight on action vs observation tokens.

Runs are spread over ``--jobs`` processes of one thread each (default ``auto``: one per core,
one on a GPU), or, with ``--batch``, each
layout's runs train together as one batch (``tql.batched``: one update for every member,
the fast way on a GPU; each member's checkpoint is then written into its own folder). Either
way they resume where they stopped (re-run the same command). A finished run is measured as
it is; one finished at another ``--steps`` is refused (its learning-rate schedule spanned its
own length): give a new ``--out`` for a longer budget. Printed as one table (``sensitivity_report.py``); ``--json`` and
``--png`` (success and progress vs rho, and the attention entropy vs the target) write them,
and ``--from-json`` reports a saved run again.

    python -m benchmarks.learning.sensitivity --task cube-single-play-singletask-task1-v0 \\
        --rhos 0.3,0.45,0.6,0.75,0.9,0.95 --seeds 0,1 --steps 3000 \\
        --out /work/bench/runs/sensitivity --json benchmarks/learning/results/sensitivity_cube-single.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.learning.sensitivity_report import report

ENGAGED = ["alpha_init=0.01", "critic_lr=1e-3"]  # engages after ~550-600 updates (engagement_model.txt)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cube-single-play-singletask-task1-v0")
    p.add_argument("--rhos", default="0.3,0.45,0.6,0.75,0.9,0.95",
                   help="constant rho values and/or 'published' (the paper's per-layer table: cube-double, scene, "
                        "puzzle-3x3, puzzle-4x4, cube-triple; the paper gives none for cube-single), and the "
                        "paper's baselines as arms: 'off' (entropy control off), 'fql' (FQL's MLP critic)")
    p.add_argument("--sharings", default="layer_group", help="temperature layouts: layer_group, layer, global")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=None, help="default: the profile's")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--agent", action="append", default=None, help=f"agent option KEY=VALUE (default: {ENGAGED})")
    p.add_argument("--horizon", type=int, default=300, help="steps left for a Monte-Carlo return to count")
    p.add_argument("--jobs", default="auto",
                   help="runs trained at once, processes of one thread (auto: one per core; 1 on a GPU)")
    p.add_argument("--batch", action="store_true",
                   help="train each layout's runs as one batch in this process (all its cores; a GPU if any)")
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu or cuda")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="runs/sensitivity")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    common.add_json_option(p, "the runs and the table")
    p.add_argument("--png")
    p.add_argument("--from-json", help="report earlier runs' --json again, training nothing; several files "
                                       "(comma-separated) of the same task, budget and agent pool their runs")
    args = p.parse_args(argv)
    args.agent = ENGAGED if args.agent is None else args.agent
    return args


def grid(args) -> list[dict]:
    """Every run: (H̄ label, layout, seed) and its folder."""
    runs = []
    for label in args.rhos.split(","):
        for sharing in args.sharings.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                name = f"{label}-{sharing}"
                runs.append({"label": label, "sharing": sharing, "seed": seed, "name": name,
                             "dir": str(Path(args.out) / args.task / name / f"seed-{seed}")})
    return runs


def train_config(args, run: dict):
    """One run's config: one thread and one evaluation process in ``--jobs`` mode; the
    machine's threads and evaluation workers for a ``--batch``."""
    from autotune.agent_options import agent_overrides
    from tql.trainer import TrainConfig

    from autotune.approaches import BASELINE_AGENTS
    from tql.errors import ConfigError

    label = run["label"]
    agent = {**agent_overrides("published", args.agent), "temperature_sharing": run["sharing"],
             **BASELINE_AGENTS.get(label, {})}
    try:
        rho = None if label == "published" or label in BASELINE_AGENTS else float(label)
    except ValueError:
        raise ConfigError(f"--rhos {label!r} is not a number or one of: published, "
                          f"{', '.join(BASELINE_AGENTS)}") from None
    return TrainConfig.from_profile(args.task, args.profile, agent, rho=rho,
                                    targets="published" if label == "published" else None, seed=run["seed"],
                                    steps=args.steps, eval_every=args.eval_every or args.steps // 3,
                                    eval_episodes=args.eval_episodes, data_dir=args.data_dir, make_data=True,
                                    device=args.device, threads=None if args.batch else 1,
                                    eval_workers="auto" if args.batch else 1)


def train_and_measure(args, run: dict) -> dict:
    """Train (or resume) one run, then measure it."""
    import torch

    from tql.trainer import train

    torch.set_num_threads(1)
    config, start = train_config(args, run), time.perf_counter()
    if finished_steps(run) is None:
        train(config, run["dir"], progress=False)
    return {**run, **measure(config, Path(run["dir"]), args.horizon), "seconds": round(time.perf_counter() - start)}


def train_batches(args, runs: list[dict]) -> list[dict]:
    """Each layout's runs as one batch (members differ in H̄ and seed only), then measured.
    A member's checkpoint (``Population.member_state``) goes into its own folder, in the
    format of a single run's, so that it is measured like one."""
    from tql.batched.batch_runs import BatchMember, BatchTrainer
    from tql.io import atomic_torch_save

    from autotune.approaches import BASELINE_AGENTS

    def batch_of(run: dict) -> str:  # a baseline arm's agent differs: it batches apart
        return run["sharing"] + (f"-{run['label']}" if run["label"] in BASELINE_AGENTS else "")

    done = []
    for sharing in dict.fromkeys(batch_of(r) for r in runs):
        group = [r for r in runs if batch_of(r) == sharing]
        configs = [train_config(args, r) for r in group]
        if not all(finished_steps(r) == args.steps and (Path(r["dir"]) / "checkpoint.pt").is_file() for r in group):
            start = time.perf_counter()
            trainer = BatchTrainer([BatchMember(c, Path(r["dir"])) for c, r in zip(configs, group)],
                                   Path(args.out) / args.task / f"batch-{sharing}", progress=False)
            trainer.run()
            for i, (run, member) in enumerate(zip(group, trainer.members)):
                atomic_torch_save({"step": trainer.step, "agent": trainer.population.member_state(i),
                                   "evals": member.evals}, Path(run["dir"]) / "checkpoint.pt")
            print(f"batch {sharing}: {len(group)} members x {args.steps:,} updates in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        done += [{**r, **measure(c, Path(r["dir"]), args.horizon)} for c, r in zip(configs, group)]
    return done


def finished_steps(run: dict) -> int | None:
    """The updates of a finished run in the run's folder (None: not finished, or not begun)."""
    summary = Path(run["dir"]) / "summary.json"
    return json.loads(summary.read_text()).get("steps") if summary.is_file() else None


def measure(config, run_dir: Path, horizon: int) -> dict:
    from autotune.report.attention_report import checkpoint_view
    from tql.engagement import first_engagement
    from tql.io import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    last_eval = [r for r in rows if r.get("type") == "eval"][-1]
    train_rows = [r for r in rows if r.get("type") == "train"]
    td = [r["val/td_loss"] for r in train_rows if r.get("val/td_loss") is not None]
    view = checkpoint_view(run_dir) or {}
    return {"step": last_eval["step"], "success": last_eval["success_rate"], "episodes": last_eval["episodes"],
            "progress": last_eval.get("progress"), "val_td": td[-1] if td else None,
            "overestimation": q_overestimation(config, run_dir, horizon), "attention": view.get("layers"),
            "engaged_at": first_engagement(train_rows)}


def mc_returns(rewards: np.ndarray, masks: np.ndarray, terminals: np.ndarray, gamma: float,
               horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Discounted returns within each trajectory (``terminals`` ends one; a zero mask ends the
    return there), and which transitions have >= ``horizon`` steps left or reach a zero mask."""
    returns, usable = np.zeros(len(rewards)), np.zeros(len(rewards), dtype=bool)
    following, left, absorbed = 0.0, 0, False
    for t in range(len(rewards) - 1, -1, -1):
        if terminals[t]:
            following, left, absorbed = 0.0, 0, False
        following = rewards[t] + gamma * masks[t] * following
        left += 1
        absorbed = absorbed or masks[t] == 0
        returns[t], usable[t] = following, absorbed or left >= horizon
    return returns, usable


def q_overestimation(config, run_dir: Path, horizon: int, batch: int = 2048) -> float | None:
    """Mean Q(s, a) - Monte-Carlo return on the validation split (see the module text)."""
    import torch

    from tql.attention import checkpoint_critic, has_attention
    from tql.data import expected_size, load_task_data

    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    if not has_attention(state):
        return None
    task = config.spec
    data = load_task_data(task, config.data_dir, config.data_kind,
                          expect=expected_size(task, config.data_episodes, config.data_episode_length)).val
    returns, usable = mc_returns(data["rewards"], data["masks"], data["terminals"], config.agent.gamma, horizon)
    rows = np.flatnonzero(usable)  # none when every episode is shorter than the horizon
    rows = np.random.default_rng(0).choice(rows, size=min(batch, len(rows)), replace=False)
    critic = checkpoint_critic(state, task.obs_dim, task.act_dim)
    with torch.no_grad():
        q, _ = critic(torch.as_tensor(data["observations"][rows], dtype=torch.float32),
                      torch.as_tensor(data["actions"][rows], dtype=torch.float32), entropies=False)
    return float((q.mean(0).numpy() - returns[rows]).mean()) if len(rows) else None


def pooled_runs(paths: list[str]) -> tuple[argparse.Namespace, list[dict], str]:
    """The runs of several --json files as one grid (e.g. seeds 0-1 from one machine, 2-5 from
    another), with the first file's settings; ValueError when the files differ in task, updates
    or agent options, or hold the same (H̄, layout, seed) twice."""
    settings, runs, commands = None, [], []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        # A pooled file's command joins its sources' with " + "; their settings agree, so the first speaks for all.
        shown = parse_args(script_arguments(saved["command"].split(" + ")[0]))
        key = (shown.task, shown.steps, sorted(shown.agent))
        if settings is not None and key != settings[1]:
            raise ValueError(f"{path} ran {key[0]}, {key[1]:,} updates, agent {' '.join(key[2])}; "
                             f"{paths[0]} ran {settings[1][0]}, {settings[1][1]:,}, {' '.join(settings[1][2])}: "
                             "only runs of the same task, budget and agent pool")
        settings = settings or (shown, key)
        runs += saved["runs"]
        commands.append(saved["command"])
    seen = [(r["name"], r["seed"]) for r in runs]
    twice = sorted({f"{name} seed {seed}" for name, seed in seen if seen.count((name, seed)) > 1})
    if twice:
        raise ValueError(f"the files hold {', '.join(twice)} more than once; pool runs of different seeds")
    return settings[0], runs, " + ".join(commands)


def script_arguments(command: str) -> list[str]:
    """The arguments of a saved command: ``python -m benchmarks.learning.sensitivity ARGS``, or
    ``python benchmarks/learning/sensitivity.py ARGS`` in older files."""
    words = shlex.split(command)
    return words[3:] if words[1:2] == ["-m"] else words[2:]


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from tql.data import expected_size, provide_task_data
    from tql.tasks import get_task

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    if args.from_json:
        try:
            shown, runs, command = pooled_runs(args.from_json.split(","))
        except ValueError as exc:
            console.print(str(exc), style="red", markup=False, soft_wrap=True)  # one line, however long
            return 2
        header = common.print_header(__file__, argv)
        return report(shown, runs, command, console, args.json, args.png, header)
    runs, task = grid(args), get_task(args.task)
    from autotune.tuning.trials import resolve_workers
    from benchmarks.learning.side_by_side import side_by_side
    from tql.errors import ConfigError

    try:
        args.jobs = resolve_workers(args.jobs, args.device, len(runs), option="--jobs")
        for run in runs:  # bad settings fail here, in one line, before any training
            train_config(args, run)
            if finished_steps(run) not in (None, args.steps):
                raise ConfigError(f"{run['dir']} holds a finished run of {finished_steps(run):,} updates, not "
                                  f"{args.steps:,}; give another --out for another budget")
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False, soft_wrap=True)  # one line, however long
        return 2
    header = common.print_header(__file__, argv)
    config = train_config(args, runs[0])  # the dataset once, before the runs share it
    provide_task_data(task, config.data_dir, config.data_kind,
                      expected_size(task, config.data_episodes, config.data_episode_length), True, console.print,
                      progress=False)
    if args.batch:
        console.print(f"{len(runs)} runs of {args.steps:,} updates, each layout's as one batch")
        done = train_batches(args, runs)
    else:
        console.print(f"{len(runs)} runs of {args.steps:,} updates, {args.jobs} at once (1 thread each)")
        done = side_by_side(args, train_and_measure, [(run,) for run in runs])
    return report(args, done, header["command"], console, args.json, args.png, header)


if __name__ == "__main__":
    raise SystemExit(main())
