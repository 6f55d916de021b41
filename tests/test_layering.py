"""The package's import layering, read from the source with ``ast`` (docs/architecture.md, "What imports what").

- The planner and the torch backend import each other in one direction only: ``tnconv/lower`` and
  ``tnconv/backends`` together have no import cycle, counting every import (deferred ones inside
  functions and ``TYPE_CHECKING`` ones too: a cycle dodged by a deferred import is still a cycle).
- Planning is torch-free: no module under ``tnconv/lower`` imports ``tnconv.backends`` (or torch) at
  module level. The one place that joins planner and backend is ``tnconv.programs.program`` (a
  ``Program`` makes its backend runner), and it is the only planner module that names the backend.
- The backend interprets plans and never reaches back into the program layer (``Program``, its cache,
  ``compile``, the programs of network sums).
- ``tnconv/conv`` never imports ``tnconv.routines`` (the routine table sits above the conv layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tnconv"
PROGRAM_LAYER = ("tnconv.programs.program", "tnconv.programs.compile", "tnconv.programs.cache", "tnconv.programs.sum")
JOIN = "tnconv.programs.program"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: str) -> dict[str, Path]:
    """Module name -> file, for every module under ``tnconv/<folder>``."""
    return {module_name(path): path for path in sorted((PACKAGE / folder).rglob("*.py"))}


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The modules ``path`` imports (``from a import b`` counts ``a.b`` where that is a module, else ``a``).

    ``top_level_only``: only the imports that run when the module is imported (not those inside
    functions, nor those under ``if TYPE_CHECKING:``).
    """
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if top_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if _is_module(submodule) else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _is_module(name: str) -> bool:
    if not name.startswith("tnconv."):
        return False
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _names(imported: set[str], prefix: str) -> set[str]:
    return {name for name in imported if name == prefix or name.startswith(prefix + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> successors) as a list of nodes, first == last; None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle is not None:
                    return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_sees_deferred_and_type_checking_imports() -> None:
    program = modules("lower")[JOIN]
    assert "tnconv.backends.torch.runner" in imports(program)
    assert "tnconv.backends.torch.runner" not in imports(program, top_level_only=True)


def test_planner_and_backend_have_no_import_cycle() -> None:
    files = {**modules("lower"), **modules("backends")}
    graph = {name: {imported for imported in imports(path) if imported in files} for name, path in files.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


@pytest.mark.parametrize("name", sorted(modules("lower")))
def test_planner_imports_no_backend_at_module_level(name: str) -> None:
    path = modules("lower")[name]
    top_level = imports(path, top_level_only=True)
    assert not _names(top_level, "tnconv.backends") and not _names(top_level, "torch"), name
    if name != JOIN:
        assert not _names(imports(path), "tnconv.backends"), f"{name} names the backend; only {JOIN} joins them"


@pytest.mark.parametrize("name", sorted(modules("backends")))
def test_backend_never_imports_the_program_layer(name: str) -> None:
    imported = imports(modules("backends")[name])
    assert not {module for layer in PROGRAM_LAYER for module in _names(imported, layer)}, name


@pytest.mark.parametrize("name", sorted(modules("conv")))
def test_conv_layer_never_imports_the_routine_table(name: str) -> None:
    assert not _names(imports(modules("conv")[name]), "tnconv.routines"), name
