"""Binding operands to a network: their order, the shapes they must have, and the messages on a mismatch.

Pure Python (operands are read through ``.shape`` and ``.ndim`` only); the
torch backend checks types, dtypes and devices (``tnconv.backends.torch.bind``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import sympy

from tnconv.ir.network import Network
from tnconv.ir.sizes import Size, substitute
from tnconv.ir.tensors import Data, IndexPattern, PatternSum
from tnconv.ir.views import Taps, source_labels, source_shape


def operand_shapes(net: Network) -> dict[str, tuple[Size, ...]]:
    """The shape each data operand must have (from its first occurrence's legs and views)."""
    shapes: dict[str, tuple[Size, ...]] = {}
    for entry in net.entries:
        if not entry.structured and entry.name not in shapes:
            shapes[entry.name] = source_shape(entry.views, [net.size(leg) for leg in entry.legs])
    return shapes


def axis_labels(net: Network) -> dict[str, tuple[str, ...]]:
    """For each operand, what each axis is in terms of legs (``'c'``, ``'(g*ci)'``, ``'i[::2]'``), first occurrence."""
    labels: dict[str, tuple[str, ...]] = {}
    for entry in net.entries:
        if not entry.structured and entry.name not in labels:
            labels[entry.name] = source_labels(entry.views, entry.legs)
    return labels


def order(names: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
    """The operands given positionally (in ``names`` order) and by name, in ``names`` order."""
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
    return [given[name] for name in names]


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


def resolve_symbols(net: Network, names: Sequence[str], operands: Sequence[Any]) -> dict[sympy.Symbol, int]:
    """Values of the network's size symbols read off the operands' shapes.

    Every occurrence of an operand is read (one tensor is bound to all of them):
    each axis whose expected size is a bare symbol fixes that symbol; other axes
    are checked once their symbols are known. Raises ValueError when a shape
    contradicts the sizes (naming the operand, the occurrence's position and
    leg) or a symbol stays unknown.
    """
    bound = dict(zip(names, operands))
    occurrences = [
        (position, entry, source_shape(entry.views, [net.size(leg) for leg in entry.legs]))
        for position, entry in enumerate(net.entries)
        if not entry.structured
    ]
    values: dict[sympy.Symbol, int] = {}
    for position, entry, want in occurrences:
        operand, labels = bound[entry.name], source_labels(entry.views, entry.legs)
        if len(want) != operand.ndim:
            raise ValueError(shape_mismatch(entry.name, tuple(operand.shape), want, labels))
        for axis, (size, have) in enumerate(zip(want, operand.shape)):
            if isinstance(size, sympy.Symbol) and values.setdefault(size, int(have)) != have:
                raise ValueError(
                    f"operand {entry.name!r} axis {axis} (leg {labels[axis]} of its occurrence at position "
                    f"{position}) has size {have} but {size} = {values[size]} from another operand or occurrence"
                )
    unknown = sorted(str(s) for s in net.symbols if s not in values)
    if unknown:
        raise ValueError(f"size symbol(s) {unknown} cannot be read off the operands; substitute them first")
    for position, entry, want in occurrences:
        operand = bound[entry.name]
        want = tuple(substitute(s, values) for s in want)
        if tuple(operand.shape) != want:
            labels = source_labels(entry.views, entry.legs)
            raise ValueError(
                shape_mismatch(entry.name, tuple(operand.shape), want, labels)
                + f" (its occurrence at position {position})"
            )
    return values


def check_patterns(net: Network, values: Mapping[sympy.Symbol, int]) -> None:
    """Every index pattern of ``net`` (as a tensor, summed or in a ``Taps`` view) must be a convolution's
    at the sizes ``values`` (one per symbol): ValueError naming the tensor, in the words of the check that
    ``conv_hyper`` makes of a concrete layer (the kernel wider than the padded input, an output size that is
    not positive), so that a symbolic program refuses what the concrete one would."""
    for position, entry in enumerate(net.entries):
        kind = entry.kind
        if isinstance(kind, IndexPattern):
            patterns = [kind]
        elif isinstance(kind, PatternSum):
            patterns = [kind.pattern]
        elif isinstance(kind, Data):
            patterns = [view.pattern for view in kind.views if isinstance(view, Taps)]
        else:
            patterns = []
        for pattern in patterns:
            misfit = pattern.substitute(values).misfit()
            if misfit is not None:
                values_text = ", ".join(f"{symbol}={value}" for symbol, value in sorted(values.items(), key=str))
                raise ValueError(
                    f"{misfit}: the index pattern of tensor {entry.name!r} (position {position}, legs "
                    f"{', '.join(entry.legs)}) at sizes {values_text}"
                )
