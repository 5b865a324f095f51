"""The code's shape, checked from its imports (every import, a function's lazy ones too):
no import circle, ``tql`` never imports ``autotune``, typer and rich's console only in the CLI
modules, and no private name (``_x``) imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tql", "autotune")
CLI_PACKAGE = "autotune.cli"  # autotune/cli/: the only modules that know typer
UI_MODULES = ("typer", "rich.console")


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file of every module of ``packages`` under ``root`` (a package is its __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every absolute import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``known`` it imports (``from p import m`` counts m when m is a module)."""
    graph = {}
    for name, path in known.items():
        targets = set()
        for module, imported in imports(path):
            if imported and f"{module}.{imported}" in known:
                targets.add(f"{module}.{imported}")
            elif module in known:
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every broken rule, one line each."""
    known = modules(root, packages)
    found = [f"import circle: {' <-> '.join(component)}" for component in cycles(import_graph(known))]
    for name, path in known.items():
        for module, imported in imports(path):
            if name.split(".")[0] == "tql" and module.split(".")[0] == "autotune":
                found.append(f"{name} imports {module}: tql must not know autotune")
            target = f"{module}.{imported}" if imported else module
            in_cli = name == CLI_PACKAGE or name.startswith(CLI_PACKAGE + ".")
            if not in_cli and any(target == ui or target.startswith(ui + ".") for ui in UI_MODULES):
                found.append(f"{name} imports {target}: only the CLI package ({CLI_PACKAGE}) talks to the terminal")
            private = imported and imported.startswith("_") and not imported.startswith("__")
            if private and module in known and module != name:
                found.append(f"{name} imports the private name {imported} from {module}")
    return found


def test_the_code_keeps_its_shape():
    assert violations(ROOT) == []


def _package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_circle_even_through_a_lazy_import_is_found(tmp_path):
    root = _package(tmp_path, {
        "tql/__init__.py": "",
        "tql/a.py": "from tql.b import x\n",
        "tql/b.py": "def f():\n    from tql import c\n",
        "tql/c.py": "import tql.a\n",
        "tql/d.py": "from tql.a import y\n",  # imports into the circle, is not part of it
    })
    assert violations(root, ("tql",)) == ["import circle: tql.a <-> tql.b <-> tql.c"]


def test_each_rule_names_the_module_that_breaks_it(tmp_path):
    root = _package(tmp_path, {
        "tql/__init__.py": "",
        "tql/loop.py": "from autotune.studies import RunPlan\n",
        "autotune/__init__.py": "",
        "autotune/studies.py": "import typer\nfrom autotune.report import _plot\n",
        "autotune/report.py": "def f():\n    from rich.console import Console\n",
        "autotune/cli/__init__.py": "import typer\n",
        "autotune/cli/x.py": "from rich.console import Console\n",
        "autotune/cli_lookalike.py": "import typer\n",  # beside the CLI package, not in it
    })
    assert sorted(violations(root)) == [
        "autotune.cli_lookalike imports typer: only the CLI package (autotune.cli) talks to the terminal",
        "autotune.report imports rich.console.Console: only the CLI package (autotune.cli) talks to the terminal",
        "autotune.studies imports the private name _plot from autotune.report",
        "autotune.studies imports typer: only the CLI package (autotune.cli) talks to the terminal",
        "tql.loop imports autotune.studies: tql must not know autotune",
    ]


def test_every_package_says_what_it_holds_and_may_import():
    """Each folder of modules is a package whose docstring names its modules' roles, what it
    may import and its public names (setuptools' find_packages also needs the __init__)."""
    for package in PACKAGES:
        for folder in [ROOT / package, *(p for p in (ROOT / package).rglob("*") if p.is_dir())]:
            if not list(folder.glob("*.py")):
                continue  # __pycache__ and data folders
            init = folder / "__init__.py"
            assert init.exists(), f"{folder.relative_to(ROOT)} has modules but no __init__.py"
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert "May import" in doc and "Public names" in doc, \
                f"{init.relative_to(ROOT)}: its docstring must say what it may import and its public names"


def test_module_names_are_unique_where_they_mean_different_things():
    """One file name, one meaning: ``trials.py`` in two packages (a study's trials, a batch of
    runs) made every import and traceback ambiguous."""
    names: dict[str, list[str]] = {}
    for dotted, path in modules(ROOT, PACKAGES).items():
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.name, []).append(dotted)
    assert {name: found for name, found in names.items() if len(found) > 1} == {}


BENCHMARKS = "benchmarks"
BENCH_HELPER = "benchmarks.common"


