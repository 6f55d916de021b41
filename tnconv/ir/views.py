"""Views: reshapes, slices and taps that relate a user's operand to a tensor's legs.

A data tensor in a network may not use its operand's axes as they are: a
rewrite can read an axis ``i`` as the taps ``(o, k)`` of an index pattern
(``Taps``: the dense, downsampling and padding rules), keep only some indices
of it (``Slice``), and a convolution splits channels into ``(groups,
channels)`` (``Unflatten``). Such a tensor carries a chain of views; the
backend applies them to the bound operand (``tnconv.backends.torch.views``:
torch views, a copy only where a ``Taps`` reads padding), and the chain run
backwards gives the operand shape the user must pass. Views are plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import sympy
from typing_extensions import assert_never

from tnconv.ir.sizes import Size, equal, product, substitute
from tnconv.ir.tensors import IndexPattern


@dataclass(frozen=True)
class Unflatten:
    """Split axis ``axis`` (size ``prod(sizes)``) into ``len(sizes)`` axes, row-major."""

    axis: int
    sizes: tuple[Size, ...]

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        end = self.axis + len(self.sizes)
        return (*shape[: self.axis], product(shape[self.axis : end]), *shape[end:])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Unflatten":
        return Unflatten(self.axis, tuple(substitute(s, values) for s in self.sizes))

    def __str__(self) -> str:
        return f"unflatten({self.axis}, ({', '.join(str(s) for s in self.sizes)}))"


@dataclass(frozen=True)
class Slice:
    """Keep indices ``start, start + step, ...`` (``count`` of them) of axis ``axis`` of size ``source``."""

    axis: int
    start: Size
    step: Size
    count: Size
    source: Size

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], self.source, *shape[self.axis + 1 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Slice":
        return Slice(
            self.axis,
            substitute(self.start, values),
            substitute(self.step, values),
            substitute(self.count, values),
            substitute(self.source, values),
        )

    def __str__(self) -> str:
        return f"slice({self.axis}, start={self.start}, step={self.step}, count={self.count})"


@dataclass(frozen=True)
class Squeeze:
    """Drop axis ``axis``, which has size 1 (a size-1 leg removed by ``tnconv.simplify``)."""

    axis: int

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], 1, *shape[self.axis :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Squeeze":
        return self

    def __str__(self) -> str:
        return f"squeeze({self.axis})"


@dataclass(frozen=True)
class Flatten:
    """Merge axes ``axis .. axis + len(sizes) - 1`` (of sizes ``sizes``) into one, row-major (may copy)."""

    axis: int
    sizes: tuple[Size, ...]

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], *self.sizes, *shape[self.axis + 1 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Flatten":
        return Flatten(self.axis, tuple(substitute(s, values) for s in self.sizes))

    def __str__(self) -> str:
        return f"flatten({self.axis}, ({', '.join(str(s) for s in self.sizes)}))"


@dataclass(frozen=True)
class Taps:
    """Axis ``axis`` (pixels ``i``, size ``pattern.input_size``) read as taps: axes ``(o, k)`` at ``(axis, axis + 1)``.

    ``out[.., o, k, ..] = in[.., S*o + D*k - P_left, ..]`` where that position is inside
    the axis, else zero (``mode="zeros"``) or the padding mode's fold (``pattern``'s
    hyper-parameters): the index pattern ``Pi[k, o, i]`` contracted with the axis. The
    pattern rules of ``tnconv.simplify`` emit it where ``Pi`` relabels pixels; the native
    matcher reads it as ``Pi`` (``tnconv.lower.reading``). Realised as torch views
    (a copy only where padding is read).
    """

    axis: int
    pattern: IndexPattern

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        p = self.pattern
        if equal(shape[self.axis], p.output_size) is False or equal(shape[self.axis + 1], p.kernel_size) is False:
            raise ValueError(
                f"{self} makes axes of sizes ({p.output_size}, {p.kernel_size}), "
                f"not ({shape[self.axis]}, {shape[self.axis + 1]})"
            )
        return (*shape[: self.axis], p.input_size, *shape[self.axis + 2 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Taps":
        return Taps(self.axis, self.pattern.substitute(values))

    def __str__(self) -> str:
        return f"taps({self.axis}, {self.pattern.describe().removeprefix('index_pattern ')})"


View = Union[Unflatten, Slice, Squeeze, Flatten, Taps]


def source_shape(views: Sequence[View], shape: Sequence[Size]) -> tuple[Size, ...]:
    """The operand shape that ``views`` turn into ``shape``."""
    result = tuple(shape)
    for view in reversed(views):
        result = view.source_shape(result)
    return result


def source_labels(views: Sequence[View], legs: Sequence[str]) -> tuple[str, ...]:
    """What each axis of the operand is in terms of ``legs`` (``'c'``, ``'(g*ci)'``, ``'i[::2]'``)."""
    current = list(legs)
    for view in reversed(views):
        match view:
            case Unflatten():
                end = view.axis + len(view.sizes)
                current[view.axis : end] = ["(" + "*".join(current[view.axis : end]) + ")"]
            case Slice():
                current[view.axis] = f"{current[view.axis]}[{view.start}::{view.step}]"
            case Squeeze():
                current.insert(view.axis, "1")
            case Flatten():
                merged = current[view.axis]
                current[view.axis : view.axis + 1] = [f"{merged}.{n}" for n in range(len(view.sizes))]
            case Taps():
                current[view.axis : view.axis + 2] = [f"({current[view.axis]}~{current[view.axis + 1]})"]
            case _:
                assert_never(view)
    return tuple(current)


def tap_axes(views: Sequence[View], ndim: int) -> frozenset[int]:
    """The axes of the tensor that ``views`` make (``ndim`` of them) that come from a ``Taps`` view: pattern legs."""
    found: set[int] = set()
    if Taps not in map(type, views):  # at C speed: chains of thousands of views on tensors of thousands of legs
        return frozenset()
    current: list[set[int]] = [{axis} for axis in range(ndim)]  # the final axes each axis becomes
    for view in reversed(views):
        match view:
            case Taps():
                found |= current[view.axis] | current[view.axis + 1]
                current[view.axis : view.axis + 2] = [set()]
            case Unflatten():
                end = view.axis + len(view.sizes)
                current[view.axis : end] = [set().union(*current[view.axis : end])]
            case Flatten():
                current[view.axis : view.axis + 1] = [set(current[view.axis]) for _ in view.sizes]
            case Squeeze():
                current.insert(view.axis, set())
            case Slice():  # keeps its axis
                pass
            case _:
                assert_never(view)
    return frozenset(found)
