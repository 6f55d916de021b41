"""Layouts: turning operands into the axes a torch kernel wants, and kernel results into outputs.

A native kernel wants its operands as a few axes, each a group of legs
(``conv2d`` wants ``X`` as ``(batch, channels, i1, i2)`` where ``channels`` is
``(g, c_in)``). ``Arrange`` gets there from a user operand: when the operand's
own axes already are those groups (a conv input passed as ``(N, C_in, H, W)``
for legs ``n, g, c_in, i1, i2`` seen through the channel ``Unflatten``), it is
passed as it is; otherwise its views are applied, its legs permuted and
grouped with one reshape. ``Restore`` splits a kernel's result back into legs
and permutes them into the network's output order. Both are plain data that
the backend turns into calls (``tnconv.backends.torch.kernels``).

Every reshape target leads with -1 (sizes are >= 1, so the leading size follows
from the others): the leading dim follows the tensor, which lets a kernel built
for one batch size run any batch size when the batch leads (``tnconv.lower.native``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from tnconv.ir.network import Tensor
from tnconv.ir.tensors import Data
from tnconv.ir.views import Unflatten, View

Groups = Sequence[Sequence[str]]


@dataclass(frozen=True)
class Arrange:
    """Operand ``operand`` -> views -> permutation -> reshape (each step skipped when not needed).

    ``shape``: the reshape target, led by -1 (see the module docstring)."""

    operand: int
    views: tuple[View, ...]
    permutation: tuple[int, ...] | None
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Restore:
    """A kernel result -> one axis per leg (``shape``, led by -1) -> the output order (``permutation``)."""

    shape: tuple[int, ...]
    permutation: tuple[int, ...] | None


def operand_groups(entry: Tensor) -> list[tuple[str, ...]] | None:
    """The legs behind each axis of the operand a data entry reads (None when a view is not an Unflatten)."""
    assert isinstance(entry.kind, Data)
    groups: list[tuple[str, ...]] = [(leg,) for leg in entry.legs]
    for view in reversed(entry.views):
        if not isinstance(view, Unflatten):
            return None
        end = view.axis + len(view.sizes)
        groups[view.axis : end] = [tuple(leg for group in groups[view.axis : end] for leg in group)]
    return groups


def arrange(entry: Tensor, operand: int, groups: Groups, sizes: Mapping[str, int]) -> Arrange:
    """How to get ``entry``'s tensor (read from operand number ``operand``) as the given leg groups."""
    flat = [leg for group in groups for leg in group]
    if sorted(flat) != sorted(entry.legs):
        raise ValueError(f"groups {groups} do not cover the legs {entry.legs} of tensor {entry.name!r}")
    shape = tuple(math.prod(sizes[leg] for leg in group) for group in groups)
    raw = operand_groups(entry)
    if raw is not None and [leg for group in raw for leg in group] == flat:
        own = tuple(math.prod(sizes[leg] for leg in group) for group in raw)
        return Arrange(operand, (), None, None if own == shape else _led(shape))
    permutation = tuple(entry.legs.index(leg) for leg in flat)
    identity = permutation == tuple(range(len(permutation)))
    per_leg = tuple(sizes[leg] for leg in flat)
    views = entry.views
    return Arrange(operand, views, None if identity else permutation, None if per_leg == shape else _led(shape))


def restore(groups: Groups, output: Sequence[str], sizes: Mapping[str, int]) -> Restore:
    """How to turn a result whose axes are ``groups`` into one with ``output``'s legs in order."""
    flat = [leg for group in groups for leg in group]
    if sorted(flat) != sorted(output):
        raise ValueError(f"groups {groups} do not cover the output legs {tuple(output)}")
    permutation = tuple(flat.index(leg) for leg in output)
    identity = permutation == tuple(range(len(permutation)))
    return Restore(_led(tuple(sizes[leg] for leg in flat)), None if identity else permutation)


def _led(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with -1 for its leading size (the same target for a tensor of ``prod(shape)`` elements)."""
    return (-1, *shape[1:]) if shape else shape
