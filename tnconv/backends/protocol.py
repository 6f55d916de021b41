"""What a backend is (``Backend``), what its runner reads of a program (``Owner``), and what a runner does.

A plan (``tnconv.lower.nodes``) is plain data; a backend runs it on arrays of
its own kind. ``tnconv.programs.program.Program`` plans a network for a
backend's ``target`` (its capabilities and fitted speeds,
``tnconv.lower.target``) and calls the ``runner`` the backend makes of that
plan. Backends never import the program layer: a runner sees its program
through ``Owner``.
"""

from __future__ import annotations

import weakref

from typing import Any, Protocol, Sequence

from tnconv.ir.sizes import Size
from tnconv.ir.tensors import Kind
from tnconv.lower.nodes import Executor, Plan
from tnconv.lower.target import Target


class Owner(Protocol):
    """What a runner reads of the program that owns it (``tnconv.programs.program.Program``).

    ``einsum_plan`` is the einsum path's plan, asked for only where the runner does not run
    its plan's native kernel (planned on first use); ``account_constants`` is told when the
    runner built constants for a new dtype or device (the program cache counts their bytes).
    """

    equation: str
    operands: tuple[str, ...]
    expected_shapes: tuple[tuple[Size, ...], ...]
    axis_labels: dict[str, tuple[str, ...]]
    result_elements: Size

    @property
    def einsum_plan(self) -> Executor: ...

    def account_constants(self) -> None: ...


class Bound:
    """What a runner reads of its program once, when it is made (the base of the backends' runners).

    ``_program``: the program, weakly (it holds its runner: no cycle); ``_names``, ``_expected``, ``_labels``:
    its operands' names, shapes and axis labels (the call's checks); ``_equation`` and ``_result``: its
    equation and result elements (the allocation limit's check and message).
    """

    def __init__(self, program: Owner) -> None:
        self._program = weakref.ref(program)
        self._names = program.operands
        self._expected = program.expected_shapes
        self._labels = program.axis_labels
        self._equation = program.equation
        self._result = int(program.result_elements)


class Runner(Protocol):
    """A concrete program's plan made callable by a backend: ``runner(args, kwargs)`` is ``program(*args,
    **kwargs)`` on that backend's arrays (checked: types, shapes, one dtype and device; the allocation limit,
    ``tnconv.limits``)."""

    @property
    def array_type(self) -> type:
        """The arrays it takes and returns (``torch.Tensor``, ``numpy.ndarray``)."""
        ...

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def run_einsum_plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The einsum plan on the checked operands, even where a native kernel would run them."""
        ...

    @property
    def constant_bytes(self) -> int:
        """Bytes of the structured constants it holds."""
        ...

    def release_constants(self) -> None:
        """Drop the structured constants (rebuilt on the next call)."""
        ...


class Backend(Protocol):
    """A backend: ``target`` (what the planner plans for), ``runner(owner, plan)``, the callable of a concrete
    program's plan made for that target, and ``dense``, a structured tensor built as one of its arrays."""

    @property
    def target(self) -> Target: ...

    def runner(self, owner: Owner, plan: Plan) -> Runner: ...

    def dense(self, kind: Kind, shape: Sequence[int], dtype: Any, device: Any) -> Any:
        """The structured tensor ``kind`` (an index pattern, a pattern sum, ...) with ``shape`` as a dense array
        of ``dtype`` (the backend's dtype; None: its default) on ``device`` (None: the CPU)."""
        ...
