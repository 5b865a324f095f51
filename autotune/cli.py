"""`tql-tune`: the command-line entry point.

Every user error (``tql.errors.TQLError``) is printed as one line on stderr with exit code 2;
finished work is never lost because every result file is written atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tql.errors import TQLError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transformer Q-Learning on OGBench with auto-tuned attention target entropy.")
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect OGBench-format datasets.")
app.add_typer(data_app, name="data")
# Piped output (files, CI logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

DATA_DIR_HELP = "folder with OGBench .npz files (generated ones live in its generated/ subfolder)"
SETTINGS_HELP = ("agent settings: published (TQL as published, the default), fql (FQL's optimiser: Adam 3e-4, no "
                 "decay or schedule, no actor LayerNorm), legacy (tql-tune 0.1: alpha from 0.01 at lr 3e-4, sums)")
AGENT_OPTION_HELP = "one agent option KEY=VALUE (repeatable), e.g. alpha_init=0.01 or two_sided=true"
TARGET_HELP = ("constant H̄ in (0, log n]: 3.0 (every layer), 3.0,2.5 (per layer) or 3.0:2.8,2.5:2.4 "
               "([VALUE]:other rows per layer)")
CUDA_GRAPH_HELP = "auto (on for CUDA), on, off: replay each update from a CUDA graph (no per-step launch overhead)"
COMPILE_HELP = ("torch.compile the whole loss (default: when the run is long enough for compiling to pay: from "
                "2,000 updates on a CPU, 50,000 on CUDA)")
TF32_HELP = "CUDA: float32 matmuls on TF32 tensor cores (the default; --no-tf32 for full float32)"
PRECISION_HELP = ("fp32, or bf16: forward passes under bfloat16 autocast (attention, outputs and losses stay "
                  "float32); faster where bf16 matmuls are (GPUs, CPUs with AVX512-BF16/AMX)")


@app.command()
def train(
    task: str = typer.Option(..., "--task", help="OGBench singletask name, e.g. cube-double-play-singletask-task2-v0"),
    profile: str = typer.Option("cpu", help="budget profile: smoke (seconds), cpu (minutes), paper (1M steps, GPU)"),
    size: Optional[str] = typer.Option(None, help="critic size preset (see `tql-tune sizes`)"),
    critic: str = typer.Option("tql", help="critic: tql (transformer) or mlp (FQL baseline)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the profile's)"),
    target_entropy: Optional[str] = typer.Option(None, "--target-entropy", help=TARGET_HELP),
    rho: Optional[str] = typer.Option(None, help="constant H̄ as a fraction of log n, in (0, 1]; same forms"),
    targets: Optional[str] = typer.Option(None, help="published: the paper's per-domain targets (DESIGN.md 3a)"),
    settings: str = typer.Option("published", help=SETTINGS_HELP),
    agent: list[str] = typer.Option([], "--agent", help=AGENT_OPTION_HELP),
    no_entropy_control: bool = typer.Option(False, "--no-entropy-control", help="turn the entropy penalty off"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="output folder (default runs/<task>/<critic>-seed<seed>)"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    data_kind: str = typer.Option("auto", help="auto (official first), official, generated"),
    make_data: bool = typer.Option(False, "--make-data", help="generate the dataset if it is missing"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    batch_size: Optional[int] = typer.Option(None, help="batch size (default: the profile's)"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = typer.Option("auto", "--cuda-graph", help=CUDA_GRAPH_HELP),
    compile_loss: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help=TF32_HELP),
    schedule: Optional[Path] = typer.Option(None, help="H̄ schedule JSON file (rho over training progress)"),
    controller: str = typer.Option("none", help="adaptive H̄: none, feedback, population (each writes the schedule "
                                                 "it followed)"),
    members: Optional[int] = typer.Option(None, help="population controller: members trained side by side "
                                                      "(batched; default 4)"),
    fitness: Optional[str] = typer.Option(None, help="population controller: fitness signal, val_td (held-out TD "
                                                      "error, the default) or success (a few evaluation episodes)"),
    depth_profile: bool = typer.Option(False, "--depth-profile", help="population controller: each member carries "
                                       "rho of the first and of the last layer, perturbed independently"),
    last_layer_offset: Optional[float] = typer.Option(None, help="feedback controller: the last layer's rho minus "
                                                      "the first's (default 0), kept while rho moves"),
    fresh: bool = typer.Option(False, "--fresh", help="discard an existing run in --out instead of resuming"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train one TQL (or FQL) agent, or a population; resumes from the last checkpoint in --out."""
    from tql.train import TrainConfig
    from tql.train import train as run_training

    from autotune.agent_options import agent_overrides as named_overrides
    from autotune.agent_options import target_options

    members, fitness = _population_options(controller, members, fitness)
    _profile_options(controller, depth_profile, last_layer_offset)
    agent_overrides = {"critic": critic, "entropy_control": not no_entropy_control, "precision": precision,
                       "compile": compile_loss, **named_overrides(settings, agent)}
    if size is not None:
        agent_overrides["size"] = size
    if batch_size is not None:
        agent_overrides["batch_size"] = batch_size
    config = TrainConfig.from_profile(
        task, profile, agent_overrides, steps=steps, **target_options(rho, target_entropy, targets), seed=seed,
        data_dir=str(data_dir), data_kind=data_kind, make_data=make_data, eval_episodes=eval_episodes,
        eval_every=eval_every, device=device, threads=threads, cuda_graph=cuda_graph, tf32=tf32,
    )
    out = out or Path("runs") / task / f"{critic}-seed{seed}"
    hooks, target_text = _target_hooks(config, schedule, controller, rho, target_entropy, members, targets,
                                       depth_profile, last_layer_offset or 0.0)
    console.print(f"[bold]{task}[/] critic={critic} size={config.agent.size} precision={precision} profile={profile} "
                  f"steps={config.steps} H̄: {target_text} (log n = {config.spec.max_entropy:.3f})")
    if controller == "population":
        from autotune.controllers import train_with_population

        result = train_with_population(config, out, hooks, fitness, fresh=fresh, console=console,
                                       progress=not quiet)
    else:
        result = run_training(config, out, hooks=hooks, fresh=fresh, console=console, progress=not quiet)
    from autotune.controllers import followed_schedule_of

    followed = followed_schedule_of(hooks, result, task=task, seed=seed, steps=result.steps)
    if followed is not None:
        path = followed.save(Path(out) / "schedule.json")
        console.print(f"the {controller} controller's schedule: {followed.describe()} -> {path}")
    _print_result(result)


