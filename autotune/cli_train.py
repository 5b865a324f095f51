"""`tql-tune train`, `apply`, `sizes`, `tasks`, `data make`: single runs and what they need."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autotune.cli_common import (AGENT_OPTION_HELP, COMPILE_OPTION, CUDA_GRAPH_OPTION, DATA_DIR_HELP,
                                 EVAL_WORKERS_OPTION, PRECISION_HELP, SETTINGS_HELP, TARGET_HELP, TF32_OPTION,
                                 app, console, data_app, print_result)
from tql.errors import TQLError


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
    eval_workers: str = EVAL_WORKERS_OPTION,
    batch_size: Optional[int] = typer.Option(None, help="batch size (default: the profile's)"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)"),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
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
    from tql.eval_workers import parse_eval_workers
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
        eval_workers=parse_eval_workers(eval_workers),
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
    print_result(result)


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
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a task with a schedule found elsewhere: H̄ = rho(p) * log n of the new task, per
    layer of its critic (printed first as a table)."""
    from autotune.schedules import Schedule, ScheduleHooks
    from autotune.ties import say_ties
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
    say_ties(console, loaded.meta.get("ties", []))
    out = out or Path("runs") / task / f"apply-seed{seed}"
    result = run_training(config, out, hooks=hooks, console=console, progress=not quiet)
    print_result(result)


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


@data_app.command("make")
def data_make(
    names: list[str] = typer.Argument(..., help="tasks or domains (all, cube-double-play, a task name, ...)"),
    episodes: Optional[int] = typer.Option(
        None, help="training episodes (plus 10% validation episodes); default OGBench's: 1000, 3000 for cube-triple"),
    episode_length: int = typer.Option(1001, help="steps per episode (OGBench uses 1001)"),
    dataset_type: Optional[str] = typer.Option(None, help="play (plan oracles) or noisy (Markov oracles)"),
    seed: int = typer.Option(0, help="random seed"),
    dir: Path = typer.Option(Path("data"), "--dir", help=DATA_DIR_HELP),
    workers: Optional[int] = typer.Option(
        None, help="processes collecting episodes (default: every core); the files are the same whatever the number"),
) -> None:
    """Generate OGBench-format datasets with the oracles shipped in the ogbench package."""
    from tql.data import available_cpus, generate_dataset, read_generated_meta
    from tql.tasks import resolve_tasks

    domains = {}
    for name in names:
        for task in resolve_tasks(name):
            domains.setdefault(task.domain, task)
    for task in domains.values():
        paths = generate_dataset(task, dir, episodes=episodes, episode_length=episode_length, seed=seed,
                                 dataset_type=dataset_type, progress=True,
                                 workers=available_cpus() if workers is None else workers)
        meta = read_generated_meta(paths.train)
        console.print(f"[green]wrote[/] {paths.train} and {paths.val} [yellow](generated, not official)[/]: "
                      f"{meta['train_episodes']:,} + {meta['val_episodes']:,} val episodes of {episode_length} steps, "
                      f"{meta['transitions_per_second']:,.0f} steps/s on {meta['workers']} workers")
