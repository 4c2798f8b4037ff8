"""The floors of the house (docs/architecture.md): an import never runs up a floor.

Every ``import iharm.X`` / ``from iharm.X import`` in the package is read
with ``ast`` (function-level imports included) and checked against the
floors below, bottom first. Two packages on one floor may not import each
other both ways. Scripts, train.py and the model recipes use the installed
package: no ``sys.path`` edits and no imports of one another.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Bottom first; a module may import its own package, its floor and the floors below.
FLOORS = (
    {"errors", "utils"},
    {"data", "model"},
    {"engine", "inference"},
    {"tools", "api"},
    {"web"},
    {"commands"},
)
RANK = {package: rank for rank, floor in enumerate(FLOORS) for package in floor}


def package_of(module: str) -> str:
    """``iharm.model.duconet`` -> ``model``; the package itself (``iharm``) is the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "iharm"


def iharm_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import of iharm in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "iharm" else [f"iharm.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "iharm" or name.startswith("iharm.")]
    return found


def upward_imports(root: Path) -> list[str]:
    problems, edges = [], set()
    for path in sorted((root / "iharm").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        source = parts[1] if len(parts) > 2 else parts[1].removesuffix("__init__") or "iharm"
        if source == "iharm" or source not in RANK:  # iharm/__init__.py re-exports the public API
            if source != "iharm":
                problems.append(f"{path.relative_to(root)}: package '{source}' is on no floor")
            continue
        for line, module in iharm_imports(path):
            target = package_of(module)
            if target == source:
                continue
            if target not in RANK or RANK[target] > RANK[source]:
                problems.append(f"{path.relative_to(root)}:{line}: {source} imports {module} (a floor up)")
            edges.add((source, target))
    problems += [f"{a} and {b} import each other" for a, b in edges if (b, a) in edges and a < b]
    return problems


def script_problems(root: Path) -> list[str]:
    problems = []
    scripts = {p.stem for p in (root / "scripts").glob("*.py")}
    for path in [*sorted((root / "scripts").glob("*.py")), root / "train.py", *sorted((root / "models").rglob("*.py"))]:
        text = path.read_text()
        if "sys.path" in text:
            problems.append(f"{path.relative_to(root)}: edits sys.path")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module in scripts:
                problems.append(f"{path.relative_to(root)}:{node.lineno}: imports the script {node.module}")
    return problems


def test_no_import_runs_up_a_floor():
    assert upward_imports(REPO) == []


def test_scripts_use_the_installed_package():
    assert script_problems(REPO) == []


def test_the_check_catches_an_upward_import(tmp_path):
    """A model module importing the engine, and a script importing another, are reported."""
    (tmp_path / "iharm" / "model").mkdir(parents=True)
    (tmp_path / "iharm" / "model" / "net.py").write_text("import torch\nfrom iharm.engine.trainer import Trainer\n")
    (tmp_path / "iharm" / "utils").mkdir()
    (tmp_path / "iharm" / "utils" / "x.py").write_text("def f():\n    from iharm import inference\n")
    assert upward_imports(tmp_path) == [
        "iharm/model/net.py:2: model imports iharm.engine.trainer (a floor up)",
        "iharm/utils/x.py:2: utils imports iharm.inference (a floor up)",
    ]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "train.py").write_text("import sys\nsys.path.insert(0, '.')\n")
    (tmp_path / "scripts" / "a.py").write_text("from b import helper\n")
    (tmp_path / "scripts" / "b.py").write_text("helper = 1\n")
    assert script_problems(tmp_path) == ["scripts/a.py:1: imports the script b", "train.py: edits sys.path"]
