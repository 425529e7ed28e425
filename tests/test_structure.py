"""The package's shape: no import cycles between its modules, and what the training
step needs to import."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_the_training_step_runs_without_datasets():
    # benchmarks/gpu_throughput.py runs on GPU machines that have torch, transformers and
    # accelerate but not `datasets` (the device tool's), straight from a checkout.
    code = ("import sys; sys.modules['datasets'] = None\n"
            "import mlm_adapt.optimizer_step, mlm_adapt.batching, mlm_adapt.chunking, mlm_adapt.models\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