CONTROLLERS = ("none", "feedback", "population")


def _population_options(controller: str, members: Optional[int], fitness: Optional[str]) -> tuple[int, str]:
    """--members and --fitness with their defaults; refused (not ignored) without the population controller."""
    from tql.population_train import check_fitness

    if controller not in CONTROLLERS:
        raise TQLError(f"controller {controller!r} is not one of: {', '.join(CONTROLLERS)}")
    if controller != "population":
        given = [name for name, v in (("--members", members), ("--fitness", fitness)) if v is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise TQLError(f"{' and '.join(given)} {verb} only with --controller population (got --controller "
                           f"{controller})")
    return (4 if members is None else members), check_fitness(fitness or "val_td")


def _profile_options(controller: str, depth_profile: bool, last_layer_offset: Optional[float]) -> None:
    """--depth-profile and --last-layer-offset belong to one controller each; refused (not ignored) elsewhere."""
    if depth_profile and controller != "population":
        raise TQLError(f"--depth-profile applies only with --controller population (got --controller {controller})")
    if last_layer_offset is not None and controller != "feedback":
        raise TQLError(f"--last-layer-offset applies only with --controller feedback (got --controller {controller})")


def _target_hooks(config, schedule: Optional[Path], controller: str, rho, target_entropy, members: int = 4,
                  targets: Optional[str] = None, depth_profile: bool = False, last_layer_offset: float = 0.0):
    """The hooks that set H̄ during training, and a description for the header line."""
    from autotune.agent_options import describe_table
    from autotune.controllers import FeedbackController, FeedbackRule, PBTRule, PopulationController
    from autotune.schedules import Schedule, ScheduleHooks
    from tql.agent import critic_depth

    given = [name for name, v in (("--schedule", schedule), ("--rho", rho), ("--target-entropy", target_entropy),
                                  ("--targets", targets), ("--controller", None if controller == "none" else controller))
             if v is not None]
    if len(given) > 1:
        raise TQLError(f"give only one of {', '.join(given)}: each sets H̄")
    if schedule is not None:
        loaded = Schedule.load(schedule)
        return ScheduleHooks.for_config(loaded, config), f"schedule {loaded.describe()}"
    depth = critic_depth(config.agent)
    if controller == "feedback":
        hooks = FeedbackController(config.spec.n_tokens, FeedbackRule(profile_offset=last_layer_offset), depth)
        offset = f", last layer at rho {last_layer_offset:+.2f}" if last_layer_offset else ""
        return hooks, f"feedback controller from rho={hooks.rho:.2f}{offset}"
    if controller == "population":
        rule = PBTRule(members=members, seed=config.seed, profile=depth_profile)
        hooks = PopulationController(config.spec.n_tokens, rule, depth)
        layers = " (first and last layer, perturbed apart)" if depth_profile else ""
        return hooks, f"population of {members}, rho{layers} " + ", ".join(f"{r:.2f}" for r in hooks.rhos)
    return None, describe_table(config.constant_target())


def _print_result(result) -> None:
    table = Table(title=f"{result.task}  ({result.data_kind} data)")
    for column in ("step", "success %", "mean return", "env steps"):
        table.add_column(column, justify="right")
    for row in result.evals:
        table.add_row(str(row["step"]), f"{100 * row['success_rate']:.1f}", f"{row['mean_return']:.1f}",
                      str(row["env_steps"]))
    console.print(table)
    if result.members > 1:
        console.print(f"population of {result.members}: evaluated the best member by "
                      f"{result.extra['fitness_signal']} fitness, member {result.extra['best_member']}")
    console.print(f"{result.steps} steps in {result.wall_seconds:.1f}s; files in {result.out_dir}")


@app.command()
def sizes(
    obs_dim: int = typer.Option(37, help="state size (default cube-double)"),
    act_dim: int = typer.Option(5, help="action size"),
) -> None:
    """Print the critic size presets with their parameter counts."""
    from tql.model import preset_table

    table = Table(title=f"TQL critic presets (n = {1 + obs_dim + act_dim} tokens)")
    rows = preset_table(obs_dim, act_dim)
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)


