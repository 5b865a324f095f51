"""`tql-tune train`, `apply`, `sizes`, `tasks`, `data make`: single runs and what they need."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from autotune.cli.common import (AGENT_OPTION_HELP, COLLAPSE_ALARM_OPTION, COMPILE_OPTION, CUDA_GRAPH_OPTION,
                                 DATA_DIR_HELP, DEVICE_OPTION, EVAL_WORKERS_OPTION, PRECISION_HELP, SETTINGS_HELP,
                                 LOG_OPTION, SHARING_HELP, TARGET_HELP, TF32_OPTION, WANDB_ENTITY_OPTION,
                                 WANDB_PROJECT_OPTION, app, console, data_app, print_result)


@app.command()
def train(
    task: str = typer.Option(..., "--task", help="OGBench singletask name, e.g. cube-double-play-singletask-task2-v0"),
    profile: str = typer.Option("cpu", help="budget profile: smoke (seconds), cpu (minutes), paper (1M steps, GPU)"),
    size: Optional[str] = typer.Option(None, help="critic size preset (see `tql-tune sizes`)"),
    critic: str = typer.Option("tql", help="critic: tql (transformer) or mlp (FQL baseline)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the profile's)"),
    target_entropy: Optional[str] = typer.Option(None, "--target-entropy", help=TARGET_HELP),
    rho: Optional[str] = typer.Option(None, help="constant H̄ as a fraction of log n, in (0, 1]; same forms"),
    targets: Optional[str] = typer.Option(None, help="published: the paper's per-domain targets (docs/published.md)"),
    settings: str = typer.Option("published", help=SETTINGS_HELP),
    agent: list[str] = typer.Option([], "--agent", help=AGENT_OPTION_HELP),
    temperature_sharing: Optional[str] = typer.Option(None, "--temperature-sharing", help=SHARING_HELP),
    collapse_alarm: Optional[float] = COLLAPSE_ALARM_OPTION,
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
    device: str = DEVICE_OPTION,
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
    log: list[str] = LOG_OPTION,
    wandb_project: Optional[str] = WANDB_PROJECT_OPTION,
    wandb_entity: Optional[str] = WANDB_ENTITY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train one TQL (or FQL) agent, or a population; resumes from the last checkpoint in --out."""
    from autotune import api

    result = api.train(task, profile=profile, size=size, critic=critic, steps=steps, target_entropy=target_entropy,
                       rho=rho, targets=targets, settings=settings, agent=agent,
                       temperature_sharing=temperature_sharing, collapse_alarm=collapse_alarm,
                       entropy_control=not no_entropy_control, seed=seed, out=out, data_dir=data_dir,
                       data_kind=data_kind, make_data=make_data, eval_episodes=eval_episodes, eval_every=eval_every,
                       eval_workers=eval_workers, batch_size=batch_size, device=device, threads=threads,
                       precision=precision, cuda_graph=cuda_graph, compile=compile_loss, tf32=tf32,
                       schedule=schedule, controller=controller, members=members, fitness=fitness,
                       depth_profile=depth_profile, last_layer_offset=last_layer_offset, fresh=fresh,
                       log=log, wandb_project=wandb_project, wandb_entity=wandb_entity, console=console,
                       progress=not quiet)
    print_result(result)


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
    device: str = DEVICE_OPTION,
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    cuda_graph: str = CUDA_GRAPH_OPTION,
    compile_loss: Optional[bool] = COMPILE_OPTION,
    tf32: bool = TF32_OPTION,
    agent: list[str] = typer.Option([], "--agent", help=AGENT_OPTION_HELP),
    log: list[str] = LOG_OPTION,
    wandb_project: Optional[str] = WANDB_PROJECT_OPTION,
    wandb_entity: Optional[str] = WANDB_ENTITY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a task with a schedule found elsewhere: H̄ = rho(p) * log n of the new task, per
    layer of its critic (printed first as a table)."""
    from autotune import api

    def drawn(loaded, depth: int, n_tokens: int) -> None:
        console.print(_layer_table(loaded, depth, n_tokens))

    result = api.apply(schedule, task, profile=profile, steps=steps, eval_every=eval_every,
                       eval_episodes=eval_episodes, seed=seed, out=out, data_dir=data_dir, make_data=make_data,
                       threads=threads, device=device, precision=precision, cuda_graph=cuda_graph,
                       compile=compile_loss, tf32=tf32, agent=agent, on_schedule=drawn, log=log,
                       wandb_project=wandb_project, wandb_entity=wandb_entity, console=console,
                       progress=not quiet)
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


@app.command()
def attention(
    run_dir: Path = typer.Argument(..., help="a run folder: tql-tune train --out, or a trial's seed-N folder"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="a terminal plot of entropy vs target"),
    batch: int = typer.Option(512, help="transitions of the run's data the last checkpoint's critic is run on"),
) -> None:
    """A run's attention: per layer and group, entropy vs its target over training, the
    temperature beside it and when the control engaged; at the last checkpoint, the spread of
    per-query entropies and largest weights; writes attention.png in the run."""
    import json
    import sys

    from autotune import api
    from autotune.report.attention_report import attention_plot, attention_rows

    read = api.attention(run_dir, batch=batch, png=not as_json)
    history = read.history
    if as_json:
        sys.stdout.write(json.dumps(history, indent=1) + "\n")
        return
    log_n = f", log n = {history['log_n']:.3f}" if history["log_n"] else ""
    table = Table(title=f"{history['task'] or run_dir}: attention over {history['steps']:,} updates{log_n}",
                  caption=f"engaged: the first logged step with the entropy within {history['margin']} nats of its "
                          "target (never: H̄ did not act on this run)")
    for column in ("layer/group", "H̄ (last)", "H first", "H lowest", "H last", "alpha first", "alpha last",
                   "engaged at"):
        table.add_column(column, justify="left" if column == "layer/group" else "right")
    for row in attention_rows(history):
        table.add_row(row["layer_group"], _num(row["target_last"]), _num(row["entropy_first"]),
                      _num(row["entropy_lowest"]), _num(row["entropy_last"]), _num(row["alpha_first"], "g"),
                      _num(row["alpha_last"], "g"), "never" if row["engaged"] is None else f"{row['engaged']:,}")
    console.print(table)
    if history["checkpoint"] is not None:
        _print_checkpoint_view(history["checkpoint"])
    if plot:
        print(attention_plot(history))
    console.print(f"wrote {read.png}")


def _print_checkpoint_view(view: dict) -> None:
    from autotune.report.attention_report import checkpoint_rows

    table = Table(title=f"at the last checkpoint (update {view['step']:,}), {view['batch']} transitions of the run's "
                        "data: each query row's attention, every head",
                  caption=f"10% / 50% / 90% of the rows; largest weight: {view['uniform_largest']:.3f} for uniform "
                          "attention, 1 on one token; [VALUE] reads: its mean weight on itself / observation / "
                          "action tokens (uniform: " + " / ".join(f"{v:.2f}" for v in view["uniform_reads"]) + ")")
    for column in ("layer/group", "entropy (nats)", "largest weight", "[VALUE] reads"):
        table.add_column(column, justify="left" if column == "layer/group" else "right")
    for row in checkpoint_rows(view):
        split = row["value_weight"]
        table.add_row(row["layer_group"], " / ".join(f"{v:.2f}" for v in row["entropy"]),
                      " / ".join(f"{v:.3f}" for v in row["largest"]),
                      "" if split is None else f"{split['value']:.2f} / {split['observation']:.2f} / "
                                               f"{split['action']:.2f}")
    console.print(table)


def _num(value, form: str = ".3f") -> str:
    return "-" if value is None else format(value, form)


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
    from autotune import api

    def wrote(paths, meta: dict) -> None:
        console.print(f"[green]wrote[/] {paths.train} and {paths.val} [yellow](generated, not official)[/]: "
                      f"{meta['train_episodes']:,} + {meta['val_episodes']:,} val episodes of {episode_length} steps, "
                      f"{meta['transitions_per_second']:,.0f} steps/s on {meta['workers']} workers")

    api.make_data(names, episodes=episodes, episode_length=episode_length, dataset_type=dataset_type, seed=seed,
                  dir=dir, workers=workers, on_dataset=wrote, progress=True)
