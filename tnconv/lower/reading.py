"""A network as PyTorch's conv kernels read it: every index pattern, a tensor's or a ``Taps`` view's.

``tnconv.simplify`` turns an index pattern ``Pi[k, o, i]`` whose taps relabel
pixels into a ``Taps`` view on the data that reads it: ``X[.., i, ..]``
contracted with ``Pi`` becomes ``X`` read with ``i -> (o, k)``. The value is the
same, and so is the convolution a kernel computes: the view holds the pattern,
and its reader is the tensor its pixels come from. ``read(net)`` lists both
forms alike, without building another network: the pattern tensors, and the
``Taps`` views at the end of a data tensor's views, each with the data tensor
that reads it and a pixel leg named for it (``PatternRead``); the data
tensors as the kernels take them (``Reading.operands``: the views before those
``Taps`` views, the pixel legs in place of each view's ``(o, k)``). So
``tnconv.lower.native`` matches simplified and unsimplified networks of one
layer alike.

A ``Taps`` view is read when the views after it leave its two axes alone (they
move before it); otherwise its tensor keeps it, as a data tensor's view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from typing_extensions import assert_never

from tnconv.ir.names import fresh_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View


OUT = -1
"""Where a leg goes when it is an output leg (``Reading.where``)."""


@dataclass(frozen=True)
class PatternRead:
    """One index pattern: its legs ``(k, o, i)`` and window; ``tensor``: the position of its ``Pi`` tensor, or
    ``reader``: the data tensor whose ``Taps`` view it is (``i`` then a pixel leg the reading names)."""

    legs: tuple[str, str, str]
    pattern: IndexPattern
    tensor: int | None = None
    reader: int | None = None

    @property
    def owner(self) -> int:
        """The position that holds the pattern: its tensor's, or its reader's."""
        held = self.tensor if self.tensor is not None else self.reader
        assert held is not None  # a pattern is a tensor or a view
        return held


@dataclass(frozen=True)
class Reading:
    """``net`` with its patterns read (see the module docstring).

    ``operands``: each data tensor's position -> the tensor as a kernel takes it (the views before its read
    ``Taps`` views, their pixel legs in place of their ``(o, k)``); ``patterns``: the pattern tensors in
    the network's order, then the read views by reader and pixel axis (the spatial order);
    ``sizes``: the network's sizes and the pixel legs'.
    """

    net: Network
    operands: dict[int, Tensor]
    patterns: tuple[PatternRead, ...]
    sizes: dict[str, int]

    def where(self, pattern: PatternRead, leg: str) -> list[int]:
        """What ``pattern``'s leg joins besides the pattern: data positions, and ``OUT`` for the output."""
        if pattern.reader is not None and leg == pattern.legs[2]:
            return [pattern.reader]
        net = self.net
        return [q for q in net.tensors_on(leg) if q != pattern.owner] + ([OUT] if leg in net.output else [])


def read(net: Network) -> Reading | None:
    """``net`` read for the kernels (concrete sizes), or None when a tensor is neither data nor an index pattern,
    or a read pattern's pixels are another pattern's taps or outputs (chained ``Taps`` views)."""
    sizes = {leg: int(size) for leg, size in net.sizes.items()}
    operands: dict[int, Tensor] = {}
    tensors: list[PatternRead] = []
    viewed: list[tuple[tuple[int, int], PatternRead]] = []  # ((reader, axis of i), pattern): the spatial order
    for position, entry in enumerate(net.entries):
        match entry.kind:
            case IndexPattern():
                k, o, i = entry.legs
                tensors.append(PatternRead((k, o, i), entry.kind, tensor=position))
            case Data():
                operand, taps = _read_taps(entry, position, sizes)
                if any(p.legs[2] not in operand.legs for p in taps):  # a view read another's pixels
                    return None
                operands[position] = operand
                viewed += [((position, operand.legs.index(p.legs[2])), p) for p in taps]
            case _:
                return None
    patterns = (*tensors, *(pattern for _, pattern in sorted(viewed, key=lambda item: item[0])))
    pixels = {p.legs[2] for p in patterns if p.reader is not None}
    if any(leg in pixels for p in patterns for leg in p.legs[:2]):
        return None
    return Reading(net, operands, patterns, sizes)


def _read_taps(entry: Tensor, position: int, sizes: dict[str, int]) -> tuple[Tensor, list[PatternRead]]:
    """``entry`` (data) as a kernel takes it and the ``Taps`` views read off its end (``sizes`` gains their pixel
    legs)."""
    assert isinstance(entry.kind, Data)
    split = _taps_last(entry.kind.views)
    if not split or not split[1]:
        return entry, []
    rest, taps = split
    legs = list(entry.legs)
    read: list[PatternRead] = []
    for view in reversed(taps):
        o, k = legs[view.axis], legs[view.axis + 1]
        i = fresh_name(f"{o}:{k}", sizes)
        sizes[i] = int(view.pattern.input_size)
        legs[view.axis : view.axis + 2] = [i]
        read.append(PatternRead((k, o, i), view.pattern, reader=position))
    return Tensor(entry.name, tuple(legs), Data(rest)), read


def _taps_last(views: Sequence[View]) -> tuple[tuple[View, ...], tuple[Taps, ...]] | None:
    """``views`` as ``(others, taps)``, the same chain with its ``Taps`` views moved last, or None when a view
    after a ``Taps`` touches its axes."""
    others: list[View] = []
    taps: list[Taps] = []
    for view in views:
        if isinstance(view, Taps):
            taps.append(view)
            continue
        moved: list[Taps] = []
        for tap in reversed(taps):  # move ``view`` before each pending taps view, last first
            swapped = _before(tap, view)
            if swapped is None:
                return None
            view, tap = swapped
            moved.append(tap)
        taps = moved[::-1]
        others.append(view)
    return tuple(others), tuple(taps)


def _before(tap: Taps, view: View) -> tuple[View, Taps] | None:
    """``view`` (applied after ``tap``) and ``tap`` rewritten so that ``view`` applies first; None when ``view``
    touches ``tap``'s axes ``(o, k)``."""
    a = tap.axis
    match view:
        case Squeeze() | Slice() | Unflatten():
            if view.axis in (a, a + 1):
                return None
            if view.axis > a + 1:
                return replace(view, axis=view.axis - 1), tap
            grown = len(view.sizes) - 1 if isinstance(view, Unflatten) else -1 if isinstance(view, Squeeze) else 0
            return view, replace(tap, axis=a + grown)
        case Flatten():
            end = view.axis + len(view.sizes)
            if view.axis > a + 1:
                return replace(view, axis=view.axis - 1), tap
            if end <= a:
                return view, replace(tap, axis=a - len(view.sizes) + 1)
            return None
        case Taps():
            return None
        case _:
            assert_never(view)
