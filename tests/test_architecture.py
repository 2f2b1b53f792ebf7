"""The package's shape: dependencies run one way (CLI -> train -> tasks -> model core)
and no module imports itself back through others (no import cycles, lazy imports
inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "elm_jax"

# layer of a module: the CLI on top, then the trainer, the tasks, and the model core
LAYERS = {"cli": 3, "train": 2, "tasks": 1}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest elm_jax module that `name` (a dotted path) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the elm_jax modules it imports (module level and inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import sub` imports the submodule when there is one
                bases = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for base in bases:
                if base.split(".")[0] == "elm_jax":
                    target = _resolve(base, modules)
                    if target and target != name:
                        targets.add(target)
        graph[name] = targets
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_sees_the_package():
    graph = import_graph()
    assert "elm_jax.core" in graph and "elm_jax.tasks.neuronio.task" in graph
    assert "elm_jax.core" in graph["elm_jax.apply"]
    assert "elm_jax.tasks.run_config" in graph["elm_jax.train.trainer"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_dependencies_run_one_way():
    # the model core never imports tasks/train/cli, tasks never import train/cli, ...
    wrong = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
             for src, dsts in import_graph().items() for dst in dsts
             if layer(dst) > layer(src) and dst != "elm_jax"]
    assert not wrong, "\n".join(wrong)


def test_checker_catches_a_cycle_and_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("elm_jax.core") < layer("elm_jax.tasks.neuronio.task") < layer(
        "elm_jax.train.trainer") < layer("elm_jax.cli")


@pytest.mark.parametrize("folder", ["data", "evaluation", "bench"])
def test_task_family_code_lives_in_its_package(folder):
    # NeuronIO's formats, readers, evaluation and the benchmarks used to live here
    assert not (ROOT / folder).exists(), f"elm_jax/{folder}/ should not exist any more"
