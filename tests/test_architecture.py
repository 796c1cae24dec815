"""The layers of docs/ARCHITECTURE.md, enforced: a module imports only from its own layer or the ones below, and
the theory (bounds/) imports neither torch nor ntkcheck."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "model": ["config", "io", "problems", "init", "angular", "model", "resources", "paper_draw"],
    "instruments": ["linalg", "ntk", "structured", "features", "dynamics", "probes", "diagnostics"],
    "runs": ["experiment", "runfolder", "training", "compare", "report", "verification", "ntk_report"],
    "applications": ["baselines", "sweeps", "reproduce", "cli", "__init__"],
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def imported_modules(path: Path, package: str) -> set[str]:
    """First component after ``package.`` of every import of the package in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == package:
                found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")}
            found |= {package for a in node.names if a.name == package}
    return found


def top_module(path: Path) -> str:
    rel = path.relative_to(ROOT / "ntkcheck")
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_has_a_layer():
    modules = {top_module(p) for p in (ROOT / "ntkcheck").rglob("*.py")}
    assert modules == set(RANK), modules ^ set(RANK)


@pytest.mark.parametrize("path", sorted((ROOT / "ntkcheck").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers_only(path):
    here = top_module(path)
    for module in imported_modules(path, "ntkcheck"):
        assert RANK[module] <= RANK[here], f"{here} ({RANK[here]}) imports {module} ({RANK[module]})"


@pytest.mark.parametrize("path", sorted((ROOT / "bounds").rglob("*.py")), ids=lambda p: p.name)
def test_the_theory_imports_neither_torch_nor_ntkcheck(path):
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "ntkcheck"}, names
