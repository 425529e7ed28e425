"""The package's shape: no import cycles between its modules, and what the training
step needs to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mlm_adapt"

# The pipeline's stages, lowest first: a module may import its own stage and the ones
# before it, never a later one (each package's docstring says what it owns).
STAGES = ["foundation", "system", "data", "speed", "modeling", "evaluation", "outputs", "training", "recipes", "comparison", "top"]
_FOUNDATION = {"errors", "config", "flat_options"}
_TOP = {"cli", "demo", "__init__", "__main__"}


def _name(path: Path) -> str:
    """``data.chunking`` for src/mlm_adapt/data/chunking.py; ``speed`` for speed/__init__.py."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _stage(module: str) -> str:
    head = module.split(".")[0]
    if head in _FOUNDATION:
        return "foundation"
    return "top" if head in _TOP else head


def _imports(path: Path, modules: set[str]) -> set[str]:
    """mlm_adapt modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlm_adapt"):
            base = node.module.removeprefix("mlm_adapt").lstrip(".")
            for alias in node.names:  # `from mlm_adapt.data import chunking` names a module
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mlm_adapt.") for a in node.names if a.name.startswith("mlm_adapt.")}
    return found - {_name(path), ""}


def _graph() -> dict[str, set[str]]:
    paths = list(SRC.rglob("*.py"))
    modules = {_name(p) for p in paths}
    return {_name(p): _imports(p, modules) for p in paths}


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert graph["data.chunking"] and graph["training.loop"]  # the scan sees imports at all
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


def test_a_lower_stage_never_imports_a_higher_one():
    graph = _graph()
    assert {_stage(m) for m in graph} == set(STAGES)  # every module sits in a known stage
    upward = [f"{module} ({_stage(module)}) imports {dep} ({_stage(dep)})"
              for module, deps in sorted(graph.items()) for dep in sorted(deps)
              if STAGES.index(_stage(dep)) > STAGES.index(_stage(module))]
    assert not upward, "\n".join(upward)


def test_every_stage_package_says_what_it_owns_and_may_import():
    for stage in STAGES[1:-1]:
        doc = ast.get_docstring(ast.parse((SRC / stage / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{stage}/__init__.py needs a docstring naming what it owns and may import"


def test_the_training_step_runs_without_datasets():
    # benchmarks/gpu_throughput.py runs on GPU machines that have torch, transformers and
    # accelerate but not `datasets` (the device tool's), straight from a checkout.
    code = ("import sys; sys.modules['datasets'] = None\n"
            "import mlm_adapt.training.optimizer_step, mlm_adapt.data.batching, mlm_adapt.data.chunking, mlm_adapt.modeling.objective\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
