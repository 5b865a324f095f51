"""Atomic file writes and JSON-lines helpers.

Finished work (checkpoints, configs, summaries) is written to a temporary file in the same
folder, flushed to disk, then renamed over the target: a crash leaves the old file or the new
one, never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def previous_path(path: str | Path) -> Path:
    """Where ``atomic_torch_save(..., keep_previous=True)`` keeps the file it replaced:
    ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_torch_save(obj: Any, path: str | Path, keep_previous: bool = False) -> None:
    """``torch.save`` atomically; with ``keep_previous`` the file it replaces stays as
    ``previous_path(path)`` (a hard link, so no moment passes without ``path``), a good copy to
    fall back on should the new one ever be found damaged."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if keep_previous and path.exists():
            with atomic_path(previous_path(path)) as link:
                link.unlink()
                try:
                    os.link(path, link)
                except OSError:  # a file system without hard links
                    shutil.copyfile(path, link)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON record per line (a torn last line is skipped by ``read_jsonl``)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-append
    return records


def rewrite_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in records))
