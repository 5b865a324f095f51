"""What every benchmark shares: where its results go, the header that says how a result was
made (command, machine, commit, torch), and JSON written whole or not at all.

Run a benchmark as a module from the repository root::

    python -m benchmarks.speed.update_speed --json benchmarks/speed/results/update_speed.json

``-m`` puts the root on the import path, so the scripts import this module and each other by
their full names (``benchmarks.learning.side_by_side``) and nothing edits ``sys.path``. A
result is only worth keeping if a reader can rerun it and knows what it ran on: every JSON
file starts with ``header`` and every text result with the same lines, both from here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from tql.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def module_name(script: str | Path) -> str:
    """``benchmarks/speed/update_speed.py`` -> ``benchmarks.speed.update_speed``: the name ``-m`` runs."""
    relative = Path(script).resolve().relative_to(ROOT).with_suffix("")
    return ".".join(relative.parts)


def results_dir(script: str | Path) -> Path:
    """The ``results/`` folder beside ``script``, where its committed results live."""
    return Path(script).resolve().parent / "results"


def command(script: str | Path, argv: list[str] | None = None) -> str:
    """The command line that reruns this result from the repository root."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module_name(script), *(shlex.quote(a) for a in argv)])


def commit() -> str:
    """The checkout's short commit, flagged when tracked files differ from it."""
    def git(*words: str) -> str:
        return subprocess.run(["git", *words], capture_output=True, text=True, cwd=ROOT, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty else "")


def machine() -> str:
    """The hardware by what it is: CPU cores, and the GPU when torch sees one."""
    import torch

    cpu = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        return f"{cpu}; {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return cpu


def provenance(script: str | Path, argv: list[str] | None = None) -> dict[str, str]:
    """Everything a reader needs to trust or rerun a result, as the JSON ``header``."""
    import torch

    return {"command": command(script, argv), "machine": machine(), "commit": commit(),
            "torch": torch.__version__, "python": platform.python_version(),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def header_lines(header: dict[str, str] | list[str]) -> list[str]:
    """A header as the first lines of a text result (a list is an older file's lines, kept)."""
    if isinstance(header, list):
        return list(header)
    return [f"$ {header['command']}",
            f"machine: {header['machine']}; torch {header['torch']}; commit {header['commit']}"]


def print_header(script: str | Path, argv: list[str] | None = None) -> dict[str, str]:
    """Print the header lines (a text result starts with them) and return the header."""
    header = provenance(script, argv)
    for line in header_lines(header):
        print(line, flush=True)
    return header


def add_json_option(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """The one ``--json PATH`` option every benchmark has."""
    parser.add_argument("--json", metavar="PATH", default=None,
                        help=f"also write {what} as JSON to PATH (it starts with the command, machine and commit)")


def write_json(path: str | Path | None, result: dict[str, Any], script: str | Path,
               argv: list[str] | None = None, header: dict[str, str] | None = None) -> Path | None:
    """Write ``{"header": ..., **result}`` to ``path`` atomically (a cut-off run leaves the old
    file, never half a new one); nothing when ``path`` is None. Returns the path written."""
    if path is None:
        return None
    if "header" in result:
        raise ValueError("a benchmark result must not set 'header': write_json adds it")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"header": header or provenance(script, argv), **result}  # header first: not sorted
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    return path


class ChildFailed(RuntimeError):
    """A fresh process of a benchmark ended with an error (its stderr's tail in the message)."""


def run_child(script: str | Path, child_args: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` again in a fresh interpreter, as ``python -m ... --child ARGS`` from the
    root (imports, caches and allocator state of its own: what side-by-side timings of whole
    runs need), and return the JSON object it prints last (``print_child_result``)."""
    command = [sys.executable, "-m", module_name(script), "--child", *child_args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=None if env is None else dict(env))
    if done.returncode != 0:
        raise ChildFailed(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_child_result(result: dict[str, Any]) -> int:
    """A child's result, as ``run_child`` reads it: one JSON line, printed last."""
    print(json.dumps(result), flush=True)
    return 0
