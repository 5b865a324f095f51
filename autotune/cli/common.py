"""What every `tql-tune` command module shares: the Typer app, the consoles, option help texts."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transformer Q-Learning on OGBench with auto-tuned attention target entropy.")
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect OGBench-format datasets.")
app.add_typer(data_app, name="data")
# Piped output (files, CI logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

DATA_DIR_HELP = "folder with OGBench .npz files (generated ones live in its generated/ subfolder)"
SETTINGS_HELP = ("agent settings: published (TQL as published, the default), fql (FQL's optimiser: Adam 3e-4, no "
                 "decay or schedule, no actor LayerNorm), small-alpha (tql-tune 0.1's: alpha from 0.01 at lr 3e-4, sums)")
AGENT_OPTION_HELP = "one agent option KEY=VALUE (repeatable), e.g. alpha_init=0.01 or two_sided=true"
SHARING_HELP = ("temperatures of the entropy control: layer_group (one per layer and token group, published), "
                "layer (one per layer) or global (one for the whole critic)")
TARGET_HELP = ("constant H̄ in (0, log n]: 3.0 (every layer), 3.0,2.5 (per layer) or 3.0:2.8,2.5:2.4 "
               "([VALUE]:other rows per layer)")
CUDA_GRAPH_HELP = "auto (on for CUDA), on, off: replay each update from a CUDA graph (no per-step launch overhead)"
COMPILE_HELP = ("torch.compile the whole loss (default: when the run is long enough for compiling to pay: from "
                "2,000 updates on a CPU, 50,000 on CUDA)")
TF32_HELP = "CUDA: float32 matmuls on TF32 tensor cores (the default; --no-tf32 for full float32)"
# The speed options of every training command, declared once (their help says what they do).
CUDA_GRAPH_OPTION = typer.Option("auto", "--cuda-graph", help=CUDA_GRAPH_HELP)
COMPILE_OPTION = typer.Option(None, "--compile/--no-compile", help=COMPILE_HELP)
TF32_OPTION = typer.Option(True, "--tf32/--no-tf32", help=TF32_HELP)
COLLAPSE_ALARM_HELP = ("flag a run whose attention falls below this fraction of log n in any layer (one line, the "
                       "run's summary, a trial attribute, the reports; default 0.2; 0 turns the alarm off)")
COLLAPSE_ALARM_OPTION = typer.Option(None, "--collapse-alarm", help=COLLAPSE_ALARM_HELP)
WORKERS_HELP = "a number >= 1, or auto (on a CPU one per core, each on one thread; 1 on CUDA)"
EVAL_WORKERS_HELP = ("processes an evaluation's episodes are spread over, each with its own envs: auto (1 when "
                     "training on a CPU; on CUDA one per spare core, at most 16) or N; results do not depend on it")
EVAL_WORKERS_OPTION = typer.Option("auto", "--eval-workers", help=EVAL_WORKERS_HELP)
LOG_OPTION = typer.Option([], "--log", help="mirror every run's records into wandb and/or tensorboard (repeatable; "
                                            "none by default; W&B offline unless logged in): docs/tracking.md")
WANDB_PROJECT_OPTION = typer.Option(None, "--wandb-project", help="W&B project (default $WANDB_PROJECT, else tql-tune)")
WANDB_ENTITY_OPTION = typer.Option(None, "--wandb-entity", help="W&B entity (default $WANDB_ENTITY, else yours)")
DEVICE_OPTION = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
PRECISION_HELP = ("fp32, or bf16: forward passes under bfloat16 autocast (attention, outputs and losses stay "
                  "float32); faster where bf16 matmuls are (GPUs, CPUs with AVX512-BF16/AMX)")


STORAGE_HELP = "default sqlite:///tql-tune.db here; or postgresql://..., journal:FILE (or FILE.log)"


def print_result(result) -> None:
    """A finished run's evaluations as a table on the console."""
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
