"""The whole agent of another git revision, importable beside today's in one process.

``update_speed.py --baseline-rev REV`` measures today's update against REV's in the same
process and the same interleaved rounds: ``tql/`` of REV is extracted with ``git archive``
and its absolute imports (``from tql.x import y``) are renamed to a package of its own
(``tql_at_<rev>``), so the two versions never mix. One process rather than a worker: two
processes on the same cores would each spin-wait in OpenMP while the other computes, and
both would measure slow.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
_IMPORT = re.compile(r"\b(from|import)\s+tql(?=[.\s])")


def load_package_at(rev: str) -> ModuleType:
    """``tql`` as it was at ``rev``, imported as ``tql_at_<rev>`` (its modules load lazily,
    e.g. ``importlib.import_module(package.__name__ + '.agent')``)."""
    name = "tql_at_" + re.sub(r"\W", "_", rev)
    if name in sys.modules:
        return sys.modules[name]
    folder = Path(tempfile.mkdtemp(prefix="tql-rev-"))
    archive = subprocess.run(["git", "archive", rev, "tql"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "tql").rename(folder / name)
    for path in (folder / name).rglob("*.py"):
        path.write_text(_IMPORT.sub(lambda m: f"{m.group(1)} {name}", path.read_text()))
    # Imported from its folder by location (sys.path untouched); its submodules then load
    # through the package's own __path__.
    spec = importlib.util.spec_from_file_location(name, folder / name / "__init__.py",
                                                  submodule_search_locations=[str(folder / name)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package


def agent_at(rev: str, obs_dim: int, act_dim: int, options: dict, device: str):
    """A ``TQLAgent`` of ``rev`` built from ``AgentConfig(**options)`` of ``rev`` (options it
    does not know are refused by its own check)."""
    import torch

    agent_module = importlib.import_module(load_package_at(rev).__name__ + ".agent")
    torch.manual_seed(0)
    return agent_module.TQLAgent(obs_dim, act_dim, agent_module.AgentConfig(**options), device)
