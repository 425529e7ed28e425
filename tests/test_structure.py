"""The package's shape: no import cycles between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mlm_adapt"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """mlm_adapt modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlm_adapt."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "mlm_adapt":
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mlm_adapt.")}
    return found - {path.stem}


def test_the_import_graph_has_no_cycle():
    modules = {p.stem for p in SRC.glob("*.py")}
    graph = {p.stem: _imports(p, modules) for p in SRC.glob("*.py")}
    assert graph["chunking"] and graph["training"]  # the scan sees imports at all
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module not in done:
            for dependency in sorted(graph.get(module, ())):
                visit(dependency, path + [module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])