@app.command()
def tasks(
    spec: str = typer.Argument("all", help="all, a domain, or a comma list of task names"),
) -> None:
    """List tasks with their token count n and default H̄."""
    from tql.tasks import DEFAULT_RHO, resolve_tasks

    table = Table(title=f"OGBench single tasks (default H̄ = {DEFAULT_RHO} x log n)")
    for column in ("task", "obs", "act", "n", "log n", "default H̄", "episode", "alpha_fql"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for t in resolve_tasks(spec):
        table.add_row(t.name, str(t.obs_dim), str(t.act_dim), str(t.n_tokens), f"{t.max_entropy:.3f}",
                      f"{t.target_entropy(DEFAULT_RHO):.3f}", str(t.episode_length), f"{t.alpha_fql:g}")
    console.print(table)


STORAGE_HELP = "default sqlite:///tql-tune.db here; or postgresql://..., journal:FILE (or FILE.log)"


@app.command()
def run(
    tasks: str = typer.Option("all", "--tasks", help="all (the paper's 25), a domain, or a comma list of tasks"),
    study: str = typer.Option("tql", help="study name; each task's Optuna study is named STUDY:TASK"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    trials: Optional[int] = typer.Option(None, help="trials per task (default: the spec's budget for the profile)"),
    seeds: Optional[int] = typer.Option(None, help="seeds per trial (default: the spec's budget)"),
    profile: str = typer.Option("smoke", help="training profile of each trial: smoke, cpu, paper"),
    sampler: Optional[str] = typer.Option(None, help="tpe, gp, cmaes, grid, random (default: the spec's)"),
    workers: int = typer.Option(1, help="local worker processes on the same studies"),
    spec: Optional[Path] = typer.Option(None, help="study spec TOML (default: built-in, see studies/default.toml)"),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate (and report to the pruner) every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    data_kind: str = typer.Option("auto", help="auto (official first), official, generated"),
    make_data: bool = typer.Option(True, "--make-data/--no-make-data", help="generate missing datasets"),
    runs_dir: Path = typer.Option(Path("runs/studies"), help="where trial runs (metrics, checkpoints) go"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads per worker (default: cores / workers)"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP + " (a study keeps the precision it began with)"),
    cuda_graph: str = typer.Option("auto", "--cuda-graph", help=CUDA_GRAPH_HELP),
    compile_loss: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help=TF32_HELP),
    heartbeat_interval: float = typer.Option(30.0, help="seconds between a running trial's heartbeats"),
    grace_period: float = typer.Option(120.0, help="a running trial with no heartbeat for this long is retried"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Tune H̄ with one Optuna study per task; re-running the command continues the studies."""
    from autotune.spec import load_spec
    from autotune.storage import describe, open_storage
    from autotune.studies import RunPlan, check_studies, create_studies, ensure_data
    from tql.tasks import resolve_tasks

    study_spec = load_spec(spec)
    if sampler is not None:
        study_spec = study_spec.replace(sampler=sampler)
    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes).items()
                 if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    plan = RunPlan(tasks=resolve_tasks(tasks), spec=study_spec, study=study, storage=storage, profile=profile,
                   trials=trials, seeds=seeds, workers=workers, runs_dir=runs_dir, data_dir=data_dir,
                   data_kind=data_kind, make_data=make_data, device=device, threads=threads, precision=precision,
                   compile=compile_loss, train_overrides=overrides, heartbeat_interval=heartbeat_interval,
                   grace_period=grace_period)
    plan.train_config(plan.tasks[0], study_spec.rho_low, 0)  # bad overrides fail here, before any write
    opened = open_storage(storage)
    check_studies(plan, opened)
    kinds = ensure_data(plan, say=console.print)
    create_studies(plan, opened)
    console.print(f"study [bold]{study}[/]: {len(plan.tasks)} task(s) x {plan.trials} trials x {plan.seeds} seed(s), "
                  f"profile {profile} ({precision}), sampler {study_spec.sampler}, {workers} worker(s); "
                  f"storage {describe(storage)}; "
                  f"data: {', '.join(f'{d} {k}' for d, k in kinds.items())}")
    _run_with_progress(plan, opened, quiet)
    _print_summary(_summary(storage, study, None, plan))


def _run_with_progress(plan, storage, quiet: bool) -> None:
    from autotune.progress import StudyProgress
    from autotune.studies import run_workers, work

    with StudyProgress(plan, storage, console, enabled=not quiet) as progress:
        if plan.workers == 1:
            report = work(plan, on_trial=progress.trial_done, on_step=progress.step, on_task=progress.task_started)
            if report.retried_stale:
                console.print(f"re-queued {report.retried_stale} trial(s) whose workers were lost")
        else:
            codes = run_workers(plan, poll=progress.refresh)
            bad = [c for c in codes if c != 0]
            if bad:
                raise TQLError(f"{len(bad)} of {plan.workers} workers failed (exit codes {bad}); "
                               "finished trials are saved, re-run the same command to continue")


def _summary(storage: Optional[str], study: str, task: Optional[str], plan=None) -> dict:
    from autotune.report import summarize

    summary = summarize(storage, study, task)
    if plan is not None:  # only this run's tasks, in the order asked
        order = {t.name: i for i, t in enumerate(plan.tasks)}
        summary["tasks"] = sorted((t for t in summary["tasks"] if t["task"] in order), key=lambda t: order[t["task"]])
    return summary


def _print_summary(summary: dict) -> None:
    from autotune.report import counts_text, fmt_success

    table = Table(title=f"study {summary['study']}  ({summary['storage']})")
    for column in ("task", "n", "best rho", "best H̄", "success % (mean ± std)", "seeds",
                   "done/pruned/failed", "steps", "data"):
        table.add_column(column, justify="left" if column in ("task", "data") else "right")
    for t in summary["tasks"]:
        best = t["best"] or {}
        rho, tied = best.get("rho"), best.get("tied", 1)
        rho_text = "-" if rho is None else _rho_text(best) + (f" (tie x{tied})" if tied > 1 else "")
        table.add_row(t["task"], str(t["n_tokens"] or "-"), rho_text, _target_text(best, t["n_tokens"]),
                      fmt_success(best.get("success_mean"), best.get("success_std")),
                      str(len(best.get("successes", []))) if best else "-", counts_text(t["counts"]),
                      f"{t['steps_total']:,}", t["data_kind"] or "-")
    console.print(table)
    if _layered(summary):
        console.print("a -> b: the first and the last attention layer's rho (and H̄) of a layers study; layers "
                      "between are linear")
    if any((t["best"] or {}).get("tied", 1) > 1 for t in summary["tasks"]):
        console.print("tie xK: K complete trials share the best success; the earliest is shown, and its rho is no "
                      "better than the others' (more steps, seeds or evaluation episodes can separate them)")


def _layered(summary: dict) -> bool:
    return any("rho_first" in (t["best"] or {}) for t in summary["tasks"])


def _rho_text(best: dict) -> str:
    """The best rho; a layers study's as first -> last layer (its "rho" is their mean)."""
    if "rho_first" in best:
        return f"{best['rho_first']:.3f} -> {best['rho_last']:.3f}"
    return f"{best['rho']:.3f}"


def _target_text(best: dict, n_tokens: Optional[int]) -> str:
    """The best H̄ in nats; a layers study's as first -> last layer."""
    import math

    if "rho_first" in best and n_tokens:
        return f"{best['rho_first'] * math.log(n_tokens):.3f} -> {best['rho_last'] * math.log(n_tokens):.3f}"
    target = best.get("target_entropy")
    return f"{target:.3f}" if target is not None else "-"


@app.command()
def show(
    study: str = typer.Option("tql", help="study name given to `tql-tune run`"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    task: Optional[str] = typer.Option(None, help="only this task"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="terminal plots of success vs rho and entropies"),
) -> None:
    """Summarise a study: best rho and H̄ per task, success over seeds, trial counts, plots."""
    import json

    from autotune.report import entropy_plot, success_vs_rho_plot

    summary = _summary(storage, study, task)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _print_summary(summary)
    if plots:
        for t in summary["tasks"]:
            print(success_vs_rho_plot(t))
            print(entropy_plot(t))


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="schedule JSON file to write"),
    study: Optional[str] = typer.Option(None, help="take the best schedule(s) of this study"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    task: Optional[str] = typer.Option(None, help="only this task's best (default: pool all the study's tasks)"),
    exclude_domain: Optional[str] = typer.Option(None, help="pool every domain but this one (leave-one-domain-out)"),
    run_dir: Optional[list[Path]] = typer.Option(None, "--run", help="controller run folder(s) with schedule.json"),
) -> None:
    """Export an H̄ schedule (rho over progress) from a study or controller runs, per task or pooled."""
    from autotune.report import summarize
    from autotune.transfer import pooled, schedule_from_run, study_schedules

    if (study is None) == (not run_dir):
        raise TQLError("give either --study (with --task or pooling) or --run DIR (one or more)")
    if run_dir:
        schedules = [schedule_from_run(d) for d in run_dir]
    else:
        schedules = study_schedules(summarize(storage, study, None), exclude_domain=exclude_domain, only_task=task)
    schedule = schedules[0] if len(schedules) == 1 else pooled(schedules, excluded_domain=exclude_domain)
    schedule.save(out)
    console.print(f"wrote {out}: {schedule.describe()} ({schedule.meta.get('source')})")


@app.command()
def apply(
    schedule: Path = typer.Option(..., "--schedule", help="schedule JSON (from `tql-tune export` or a controller run)"),
    task: str = typer.Option(..., "--task", help="the new task to train with it (no tuning)"),
    profile: str = typer.Option("cpu", help="smoke, cpu, paper"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    seed: int = typer.Option(0, help="random seed"),
    out: Optional[Path] = typer.Option(None, help="output folder (default runs/<task>/apply-seed<seed>)"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    make_data: bool = typer.Option(False, "--make-data", help="generate the dataset if it is missing"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = typer.Option("auto", "--cuda-graph", help=CUDA_GRAPH_HELP),
    compile_loss: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help=TF32_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a task with a schedule found elsewhere: H̄ = rho(p) * log n of the new task, per
    layer of its critic (printed first as a table)."""
    from autotune.schedules import Schedule, ScheduleHooks
    from tql.train import TrainConfig
    from tql.train import train as run_training

    loaded = Schedule.load(schedule)
    config = TrainConfig.from_profile(task, profile, {"precision": precision, "compile": compile_loss}, steps=steps,
                                      seed=seed, data_dir=str(data_dir), make_data=make_data, device=device,
                                      threads=threads, eval_every=eval_every, eval_episodes=eval_episodes,
                                      cuda_graph=cuda_graph, tf32=tf32)
    hooks = ScheduleHooks.for_config(loaded, config)
    source_n = loaded.meta.get("n_tokens")
    console.print(f"schedule {loaded.describe()} from {loaded.meta.get('source', schedule)}"
                  f"{f' (n = {source_n})' if source_n else ''} applied to {task} (n = {config.spec.n_tokens}), "
                  f"a depth-{hooks.depth} critic:")
    console.print(_layer_table(loaded, hooks.depth, config.spec.n_tokens))
    out = out or Path("runs") / task / f"apply-seed{seed}"
    result = run_training(config, out, hooks=hooks, console=console, progress=not quiet)
    _print_result(result)


APPLY_POINTS = (("start", 0.0), ("middle", 0.5), ("end", 1.0))


def _layer_table(schedule, depth: int, n_tokens: int) -> Table:
    """H̄ in nats (and rho) per layer of the critic at the start, middle and end of training:
    what a schedule means for this task's n and this critic's depth, shown before training."""
    import math

    table = Table(title=f"H̄ in nats (rho = H̄ / log n, log n = {math.log(n_tokens):.3f})",
                  caption="both token groups of a layer share its H̄")
    table.add_column("layer", justify="right")
    for name, progress in APPLY_POINTS:
        table.add_column(f"{name} (p = {progress:g})", justify="right")
    columns = [schedule.layer_rhos(progress, depth) for _, progress in APPLY_POINTS]
    for layer in range(depth):
        table.add_row(str(layer), *(f"{rhos[layer] * math.log(n_tokens):.3f} ({rhos[layer]:.3f})" for rhos in columns))
    return table


@app.command()
def compare(
    tasks: str = typer.Option(..., "--tasks", help="all, a domain, or a comma list of tasks"),
    approaches: str = typer.Option("default,tuned,feedback,population,transfer",
                                   help="comma list: default, published, tuned, knots, feedback, population, "
                                        "transfer, file:NAME=PATH"),
    seeds: int = typer.Option(3, help="seeds per task and approach (seeds 100, 101, ... unseen by tuning)"),
    profile: str = typer.Option("smoke", help="training profile of every run: smoke, cpu, paper"),
    study: Optional[str] = typer.Option(None, help="constant-rho study for 'tuned' and 'transfer'"),
    knots_study: Optional[str] = typer.Option(None, help="knots study for 'knots'"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    out: Path = typer.Option(Path("runs/compare"), help="folder for runs, report.md, report.png, data.json"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = typer.Option("auto", "--cuda-graph", help=CUDA_GRAPH_HELP),
    compile_loss: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help=TF32_HELP),
    reps: int = typer.Option(2000, help="bootstrap resamples"),
) -> None:
    """Compare ways of setting H̄ on the same tasks, seeds and budget; writes a report and a plot."""
    import shlex

    from autotune.compare import ComparePlan, run_comparison
    from autotune.report_compare import rich_tables, write_markdown, write_png
    from tql.tasks import resolve_tasks

    overrides = {k: v for k, v in dict(steps=steps, eval_every=eval_every, eval_episodes=eval_episodes).items()
                 if v is not None}
    overrides.update(cuda_graph=cuda_graph, tf32=tf32)
    plan = ComparePlan(tasks=resolve_tasks(tasks), approaches=[a.strip() for a in approaches.split(",") if a.strip()],
                       seeds=[100 + i for i in range(seeds)], out_dir=out, profile=profile, study=study,
                       knots_study=knots_study, storage=storage, train_overrides=overrides, data_dir=data_dir,
                       device=device, threads=threads, precision=precision, compile=compile_loss)
    plan.config(plan.tasks[0], plan.seeds[0])  # bad budgets fail before any run

    def said(approach: str, task: str, seed: int, value: float) -> None:
        console.print(f"{approach:>10} {task} seed {seed}: success {100 * value:.0f}%", highlight=False)

    data = run_comparison(plan, on_run=said)
    data.meta["command"] = "tql-tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    data.save(out / "data.json")
    for table in rich_tables(data, reps=reps):
        console.print(table)
    md, png = write_markdown(data, out / "report.md", reps=reps), write_png(data, out / "report.png", reps=reps)
    console.print(f"wrote {md}, {png} and {out / 'data.json'}")


@app.command()
def lodo(
    holdout: str = typer.Option(..., "--holdout", help="domain to hold out, e.g. scene-play"),
    study: str = typer.Option(..., help="constant-rho study run on the other domains"),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    seeds: int = typer.Option(3, help="seeds per held-out task and approach"),
    profile: str = typer.Option("smoke", help="training profile: smoke, cpu, paper"),
    steps: Optional[int] = typer.Option(None, help="training steps per run (default: the profile's)"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation"),
    out: Path = typer.Option(Path("runs/lodo"), help="folder for the schedule, runs and report"),
    data_dir: Path = typer.Option(Path("data"), help=DATA_DIR_HELP),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
) -> None:
    """Leave one domain out: pool the study's schedules of four domains, evaluate on the fifth
    against the default constant (no tuning on the held-out domain)."""
    from autotune.report import summarize
    from autotune.transfer import leave_one_domain_out
    from tql.agent import AgentConfig

    AgentConfig().replace(precision=precision)  # a bad value fails before the schedule is written
    schedule = leave_one_domain_out(summarize(storage, study), holdout)
    path = schedule.save(out / f"schedule-without-{holdout}.json")
    console.print(f"learned without {holdout}: {schedule.describe()} from {', '.join(schedule.meta['pooled_from'])} "
                  f"-> {path}")
    compare(tasks=holdout, approaches="default,transfer", seeds=seeds, profile=profile, study=study, knots_study=None,
            storage=storage, steps=steps, eval_every=eval_every, eval_episodes=eval_episodes, out=out,
            data_dir=data_dir, threads=threads, device="auto", precision=precision, cuda_graph="auto",
            compile_loss=None, tf32=True, reps=2000)


@data_app.command("make")
def data_make(
    names: list[str] = typer.Argument(..., help="tasks or domains (all, cube-double-play, a task name, ...)"),
    episodes: int = typer.Option(100, help="training episodes (plus 10% validation episodes)"),
    episode_length: int = typer.Option(1001, help="steps per episode (OGBench uses 1001)"),
    dataset_type: Optional[str] = typer.Option(None, help="play (plan oracles) or noisy (Markov oracles)"),
    seed: int = typer.Option(0, help="random seed"),
    dir: Path = typer.Option(Path("data"), "--dir", help=DATA_DIR_HELP),
) -> None:
    """Generate OGBench-format datasets with the oracles shipped in the ogbench package."""
    from tql.data import generate_dataset
    from tql.tasks import resolve_tasks

    domains = {}
    for name in names:
        for task in resolve_tasks(name):
            domains.setdefault(task.domain, task)
    for task in domains.values():
        paths = generate_dataset(task, dir, episodes=episodes, episode_length=episode_length, seed=seed,
                                 dataset_type=dataset_type, progress=True)
        console.print(f"[green]wrote[/] {paths.train} and {paths.val} [yellow](generated, not official)")


def _quiet_library_warnings() -> None:
    """Gymnasium and GLFW warn on every env build; they say nothing useful to our users.
    Optuna's per-trial INFO lines repeat what our progress display and tables show."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    warnings.filterwarnings("ignore", message=".*precision lowered.*")
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")


def main() -> None:
    _quiet_library_warnings()
    try:
        app()
    except TQLError as exc:
        # A Text, not markup: messages hold brackets such as tql-tune[postgres] or [0.1, 1.0].
        err_console.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved (checkpoints and results are written atomically)")
        sys.exit(130)


if __name__ == "__main__":
    main()
