"""The stages of docs/ARCHITECTURE.md, enforced on the folders: a module imports only from its own stage or the ones
below it, no two modules import each other (directly or around a loop, imports inside functions included), and the
theory (bounds/) imports neither torch nor ntkcheck."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntkcheck"
# The stages from the bottom up: the data flow config → build → instruments → engine → theory → report, as a floor plan.
STAGES = ["config", "resources", "results", "problems", "models", "build", "instruments", "engine", "theory", "report",
          "apps", "cli", "__init__"]
RANK = {stage: rank for rank, stage in enumerate(STAGES)}
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def stage(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every ntkcheck module ``path`` imports (``from ntkcheck.a import b`` names ntkcheck.a.b when that is a module)."""
    known = {module_name(p) for p in MODULES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("ntkcheck"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ntkcheck.")}
    return found


def test_every_folder_is_a_stage():
    assert {stage(module_name(p)) for p in MODULES} == set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_stages_only(path):
    here = stage(module_name(path))
    for module in imported_modules(path):
        if module == "ntkcheck":
            continue  # the package's own lazy API (only cli and the package itself use it)
        there = stage(module)
        assert RANK[there] <= RANK[here], f"{here} (floor {RANK[here]}) imports {module} (floor {RANK[there]})"


def test_no_import_cycles():
    """Within a stage modules may import each other, but never around a loop."""
    graph = {module_name(p): {m for m in imported_modules(p) if m != "ntkcheck"} for p in MODULES}
    graph = {m: {d for d in deps if d in graph and d != m and not m.startswith(d + ".")} for m, deps in graph.items()}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " → ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(graph[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("path", sorted((ROOT / "bounds").rglob("*.py")), ids=lambda p: p.name)
def test_the_theory_imports_neither_torch_nor_ntkcheck(path):
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "ntkcheck"}, names


def test_the_command_line_is_short_and_renders_no_table():
    """Issue 21: cli.py parses options, calls one library function and prints; tables and progress displays live in
    report/, the rules in apps/."""
    source = (PACKAGE / "cli.py").read_text()
    assert len(source.splitlines()) <= 250
    tree = ast.parse(source)
    tables = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
              and n.name.endswith("_table")]
    assert not tables, tables
    rich = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    rich |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not rich & {"rich.table", "rich.progress", "rich.box"}, rich


# Issue 21: report/ renders and computes nothing. Its modules take no function from the stages that compute (build/,
# instruments/, engine/, theory) nor from bounds/; what they may take, and why:
REPORT_MAY_IMPORT = {
    ("ntkcheck.theory", "PREDICTION_RTOL"): "a constant: the tolerance of a prediction's verdict, named in report.md",
    ("bounds.local", "lambda_max_of_e"): "the closed form λ_max(K_0(e)) = e^{2(L−1)}·λ_max(K_0(1)) along which a run's "
                                         "e–η figure draws its one measured λ_max, so that the scaling is not "
                                         "written again in the figure",
}
COMPUTING_STAGES = {"build", "instruments", "engine", "theory"}


def imported_names(path: Path) -> set[tuple[str, str | None]]:
    """(module, name) of every import in ``path`` (name None for ``import module``), ``from ntkcheck import x`` as
    (ntkcheck.x, None)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {(f"ntkcheck.{a.name}", None) if node.module == "ntkcheck" else (node.module, a.name)
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names}
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "report").glob("*.py")), ids=lambda p: p.name)
def test_the_report_imports_no_computation(path):
    for module, name in imported_names(path):
        computing = (module.startswith("ntkcheck.") and stage(module) in COMPUTING_STAGES
                     or module.split(".")[0] == "bounds")
        assert not computing or (module, name) in REPORT_MAY_IMPORT, f"{path.name} imports {name} from {module}"
