"""Slicing: keep every intermediate under a memory budget by contracting in chunks of one leg.

When the largest intermediate of a lowering exceeds ``memory_limit``
elements, the contraction is split over a leg: each chunk runs the same
lowering on narrowed inputs (``Tensor.narrow``: views), and the chunks'
results are concatenated (the leg is an output leg) or summed (it is
contracted). Only legs that no structured tensor fixes can be sliced (an
index pattern's legs cannot). A chunk that is still too large is sliced again
over another leg, so the budget is met whenever some choice of chunks meets
it; otherwise a ValueError says how small it can go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from tnconv.ir.network import Network
from tnconv.ir.tensors import Ones
from tnconv.lower.plan import Optimize
from tnconv.lower.lowering import lower
from tnconv.lower.structured import Lowering


@dataclass(frozen=True)
class Sliced:
    """Run ``parts`` on chunks ``(start, length, part)`` of ``leg``; concatenate on ``output_axis`` or sum (-1).

    ``axes[n]`` is the axis of ``leg`` in the n-th data entry's tensor (-1 when it has none).
    """

    leg: str
    axes: tuple[int, ...]
    output_axis: int
    pieces: tuple[tuple[int, int, int], ...]
    parts: tuple["Executor", ...]
    flops: int
    largest_intermediate: int

    @property
    def dense(self) -> tuple[str, ...]:
        return self.parts[0].dense

    def describe(self) -> str:
        """``"leg:chunks"`` for this slicing and the ones inside it, e.g. ``"n:4,c:2"``."""
        inner = self.parts[0]
        rest = f",{inner.describe()}" if isinstance(inner, Sliced) else ""
        return f"{self.leg}:{len(self.pieces)}{rest}"

    def make_constants(self, dtype: torch.dtype, device: torch.device) -> tuple:
        return tuple(part.make_constants(dtype, device) for part in self.parts)

    def execute(self, data: Sequence[torch.Tensor], constants: Sequence) -> torch.Tensor:
        total: torch.Tensor | None = None
        chunks = []
        for start, length, part in self.pieces:
            narrowed = [t if axis < 0 else t.narrow(axis, start, length) for t, axis in zip(data, self.axes)]
            result = self.parts[part].execute(narrowed, constants[part])
            if self.output_axis >= 0:
                chunks.append(result)
            else:
                total = result if total is None else total + result
        if self.output_axis >= 0:
            return torch.cat(chunks, self.output_axis)
        assert total is not None
        return total


Executor = Union[Lowering, Sliced]


def plan_memory(net: Network, optimize: Optimize, memory_limit: int | None, share: bool = True) -> Executor:
    """A lowering of ``net`` whose intermediates have at most ``memory_limit`` elements (None: no limit).

    ``share`` is passed to ``lower`` (off inside slices: see ``tnconv.lower.lowering.lower``).
    """
    whole = lower(net, optimize, share)
    if memory_limit is None or whole.largest_intermediate <= memory_limit:
        return whole
    fitting: list[tuple[int, str]] = []
    closest: list[tuple[int, str]] = []
    for leg in _candidates(net):
        chunk = int(net.size(leg))
        while chunk > 1:
            chunk = -(-chunk // 2)
            largest = lower(_resized(net, leg, chunk), optimize).largest_intermediate
            if largest <= memory_limit:
                fitting.append((-chunk, leg))
                break
        else:
            closest.append((largest, leg))
    if fitting:
        chunk, leg = min(fitting)
        return _slice(net, optimize, memory_limit, leg, -chunk)
    if closest:
        return _slice(net, optimize, memory_limit, min(closest)[1], 1)
    raise ValueError(
        f"memory_limit={memory_limit} is below the largest intermediate ({whole.largest_intermediate} elements) "
        "and no leg can be sliced to reduce it"
    )


def _slice(net: Network, optimize: Optimize, memory_limit: int, leg: str, chunk: int) -> Sliced:
    size = int(net.size(leg))
    lengths = sorted({chunk, size % chunk} - {0}, reverse=True)
    try:
        parts = tuple(plan_memory(_resized(net, leg, length), optimize, memory_limit, share=False)
                      for length in lengths)
    except ValueError as error:
        raise ValueError(f"memory_limit={memory_limit} cannot be met even slicing leg {leg!r}: {error}") from None
    pieces = tuple((start, min(chunk, size - start), lengths.index(min(chunk, size - start)))
                   for start in range(0, size, chunk))
    data = [e for e in net.entries if not e.structured]
    axes = tuple(e.legs.index(leg) if leg in e.legs else -1 for e in data)
    output_axis = net.output.index(leg) if leg in net.output else -1
    flops = sum(parts[part].flops for _, _, part in pieces)
    largest = max(part.largest_intermediate for part in parts)
    return Sliced(leg, axes, output_axis, pieces, parts, flops, largest)


def _candidates(net: Network) -> list[str]:
    """Legs that can be sliced: size > 1, on no structured tensor but Ones, at most once per tensor."""
    fixed = {leg for e in net.entries if e.structured and not isinstance(e.kind, Ones) for leg in e.legs}
    return [
        leg for leg, size in net.sizes.items()
        if int(size) > 1 and leg not in fixed and all(e.legs.count(leg) <= 1 for e in net.entries)
    ]


def _resized(net: Network, leg: str, size: int) -> Network:
    sizes = dict(net.sizes)
    sizes[leg] = size
    return net.replace(sizes=sizes)
