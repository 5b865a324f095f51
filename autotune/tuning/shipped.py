"""The study and experiment specs that ship with tql-tune, found by name or by path.

``--spec NAME`` names a built-in spec (``default``, ``gained``, ``experiment``, ...: the
``studies/*.toml`` of the repository), ``--spec PATH`` a file. The built-ins are package data
(``autotune.studies``, mapped from the repository's ``studies/`` folder in ``pyproject.toml``),
read with ``importlib.resources``, so an installed tql-tune has them in any folder. An
editable install (``pip install -e .``) maps the package to the checkout's ``studies/``; where
a setuptools too old for that leaves it unmapped, that folder is read directly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tql.errors import ConfigError

PACKAGE = "autotune.studies"
DEFAULT_EXPERIMENT = "experiment"  # tql-tune experiment's spec when none is named
CHECKOUT = Path(__file__).resolve().parents[2] / "studies"


def shipped_dir() -> Path:
    """The folder of the built-in specs: the installed package data, or the checkout's studies/."""
    try:
        folder = resources.files(PACKAGE)
    except ModuleNotFoundError:  # an editable install: the package data is the checkout's folder
        return CHECKOUT
    return Path(str(folder / "default.toml")).parent


def shipped_names() -> list[str]:
    """The built-in specs' names, sorted (file names without ``.toml``)."""
    return sorted(p.stem for p in shipped_dir().glob("*.toml"))


def find_spec_file(value: str | Path, what: str, folder: Path | None = None) -> Path:
    """The spec file ``value`` names: a path to a file (relative to ``folder`` when given and the
    file is there), else a built-in by name (``gained`` or ``gained.toml``); one ConfigError line
    naming the value and the built-ins when it is neither."""
    path = Path(value)
    for candidate in ([folder / path] if folder is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_file():
            return candidate
    name = path.name[:-len(".toml")] if path.name.endswith(".toml") else path.name
    if path.parent == Path(".") or path.parent == Path("studies"):  # a bare name, or a checkout's studies/X.toml
        shipped = shipped_dir() / f"{name}.toml"
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{what} {str(value)!r} is neither a file nor a built-in spec; "
                      f"built-in: {', '.join(shipped_names())}")
