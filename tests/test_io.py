"""Atomic writes keep the old file whole when a write fails; torn JSONL lines are skipped."""

import json

import pytest

from tql.io import append_jsonl, atomic_path, atomic_write_json, read_jsonl


def test_failed_write_leaves_the_previous_file_and_no_temp_files(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"trial": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"trial": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as handle:
        handle.write('{"step": 2, "tr')
    assert read_jsonl(path) == [{"step": 1}]
