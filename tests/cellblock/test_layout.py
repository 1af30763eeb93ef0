"""The house rules of the package layout (issue 12): no import circles, layers point down.

The import graph is read from the source (every ``import`` statement, including the
ones inside functions; ``if TYPE_CHECKING:`` blocks excluded), so a late import that
hides a circle at run time is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Source folder -> package it is installed as (pyproject's package-dir).
FOLDERS = {
    "cellblock": "cellblock",
    "search_spaces": "cellblock.search_spaces",
    "strategies": "cellblock.strategies",
    "supernet": "cellblock.supernet",
    "evaluators": "cellblock.evaluators",
}
#: Each unit may import only the units listed (and itself); ``cellblock`` is the root API.
LAYERS: dict[str, set[str]] = {
    "cellblock.core": set(),
    "cellblock.data": {"cellblock.core"},
    "cellblock.records": {"cellblock.core"},
    "cellblock.search_spaces": {"cellblock.core"},
    "cellblock.pareto": {"cellblock.core", "cellblock.records"},
    "cellblock.evaluators": {"cellblock.core", "cellblock.data", "cellblock.records",
                             "cellblock.search_spaces"},
    "cellblock.strategies": {"cellblock.core", "cellblock.records", "cellblock.pareto",
                             "cellblock.search_spaces"},
    "cellblock.supernet": {"cellblock.core", "cellblock.data", "cellblock.records",
                           "cellblock.search_spaces", "cellblock.evaluators"},
    "cellblock.run": {"cellblock.core", "cellblock.data", "cellblock.records", "cellblock.pareto",
                      "cellblock.search_spaces", "cellblock.evaluators", "cellblock.strategies",
                      "cellblock.supernet"},
    "cellblock.export": {"cellblock.core", "cellblock.data", "cellblock.records",
                         "cellblock.pareto", "cellblock.search_spaces", "cellblock.evaluators",
                         "cellblock.strategies", "cellblock.supernet", "cellblock.run"},
}
LAYERS["cellblock.cli"] = set(LAYERS) | {"cellblock.export"}
LAYERS["cellblock"] = {"cellblock.core", "cellblock.run", "cellblock.pareto", "cellblock.cli"}


def modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


PACKAGES = {m for m, p in modules().items() if p.name == "__init__.py"}


def _skip_type_checking(tree: ast.AST) -> list[ast.AST]:
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> dict[str, set[str]]:
    """Module -> the cellblock modules it imports."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _skip_type_checking(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name if is_pkg else name.rsplit(".", 1)[0]
                    pkg = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1])
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def unit_of(module: str) -> str:
    """The layer a module belongs to (``cellblock.run.backends.base`` -> ``cellblock.run``)."""
    parts = module.split(".")
    head = ".".join(parts[:2])
    return head if head in PACKAGES else parts[0]


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_circles_between_packages():
    units: dict[str, set[str]] = {}
    for mod, deps in import_graph().items():
        units.setdefault(unit_of(mod),
                         set()).update(unit_of(d) for d in deps if unit_of(d) != unit_of(mod))
    assert cycles(units) == []


def test_every_unit_imports_only_the_layers_below_it():
    bad = []
    for mod, deps in import_graph().items():
        unit = unit_of(mod)
        assert unit in LAYERS, (f"{mod}: new package {unit!r}; add it to LAYERS with what it may "
                                "import")
        bad += [f"{mod} -> {d}" for d in sorted(deps)
                if unit_of(d) != unit and unit_of(d) not in LAYERS[unit]]
    assert bad == []


@pytest.mark.parametrize("package", sorted({unit_of(m) for m in modules()} - {"cellblock"}))
def test_each_package_says_what_it_owns(package):
    init = modules()[package]
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, (
        f"{init} needs a docstring: what it owns, what it may import")


def test_only_the_cli_imports_argparse():
    users = sorted(m for m, p in modules().items()
                   if not m.startswith("cellblock.cli")
                   and any(isinstance(n, (ast.Import, ast.ImportFrom))
                           and "argparse" in [
                               a.name for a in n.names] + [getattr(n, "module", None)]
                           for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))))
    assert users == []
