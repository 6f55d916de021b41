"""The package's import layering, read from the source with ``ast`` (docs/architecture.md, "What imports what").

- Subpackages import one way: the graph of imports between the package's parts (each subpackage, such as
  ``tnconv/lower``, and each top-level module, such as ``tnconv/functional.py``) has no cycle, counting
  every import that runs (at module level and inside functions; not those under ``if TYPE_CHECKING:``,
  which only the type checker reads).
- Planning is torch-free: no module under ``tnconv/lower`` imports torch or ``tnconv.backends``, and no
  backend imports the program layer (``tnconv.programs``), which joins them.
- ``tnconv/curvature`` runs programs: it imports no backend and none of the planner's pair modules.
- Every part has a layer (``LAYERS``), and imports only parts of the layers below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tnconv"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(folder: str = "") -> dict[str, Path]:
    """Module name -> file, for every module under ``tnconv/<folder>`` (the whole package for ``""``)."""
    return {module_name(path): path for path in sorted((PACKAGE / folder).rglob("*.py"))}


def imports(path: Path, top_level_only: bool = False, type_checking: bool = True) -> set[str]:
    """The modules ``path`` imports (``from a import b`` counts ``a.b`` where that is a module, else ``a``).

    ``top_level_only``: only the imports that run when the module is imported (not those inside
    functions, nor those under ``if TYPE_CHECKING:``); ``type_checking``: count the imports under
    ``if TYPE_CHECKING:`` (which never run).
    """
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if (top_level_only or not type_checking) and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
            node.test
        ):
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


def part(module: str) -> str | None:
    """The part of the package ``module`` belongs to: ``tnconv.lower`` for ``tnconv.lower.plan``,
    ``tnconv.functional`` for itself; None for the package's own ``__init__`` (its lazy exports sit above all)."""
    pieces = module.split(".")
    return None if len(pieces) < 2 or pieces[0] != "tnconv" else ".".join(pieces[:2])


def part_graph() -> dict[str, set[str]]:
    """Part -> the other parts its modules import (imports that run: not ``TYPE_CHECKING`` ones)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        source = part(name)
        if source is None:
            continue
        targets = {part(imported) for imported in imports(path, type_checking=False)} - {source, None}
        graph.setdefault(source, set()).update(target for target in targets if target is not None)
    return graph


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


def test_imports_sees_deferred_imports_and_tells_type_checking_ones_apart() -> None:
    choice = modules("backends")["tnconv.backends.choice"]
    assert "tnconv.backends.numpy.backend" in imports(choice)  # inside a function
    assert "tnconv.backends.numpy.backend" not in imports(choice, top_level_only=True)
    program = modules("programs")["tnconv.programs.program"]
    assert "tnconv.backends.torch.runner" in imports(program)  # under TYPE_CHECKING
    assert "tnconv.backends.torch.runner" not in imports(program, type_checking=False)


def test_part_graph_sees_a_cycle_between_parts() -> None:
    graph = part_graph()
    assert "tnconv.lower" in graph["tnconv.backends"]  # the graph is read: a backend runs the planner's plans
    assert find_cycle({**graph, "tnconv.ir": graph["tnconv.ir"] | {"tnconv.backends"}}) is not None


def test_the_package_parts_import_one_way() -> None:
    cycle = find_cycle(part_graph())
    assert cycle is None, "import cycle between subpackages: " + " -> ".join(cycle or ())


LAYERS = (
    ("caches", "checks", "limits", "namespace", "render"),
    ("ir", "distributed", "models"),
    ("passes", "lower"),
    ("backends",),
    ("conv", "programs"),
    ("contract", "routines"),
    ("routine_cache",),
    ("functional",),
    ("dropout",),
    ("nn",),
    ("curvature",),
    ("privacy", "integrations"),
    ("cli",),
    ("__main__",),
)
"""The package's parts from the bottom up (docs/architecture.md, "What imports what"): a part imports only parts
of the layers below its own."""


def layer_of() -> dict[str, int]:
    return {f"tnconv.{name}": level for level, names in enumerate(LAYERS) for name in names}


def test_every_part_has_a_layer() -> None:
    """A new subpackage or top-level module takes its place in ``LAYERS`` (and in the docs' picture)."""
    assert sorted(set(part_graph()) - set(layer_of())) == []
    assert sorted(set(layer_of()) - set(part_graph())) == []


def upward(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` (part -> parts it imports) that run up or across ``LAYERS``."""
    level = layer_of()
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if level[target] >= level[source])  # fmt: skip


def test_imports_run_down_the_layers() -> None:
    """No import, at module level or inside a function, runs from a lower layer back up or across one."""
    assert upward(part_graph()) == []


def test_an_upward_import_is_seen() -> None:
    graph = part_graph()
    assert upward({**graph, "tnconv.lower": graph["tnconv.lower"] | {"tnconv.programs"}}) == [
        "tnconv.lower -> tnconv.programs"
    ]
    assert upward({**graph, "tnconv.conv": graph["tnconv.conv"] | {"tnconv.programs"}}) == [
        "tnconv.conv -> tnconv.programs"
    ]


@pytest.mark.parametrize("name", sorted(modules("lower")))
def test_planner_imports_no_torch_and_no_backend(name: str) -> None:
    imported = imports(modules("lower")[name])
    assert not _names(imported, "tnconv.backends") and not _names(imported, "torch"), name
    assert not _names(imported, "tnconv.programs"), name


@pytest.mark.parametrize("name", sorted(modules("backends")))
def test_backend_never_imports_the_program_layer(name: str) -> None:
    assert not _names(imports(modules("backends")[name]), "tnconv.programs"), name


@pytest.mark.parametrize("name", sorted(modules("curvature")))
def test_curvature_runs_programs_and_names_no_backend(name: str) -> None:
    imported = imports(modules("curvature")[name])
    assert not _names(imported, "tnconv.backends"), name
    assert not {module for pair in ("pair_gram", "pair_choice") for module in _names(imported, f"tnconv.lower.{pair}")}


@pytest.mark.parametrize("name", sorted(modules("conv")))
def test_conv_layer_never_imports_the_routine_table(name: str) -> None:
    assert not _names(imports(modules("conv")[name]), "tnconv.routines"), name