def _other_modules(tree: ast.AST) -> set[str]:
    """Local names bound to modules outside the product (``import torch``, ``import numpy as np``)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update(alias.asname or alias.name.split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] not in PACKAGES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] not in PACKAGES:
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def _product_bindings(tree: ast.AST) -> set[str]:
    """Local names bound to product modules: ``import tql.x as m``, ``from autotune import api``."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def benchmark_violations(root: Path) -> list[str]:
    """The rules that keep ``benchmarks/`` one body of scripts over the product's public face:
    run with ``python -m`` (no ``sys.path`` edits, other scripts imported by full name), JSON
    and ``--json`` only through the shared helper (so every result starts with its header),
    no private product name; and the product never imports a benchmark."""
    found = []
    scripts = modules(root, (BENCHMARKS,))
    siblings = {name.rsplit(".", 1)[-1] for name in scripts}
    for name, path in modules(root, PACKAGES).items():
        found += [f"{name} imports {module}: the product must not know its benchmarks"
                  for module, _ in imports(path) if module.split(".")[0] == BENCHMARKS]
    for name, path in scripts.items():
        tree = ast.parse(path.read_text(), str(path))
        product, others = _product_bindings(tree), _other_modules(tree)
        for module, imported in imports(path):
            if module.split(".")[0] in siblings and module.split(".")[0] != BENCHMARKS:
                found.append(f"{name} imports {module} by its file name: use benchmarks.<folder>.{module}")
            private = imported and imported.startswith("_") and not imported.startswith("__")
            if private and module.split(".")[0] in PACKAGES:
                found.append(f"{name} imports the private name {imported} from {module}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                text = ast.unparse(node)
                if text.startswith("sys.path"):
                    found.append(f"{name} edits sys.path: run it with python -m from the repository root")
                elif (isinstance(node.value, ast.Name) and node.value.id in product
                      and node.attr.startswith("_") and not node.attr.startswith("__")):
                    found.append(f"{name} reads the private name {text} of the product")
                elif (isinstance(node.value, ast.Name) and node.value.id not in others | {"self", "cls"}
                      and node.attr.startswith("_") and not node.attr.startswith("__")):
                    found.append(f"{name} reaches into {text}: use the object's public face")
            if name == BENCH_HELPER or not isinstance(node, ast.Call):
                continue
            call = ast.unparse(node.func)
            if call == "json.dump" or (call.endswith("write_text") and "json.dumps" in ast.unparse(node)):
                found.append(f"{name} writes JSON itself: use {BENCH_HELPER}.write_json (header, atomic)")
            if call.endswith("add_argument") and any(isinstance(a, ast.Constant) and a.value == "--json"
                                                     for a in node.args):
                found.append(f"{name} declares --json itself: use {BENCH_HELPER}.add_json_option")
    return sorted(set(found))


def test_the_benchmarks_keep_their_rules():
    assert benchmark_violations(ROOT) == []


def test_each_benchmark_rule_names_the_script_that_breaks_it(tmp_path):
    root = _package(tmp_path, {
        "tql/__init__.py": "def _hidden():\n    pass\n",
        "tql/agent.py": "from benchmarks.speed import timing\n",
        "benchmarks/common.py": "import json\ndef write_json(p, r):\n    json.dump(r, open(p, 'w'))\n",
        "benchmarks/speed/timing.py": "import sys\nsys.path.insert(0, '.')\nfrom profile_tools import x\n",
        "benchmarks/speed/profile_tools.py": "import json\nfrom pathlib import Path\n"
                                             "def f(p, r):\n    Path(p).write_text(json.dumps(r))\n",
        "benchmarks/learning/run.py": "import argparse\nfrom tql import _hidden\nimport tql.agent as agent\n"
                                      "p = argparse.ArgumentParser()\np.add_argument('--json')\n"
                                      "agent._update()\nfrom benchmarks.speed.timing import y\n"
                                      "import torch\ntorch._dynamo.reset()\ndef f(a):\n    a._lr_step += 1\n",
    })
    assert benchmark_violations(root) == [
        "benchmarks.learning.run declares --json itself: use benchmarks.common.add_json_option",
        "benchmarks.learning.run imports the private name _hidden from tql",
        "benchmarks.learning.run reaches into a._lr_step: use the object's public face",
        "benchmarks.learning.run reads the private name agent._update of the product",
        "benchmarks.speed.profile_tools writes JSON itself: use benchmarks.common.write_json (header, atomic)",
        "benchmarks.speed.timing edits sys.path: run it with python -m from the repository root",
        "benchmarks.speed.timing imports profile_tools by its file name: use benchmarks.<folder>.profile_tools",
        "tql.agent imports benchmarks.speed: the product must not know its benchmarks",
    ]
