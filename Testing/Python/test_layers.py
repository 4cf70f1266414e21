"""The house rules of the core, read from the source: one-way layers, no import cycles, small modules.

Every ``import lvt...`` in the core counts, also the lazy ones inside functions: a lazy import still
ties two modules together, it only hides the knot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

CORE = REPO / "LVTSegmentation" / "lvt"
VOCABULARY = frozenset({"labels", "image", "errors", "progress", "atomic", "grid", "heap"})
# Low to high. A module imports only from lower layers or from its own package.
LAYERS = {"vocabulary": 0, "io": 1, "phantom": 1, "measure": 2, "segment": 3, "evaluate": 4, "followup": 5,
          "train": 5, "cli": 6, "__main__": 7}
MAX_MODULE_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _core_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every lvt module this file imports, at any depth of the file (lazy imports too)."""
    names: set[str] = set()
    modules = _core_modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("lvt."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lvt":
            for alias in node.names:  # `from lvt.evaluate import metrics` imports the module lvt.evaluate.metrics
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if candidate in modules else node.module)
    return names - {"lvt"}


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "vocabulary"
    return "vocabulary" if parts[1] in VOCABULARY else parts[1]


def test_layers_only_import_downwards() -> None:
    wrong = []
    for module, path in _core_modules().items():
        own = _package(module)
        for imported in _imports(path):
            other = _package(imported)
            if other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{module} ({own}) imports {imported} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    modules = _core_modules()
    graph = {name: {imp for imp in _imports(path) if imp in modules and imp != name} for name, path in modules.items()}
    # A package __init__ that re-exports its modules is not a cycle with them.
    for name in graph:
        graph[name] = {imp for imp in graph[name] if not name.startswith(imp + ".")}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(CORE)} has {lines} lines"
