"""Binding operands to a network: names, shapes, dtypes and devices, with clear errors.

Every check here runs on each call of a program, so the common path is a few
tuple comparisons; the detailed messages are only built on a mismatch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import sympy
import torch

from tnconv.ir.network import Network
from tnconv.ir.sizes import Size, substitute
from tnconv.ir.views import Flatten, Pad, Slice, Squeeze, Unflatten, Windows, source_shape


def operand_shapes(net: Network) -> dict[str, tuple[Size, ...]]:
    """The shape each data operand must have (from its first occurrence's legs and views)."""
    shapes: dict[str, tuple[Size, ...]] = {}
    for entry in net.entries:
        if not entry.structured and entry.name not in shapes:
            shapes[entry.name] = source_shape(entry.kind.views, [net.size(leg) for leg in entry.legs])
    return shapes


def axis_labels(net: Network) -> dict[str, tuple[str, ...]]:
    """For each operand, what each axis is in terms of legs (``'c'``, ``'(g*ci)'``, ``'i[::2]'``)."""
    labels: dict[str, tuple[str, ...]] = {}
    for entry in net.entries:
        if entry.structured or entry.name in labels:
            continue
        current = list(entry.legs)
        for view in reversed(entry.kind.views):
            if isinstance(view, Unflatten):
                end = view.axis + len(view.sizes)
                current[view.axis : end] = ["(" + "*".join(current[view.axis : end]) + ")"]
            elif isinstance(view, Slice):
                current[view.axis] = f"{current[view.axis]}[{view.start}::{view.step}]"
            elif isinstance(view, Squeeze):
                current.insert(view.axis, "1")
            elif isinstance(view, Flatten):
                merged = current[view.axis]
                current[view.axis : view.axis + 1] = [f"{merged}.{n}" for n in range(len(view.sizes))]
            elif isinstance(view, Pad):
                current[view.axis] = f"{current[view.axis]}[pad {view.left},{view.right}]"
            elif isinstance(view, Windows):
                current[view.axis : view.axis + 2] = [f"({current[view.axis]}~{current[view.axis + 1]})"]
        labels[entry.name] = tuple(current)
    return labels


def collect(names: Sequence[str], args: Sequence[object], kwargs: Mapping[str, object]) -> list[torch.Tensor]:
    """Order the operands given positionally (in ``names`` order) and by name; check their types."""
    if len(args) > len(names):
        raise ValueError(f"got {len(args)} positional operands but the program takes {len(names)}: {names}")
    given = dict(zip(names, args))
    for name, value in kwargs.items():
        if name in given:
            raise ValueError(f"operand {name!r} given both by position and by name")
        given[name] = value
    extra = sorted(set(given) - set(names))
    if extra:
        raise ValueError(f"unexpected operand(s) {extra}; the program takes {names}")
    missing = [name for name in names if name not in given]
    if missing:
        raise ValueError(f"missing operand(s) {missing}; the program takes {names}")
    operands = [given[name] for name in names]
    for name, value in zip(names, operands):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"operand {name!r} must be a torch.Tensor, got {type(value).__name__}")
    return operands  # type: ignore[return-value]


def check_operands(
    names: Sequence[str],
    operands: Sequence[torch.Tensor],
    expected: Sequence[tuple[int, ...]],
    labels: Mapping[str, tuple[str, ...]],
) -> None:
    """Raise ValueError on a shape, dtype or device mismatch (the message names tensor, leg and sizes)."""
    for name, operand, shape in zip(names, operands, expected):
        if operand.shape != shape:
            raise ValueError(shape_mismatch(name, tuple(operand.shape), shape, labels[name]))
    if operands:
        dtype, device = operands[0].dtype, operands[0].device
        for name, operand in zip(names, operands):
            if operand.dtype != dtype:
                raise ValueError(
                    f"operands must share one dtype: {names[0]!r} is {dtype} but {name!r} is {operand.dtype}"
                )
            if operand.device != device:
                raise ValueError(
                    f"operands must share one device: {names[0]!r} is on {device} but {name!r} is on {operand.device}"
                )


def shape_mismatch(name: str, got: tuple[int, ...], want: Sequence[Size], labels: Sequence[str]) -> str:
    """The message for an operand whose shape contradicts its legs."""
    if len(got) != len(want):
        return (
            f"operand {name!r} has {len(got)} dims (shape {got}) but its legs "
            f"({', '.join(labels)}) need {len(want)}"
        )
    for axis, (have, size, label) in enumerate(zip(got, want, labels)):
        if isinstance(size, int) and have != size:
            return f"operand {name!r} axis {axis} (leg {label}) has size {have} but leg {label} has size {size}"
    return f"operand {name!r} has shape {got}, which contradicts its leg sizes {tuple(want)}"


def resolve_symbols(
    net: Network, names: Sequence[str], operands: Sequence[torch.Tensor]
) -> dict[sympy.Symbol, int]:
    """Values of the network's size symbols read off the operands' shapes.

    Each operand axis whose expected size is a bare symbol fixes that symbol;
    other axes are checked once their symbols are known. Raises ValueError when
    a shape contradicts the sizes or a symbol stays unknown.
    """
    expected = operand_shapes(net)
    labels = axis_labels(net)
    values: dict[sympy.Symbol, int] = {}
    for name, operand in zip(names, operands):
        want = expected[name]
        if len(want) != operand.ndim:
            raise ValueError(shape_mismatch(name, tuple(operand.shape), want, labels[name]))
        for axis, (size, have) in enumerate(zip(want, operand.shape)):
            if isinstance(size, sympy.Symbol):
                if values.setdefault(size, int(have)) != have:
                    raise ValueError(
                        f"operand {name!r} axis {axis} (leg {labels[name][axis]}) has size {have} but "
                        f"{size} = {values[size]} from another operand"
                    )
    unknown = sorted(str(s) for s in net.symbols if s not in values)
    if unknown:
        raise ValueError(f"size symbol(s) {unknown} cannot be read off the operands; substitute them first")
    for name, operand in zip(names, operands):
        want = tuple(substitute(s, values) for s in expected[name])
        if tuple(operand.shape) != want:
            raise ValueError(shape_mismatch(name, tuple(operand.shape), want, labels[name]))
    return values
