"""The package's shape: no import cycles, data flows one way through the layers, short functions,
no C++ inside Python strings, and importing bioxlstm changes nothing outside it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bioxlstm"

# lowest first: a module may import from its own level or below, never from above
LEVELS = [
    ("errors", "version", "io", "extras", "cpuinfo", "allocator", "devices", "metrics", "molecule_cache",
     "model_card", "templates", "datasets"),
    ("alphabets", "smiles", "vocabulary", "config", "strands", "pooling"),
    ("data",),
    ("layers",),
    ("sampling", "generation", "checkpoint", "model", "rc", "baselines", "heads", "lora", "classifier"),
    ("distributed", "train_state", "run_dir", "train", "molecule_metrics"),
    ("tasks", "convert"),
    ("cli", "__main__"),
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `path` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in modules else node.module)
    return {m for m in found if m in modules}


def _level(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself only re-exports the public API
    for level, names in enumerate(LEVELS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{module} has no level in LEVELS; add it where it belongs")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_no_module_imports_a_higher_layer(graph):
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets
              if _level(m) is not None and _level(t) is not None and _level(t) > _level(m)]
    assert upward == []


def test_the_import_graph_has_no_cycles(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_no_cpp_source_sits_in_a_python_string():
    markers = ("#include", "PYBIND11_MODULE", "TORCH_LIBRARY", "at::Tensor")
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    any(marker in node.value for marker in markers):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_importing_bioxlstm_installs_no_global_hooks():
    code = ("import torch.nn.modules.module as m\n"
            "before = [len(getattr(m, n)) for n in dir(m) if n.startswith('_global_') and "
            "isinstance(getattr(m, n), dict)]\n"
            "import bioxlstm, bioxlstm.cli, bioxlstm.tasks.generate\n"
            "after = [len(getattr(m, n)) for n in dir(m) if n.startswith('_global_') and "
            "isinstance(getattr(m, n), dict)]\n"
            "print(before == after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
