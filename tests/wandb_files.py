"""Reads an offline W&B run's ``run-<id>.wandb`` file: the records W&B would upload, in
their own format (a LevelDB-style log of 32 KiB blocks holding ``wandb.proto`` ``Record``
messages), so the tests check the file itself, not what our code meant to send."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # crc32c (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, f"{path} is not a W&B run file"
    out, pending, pos = [], b"", 7
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def read_run(path: Path) -> dict:
    """``{"run": Run record fields, "config": {...}, "history": [{...}], "summary": {...}}``."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = {"run": {}, "config": {}, "history": [], "summary": {}}
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            found["run"] = {"id": run.run_id, "project": run.project, "group": run.run_group,
                            "job_type": run.job_type, "name": run.display_name}
            found["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            found["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            found["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                     for i in record.history.item})
        elif kind == "summary":
            found["summary"].update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                     for i in record.summary.update})
    return found


def run_files(folder: Path) -> list[Path]:
    """Every offline run file under ``folder`` (``<folder>/wandb/offline-run-*/run-*.wandb``)."""
    return sorted(Path(folder).glob("wandb/offline-run-*/run-*.wandb"))
