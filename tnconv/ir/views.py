"""Views: zero-copy reshapes and slices that relate a user's operand to a tensor's legs.

A data tensor in a network may not use its operand's axes as they are: a
rewrite can split an axis ``i`` into ``(o, k)`` (the dense rule) or keep only
every ``S``-th index of it (downsampling), and a convolution splits channels
into ``(groups, channels)``. Such a tensor carries a chain of views; the
program applies them to the bound operand (``torch`` views, no copies), and
the chain run backwards gives the operand shape the user must pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import sympy
import torch

from tnconv.ir.sizes import Size, product, substitute


@dataclass(frozen=True)
class Unflatten:
    """Split axis ``axis`` (size ``prod(sizes)``) into ``len(sizes)`` axes, row-major."""

    axis: int
    sizes: tuple[Size, ...]

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.sizes:  # a size-1 axis split into no axes at all
            return tensor.squeeze(self.axis)
        return tensor.unflatten(self.axis, tuple(int(s) for s in self.sizes))

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

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        start, step, count = int(self.start), int(self.step), int(self.count)
        index = (slice(None),) * self.axis + (slice(start, start + step * (count - 1) + 1, step),)
        return tensor[index]

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

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.squeeze(self.axis)

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

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.flatten(self.axis, self.axis + len(self.sizes) - 1)

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], *self.sizes, *shape[self.axis + 1 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Flatten":
        return Flatten(self.axis, tuple(substitute(s, values) for s in self.sizes))

    def __str__(self) -> str:
        return f"flatten({self.axis}, ({', '.join(str(s) for s in self.sizes)}))"


@dataclass(frozen=True)
class Windows:
    """Axis ``axis`` (size ``source``) -> ``(count, size)``: ``count`` windows of ``size`` indices, ``step`` apart.

    ``out[.., w, j, ..] = in[.., step*w + j, ..]`` (``Tensor.unfold``: a strided view, no copy).
    """

    axis: int
    size: Size
    step: Size
    count: Size
    source: Size

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        windows = tensor.narrow(self.axis, 0, int(self.step) * (int(self.count) - 1) + int(self.size))
        return windows.unfold(self.axis, int(self.size), int(self.step)).movedim(-1, self.axis + 1)

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], self.source, *shape[self.axis + 2 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Windows":
        fields = (self.size, self.step, self.count, self.source)
        return Windows(self.axis, *(substitute(f, values) for f in fields))

    def __str__(self) -> str:
        return f"windows({self.axis}, size={self.size}, step={self.step}, count={self.count})"


@dataclass(frozen=True)
class Pad:
    """Zero-pad axis ``axis`` (size ``source``) by ``left`` and ``right`` indices (negative amounts crop; a copy)."""

    axis: int
    left: Size
    right: Size
    source: Size

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        left, right, size = int(self.left), int(self.right), tensor.shape[self.axis]
        first, last = max(0, -left), max(0, -right)  # crop these first (F.pad cannot crop past the input)
        if first + last >= size:
            shape = list(tensor.shape)
            shape[self.axis] = size + left + right
            return tensor.new_zeros(shape)
        kept = tensor.narrow(self.axis, first, size - first - last)
        after = tensor.ndim - self.axis - 1
        return torch.nn.functional.pad(kept, (0, 0) * after + (max(left, 0), max(right, 0)))

    def source_shape(self, shape: Sequence[Size]) -> tuple[Size, ...]:
        return (*shape[: self.axis], self.source, *shape[self.axis + 1 :])

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Pad":
        return Pad(self.axis, *(substitute(f, values) for f in (self.left, self.right, self.source)))

    def __str__(self) -> str:
        return f"pad({self.axis}, left={self.left}, right={self.right})"


View = Union[Unflatten, Slice, Squeeze, Flatten, Windows, Pad]


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
    return tuple(current)


def apply_views(views: Sequence[View], tensor: torch.Tensor) -> torch.Tensor:
    """Apply ``views`` to an operand, in order."""
    for view in views:
        tensor = view.apply(tensor)
    return tensor
