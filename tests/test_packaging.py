"""What a non-editable install (``pip install .``) ships: every package, and the built-in specs
as package data, so that ``tql-tune experiment`` and ``run --spec NAME`` work in any folder."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from autotune.tuning.shipped import CHECKOUT, find_spec_file, shipped_dir, shipped_names
from tql.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_package_list_holds_every_package_and_the_specs():
    found = set(find_packages(str(ROOT), include=["tql*", "autotune*"]))
    assert found and set(SETUPTOOLS["packages"]) == found | {"autotune.studies"}
    assert SETUPTOOLS["package-dir"] == {"autotune.studies": "studies"}
    assert SETUPTOOLS["package-data"] == {"autotune.studies": ["*.toml"]}


def test_built_in_specs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: no studies/ here
    assert shipped_dir() == CHECKOUT  # an editable install reads the checkout's studies/
    assert {"default", "experiment", "experiment_engaged", "gained", "knots", "layers"} <= set(shipped_names())
    assert find_spec_file("gained", "study spec") == CHECKOUT / "gained.toml"
    assert find_spec_file("studies/knots.toml", "study spec") == CHECKOUT / "knots.toml"
    mine = tmp_path / "gained.toml"
    mine.write_text("version = 1\n")
    assert find_spec_file("gained.toml", "study spec") == Path("gained.toml")  # a file wins over a name
    with pytest.raises(ConfigError, match=r"^study spec 'gainde' is neither a file nor a built-in spec; "
                                          r"built-in: default, experiment, "):
        find_spec_file("gainde", "study spec")


def test_experiment_plan_only_works_from_an_empty_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autotune.cli", "experiment", "--plan-only", "--out", "x"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "experiment: 2 task(s) x 3 seed(s)" in done.stdout and not (tmp_path / "x" / "runs").exists()


def test_one_version_in_pyproject_and_the_package():
    import tql

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == tql.__version__
