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

from tql.errors import TQLError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transformer Q-Learning on OGBench with auto-tuned attention target entropy.")
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect OGBench-format datasets.")
app.add_typer(data_app, name="data")
# Piped output (files, CI logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

DATA_DIR_HELP = "folder with OGBench .npz files (generated ones live in its generated/ subfolder)"


@app.command()
def train(
    task: str = typer.Option(..., "--task", help="OGBench singletask name, e.g. cube-double-play-singletask-task2-v0"),
    profile: str = typer.Option("cpu", help="budget profile: smoke (seconds), cpu (minutes), paper (1M steps, GPU)"),
    size: Optional[str] = typer.Option(None, help="critic size preset (see `tql-tune sizes`)"),
    critic: str = typer.Option("tql", help="critic: tql (transformer) or mlp (FQL baseline)"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the profile's)"),
    target_entropy: Optional[float] = typer.Option(None, "--target-entropy", help="constant H̄ in (0, log n]"),
    rho: Optional[float] = typer.Option(None, help="constant H̄ as a fraction of log n, in (0, 1]"),
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
    fresh: bool = typer.Option(False, "--fresh", help="discard an existing run in --out instead of resuming"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train one TQL (or FQL) agent; resumes from the last checkpoint in --out."""
    from tql.train import TrainConfig
    from tql.train import train as run_training

    agent_overrides = {"critic": critic, "entropy_control": not no_entropy_control}
    if size is not None:
        agent_overrides["size"] = size
    if batch_size is not None:
        agent_overrides["batch_size"] = batch_size
    config = TrainConfig.from_profile(
        task, profile, agent_overrides, steps=steps, rho=rho, target_entropy=target_entropy, seed=seed,
        data_dir=str(data_dir), data_kind=data_kind, make_data=make_data, eval_episodes=eval_episodes,
        eval_every=eval_every, device=device, threads=threads,
    )
    out = out or Path("runs") / task / f"{critic}-seed{seed}"
    console.print(f"[bold]{task}[/] critic={critic} size={config.agent.size} profile={profile} "
                  f"steps={config.steps} H̄={config.constant_target():.3f} (log n = {config.spec.max_entropy:.3f})")
    result = run_training(config, out, fresh=fresh, console=console, progress=not quiet)
    _print_result(result)


def _print_result(result) -> None:
    table = Table(title=f"{result.task}  ({result.data_kind} data)")
    for column in ("step", "success %", "mean return", "env steps"):
        table.add_column(column, justify="right")
    for row in result.evals:
        table.add_row(str(row["step"]), f"{100 * row['success_rate']:.1f}", f"{row['mean_return']:.1f}",
                      str(row["env_steps"]))
    console.print(table)
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
    """Gymnasium and GLFW warn on every env build; they say nothing useful to our users."""
    import warnings

    warnings.filterwarnings("ignore", message=".*precision lowered.*")
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")


def main() -> None:
    _quiet_library_warnings()
    try:
        app()
    except TQLError as exc:
        err_console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is saved (checkpoints and results are written atomically)")
        sys.exit(130)


if __name__ == "__main__":
    main()
