"""The installed environment is the locked one (requirements-lock.txt), so drift is seen, not guessed.

The lock is what the suite last passed with on a fresh machine; a machine installed without it
(or a lock refreshed without reinstalling) fails here with the packages that differ named.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "requirements-lock.txt"


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a pip constraints file of ``name==version`` lines."""
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path.name}:{number}: {raw!r} is not a 'name==version' line")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def lock_differences(pins: dict[str, str], installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """One line per locked package whose installed version differs (a build label such as
    torch's ``+cpu`` is not a difference: the lock serves CPU and CUDA builds of a release)."""
    differences = []
    for name, locked in sorted(pins.items()):
        found = installed(name)
        if found is None:
            differences.append(f"{name}: locked {locked}, not installed")
        elif Version(found).public != Version(locked).public:
            differences.append(f"{name}: locked {locked}, installed {found}")
    return differences


def check_lock(path: Path) -> None:
    """Fail naming every package whose installed version differs from the lock at ``path``."""
    differences = lock_differences(read_lock(path))
    if differences:  # raised, not asserted: pytest would rewrite the message's layout
        raise AssertionError(
            f"installed packages differ from {path.name} (install with "
            f"`pip install -c {path.name} -e '.[test]'`, or refresh it with `bash .ci/refresh-lock`):\n  "
            + "\n  ".join(differences))


def test_installed_versions_match_the_lock():
    check_lock(LOCK)


def test_the_lock_pins_every_dependency_pyproject_names_within_its_range():
    project = tomllib.loads((LOCK.parent / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = read_lock(LOCK)
    for requirement in map(Requirement, requirements):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency in pyproject.toml but not in the lock"
        assert requirement.specifier.contains(pins[name]), f"locked {name}=={pins[name]} is outside {requirement}"


def test_a_deliberately_wrong_lock_names_each_package_that_differs(tmp_path):
    # The installed versions (not the lock's: a lock refresh runs this on newer ones), one changed.
    installed = {name: installed_version(name) for name in read_lock(LOCK)}
    wrong = dict({name: version for name, version in installed.items() if version}, pytest="0.0.1")
    wrong_lock = tmp_path / "lock.txt"
    wrong_lock.write_text("# a comment\n" + "".join(f"{n}=={v}\n" for n, v in wrong.items())
                          + "no-such-package-tql==1.0\n")
    differences = lock_differences(read_lock(wrong_lock))
    assert differences == [
        "no-such-package-tql: locked 1.0, not installed",
        f"pytest: locked 0.0.1, installed {pytest.__version__}",
    ]
    with pytest.raises(AssertionError, match=r"(?s)differ from lock.txt.*no-such-package-tql: locked 1.0, not "
                                             r"installed\n  pytest: locked 0.0.1, installed"):
        check_lock(wrong_lock)


def test_a_build_label_is_not_a_difference_but_a_release_is():
    versions = {"torch": "2.13.0+cpu"}
    assert lock_differences({"torch": "2.13.0"}, versions.get) == []
    assert lock_differences({"torch": "2.13.1"}, versions.get) == ["torch: locked 2.13.1, installed 2.13.0+cpu"]


def test_a_line_that_is_not_a_pin_is_refused_with_its_number(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6\nscipy>=1.11\n")
    with pytest.raises(ValueError, match=r"lock.txt:2: 'scipy>=1.11' is not a 'name==version' line"):
        read_lock(lock)
