"""Slicing: keep every intermediate under a memory budget by contracting in chunks of one leg.

When the largest intermediate of an einsum plan exceeds ``memory_limit``
elements, the contraction is split over a leg: each chunk runs the same
plan on narrowed inputs (views), and the chunks' results are concatenated
(the leg is an output leg) or summed (it is contracted): a ``Sliced`` plan.
Only legs that no structured tensor fixes can be sliced (an index pattern's
legs cannot). A chunk that is still too large is sliced again
over another leg, so the budget is met whenever some choice of chunks meets
it; otherwise a ValueError says how small it can go.
"""

from __future__ import annotations

from tnconv.ir.network import Network
from tnconv.ir.tensors import Ones
from tnconv.lower.einsum import plan_einsum
from tnconv.lower.nodes import Executor, Sliced
from tnconv.lower.optimize import Optimize


def plan_memory(net: Network, optimize: Optimize, memory_limit: int | None, share: bool = True) -> Executor:
    """An einsum plan of ``net`` whose intermediates have at most ``memory_limit`` elements (None: no limit).

    ``share`` is passed to ``plan_einsum`` (off inside slices: see ``tnconv.lower.einsum.plan_einsum``).
    """
    whole = plan_einsum(net, optimize, share)
    if memory_limit is None or whole.largest_intermediate <= memory_limit:
        return whole
    fitting: list[tuple[int, str]] = []
    closest: list[tuple[int, str]] = []
    for leg in _candidates(net):
        chunk = int(net.size(leg))
        while chunk > 1:
            chunk = -(-chunk // 2)
            largest = plan_einsum(_resized(net, leg, chunk), optimize).largest_intermediate
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
    return Sliced(parts[0].reads, leg, axes, output_axis, pieces, parts, flops, largest)


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
