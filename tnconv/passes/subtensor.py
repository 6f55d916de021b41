"""Sub-tensor accesses as network edits: tie legs (diagonal), trace, restrict a leg (slicing).

- ``tie(net, legs)``: identify several legs: ``F[.., a, ..] = f[.., a, .., b=a, ..]``
  for output legs (a diagonal: the output keeps the first of them), a sum
  over the diagonal ``sum_a f[a, b=a]`` for summed ones.
- ``trace(net, a, b)``: tie two output legs and sum them out.
- ``restrict(net, leg, indices)``: keep indices ``start, start+step, ...`` of
  ``leg`` (a ``slice`` or ``range``): a summed leg then sums over those only,
  an output leg has only those entries. Data tensors see the leg through a
  ``Slice`` view (no copy; dropped entries are never touched); an index
  pattern restricted on its ``o`` or ``k`` leg is again an index pattern
  (stride ``S*step``, resp. dilation ``D*step``, shifted padding, possibly
  negative); other structured tensors keep their full leg, joined to the
  restricted one by a strided 0/1 selection ``[l == start + step*j]`` (an
  index pattern with ``K = 1``, ``S = step``, ``P = -start``).

These are the building blocks of tensor dropout (restrict channels or pixels).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, equal, is_concrete
from tnconv.ir.tensors import Data, IndexPattern, Ones
from tnconv.ir.views import Slice
from tnconv.ir.names import fresh_name
from tnconv.passes.core import Record, Trace


def tie(net: Network, legs: Sequence[str]) -> Network:
    """Identify ``legs`` as one leg named ``legs[0]`` (see ``tie_traced``)."""
    return tie_traced(net, legs)[0]


def trace(net: Network, a: str, b: str) -> Network:
    """``sum_x f[.., a=x, .., b=x, ..]`` for two output legs ``a`` and ``b`` (see ``trace_traced``)."""
    return trace_traced(net, a, b)[0]


def restrict(net: Network, leg: str, indices: slice | range) -> Network:
    """Keep only indices ``indices`` of ``leg`` (see ``restrict_traced``)."""
    return restrict_traced(net, leg, indices)[0]


def tie_traced(net: Network, legs: Sequence[str]) -> tuple[Network, Trace]:
    """Identify ``legs`` (at least two, equal sizes) as one leg named ``legs[0]``.

    In the output, the tied leg takes the first position any of ``legs`` had there.

    Raises:
        ValueError: fewer than two distinct legs, an unknown leg, or sizes not provably equal.
    """
    _check(net)
    legs = tuple(dict.fromkeys(legs)) if not isinstance(legs, str) else (legs,)
    if len(legs) < 2:
        raise ValueError(f"legs must name at least two distinct legs to tie, got {legs!r}")
    first = legs[0]
    for leg in legs:
        net.size(leg)
        if equal(net.size(leg), net.size(first)) is not True:
            raise ValueError(f"cannot tie legs of different sizes: {first!r}={net.size(first)}, {leg!r}={net.size(leg)}")
    mapping = {leg: first for leg in legs[1:]}
    entries = [Tensor(e.name, tuple(mapping.get(l, l) for l in e.legs), e.kind) for e in net.entries]
    output = tuple(dict.fromkeys(mapping.get(l, l) for l in net.output))
    sizes = {leg: size for leg, size in net.sizes.items() if leg not in mapping}
    record = Record("tie", (), legs, f"size {net.size(first)}", f"one leg {first} (a diagonal)")
    return Network(entries, output, sizes), Trace((record,))


def trace_traced(net: Network, a: str, b: str) -> tuple[Network, Trace]:
    """``sum_x f[.., a=x, .., b=x, ..]`` for two output legs ``a`` and ``b``."""
    _check(net)
    for leg in (a, b):
        if leg not in net.output:
            raise ValueError(f"trace needs two output legs; {leg!r} is not in the output {net.output}")
    tied = tie(net, (a, b))
    record = Record("trace", (), (a, b), f"output legs of size {net.size(a)}", f"tie {a}, {b} and sum over {a}")
    return tied.replace(output=tuple(leg for leg in tied.output if leg != a)), Trace((record,))


def restrict_traced(net: Network, leg: str, indices: slice | range) -> tuple[Network, Trace]:
    """Keep only indices ``indices`` (a slice or range with step > 0, non-empty) of ``leg``.

    Raises:
        ValueError: unknown leg, empty or out-of-range selection, a step <= 0,
            or a symbolic leg size without an explicit stop.
    """
    _check(net)
    size = net.size(leg)
    start, step, count = _selection(leg, size, indices)
    if start == 0 and step == 1 and equal(count, size) is True:
        return net, Trace()
    entries: list[Tensor] = []
    full = fresh_name(f"{leg}_full", set(net.all_legs))
    done: dict[str, list[str]] = {"slice": [], "slice pattern": [], "select": []}
    for entry in net.entries:
        kind = entry.kind
        if leg not in entry.legs or isinstance(kind, Ones):
            entries.append(entry)
        elif isinstance(kind, Data):
            views = tuple(Slice(slot, start, step, count, size) for slot, l in enumerate(entry.legs) if l == leg)
            entries.append(replace(entry, kind=Data(kind.views + views)))
            done["slice"].append(entry.name)
        elif isinstance(kind, IndexPattern) and entry.legs.count(leg) == 1 and entry.legs.index(leg) < 2:
            entries.append(replace(entry, kind=_slice_pattern(kind, entry.legs.index(leg), start, step, count)))
            done["slice pattern"].append(entry.name)
        else:
            entries.append(Tensor(entry.name, tuple(full if l == leg else l for l in entry.legs), kind))
            done["select"].append(entry.name)
    sizes = {**net.sizes, leg: count}
    if done["select"]:
        tap = fresh_name(f"{leg}_tap", set(net.all_legs) | {full})
        right = step * (count - 1) + start + 1 - size + step - 1  # the largest padding giving count outputs
        select = IndexPattern(size, 1, step, -start, right, 1)
        label = fresh_name(f"select_{leg}", set(net.tensors))
        entries.append(Tensor(label, (tap, leg, full), select))
        sizes.update({full: size, tap: 1})
        done["select"] = [f"{', '.join(done['select'])} (on {full}, joined by {label})"]
    how = "; ".join(f"{what} {', '.join(dict.fromkeys(names))}" for what, names in done.items() if names)
    record = Record("restrict", (), (leg,), f"indices {start}::{step}, {count} of {size}", how or "no tensor")
    return Network(entries, net.output, sizes), Trace((record,))


def _slice_pattern(pattern: IndexPattern, slot: int, start: int, step: int, count: int) -> IndexPattern:
    """``Pi`` restricted to kernel taps (slot 0) or output positions (slot 1) ``start + step*j``."""
    size, kernel, stride = pattern.input_size, pattern.kernel_size, pattern.stride
    dilation, left, outputs = pattern.dilation, pattern.pad_left, pattern.output_size
    if slot == 1:  # o = start + step*j: i == (S*step)*j + D*k - (P - S*start)
        stride, left, outputs = stride * step, left - pattern.stride * start, count
    else:  # k = start + step*j: i == S*o + (D*step)*j - (P - D*start)
        dilation, left, kernel = dilation * step, left - pattern.dilation * start, count
    right = stride * (outputs - 1) + dilation * (kernel - 1) + 1 - size - left + stride - 1  # the largest with O outputs
    return replace(pattern, kernel_size=kernel, stride=stride, pad_left=left, pad_right=right, dilation=dilation)


def _selection(leg: str, size: Size, indices: slice | range) -> tuple[int, int, int]:
    """``(start, step, count)`` of a slice or range over a leg of size ``size``, validated."""
    if not isinstance(indices, (slice, range)):
        raise TypeError(f"indices must be a slice or range, got {indices!r}")
    step = 1 if indices.step is None else indices.step
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"indices for leg {leg!r} need a positive step, got {indices!r}")
    if is_concrete(size):
        chosen = range(int(size))[indices.start : indices.stop : step]
        if isinstance(indices, range) and (indices.start < 0 or indices.stop > int(size)):
            raise ValueError(f"indices {indices!r} are out of range for leg {leg!r} of size {size}")
    elif indices.stop is None or (indices.start or 0) < 0 or indices.stop < 0:
        raise ValueError(f"leg {leg!r} has symbolic size {size}: indices need explicit non-negative bounds, got {indices!r}")
    else:
        chosen = range(indices.start or 0, indices.stop, step)
    if len(chosen) == 0:
        raise ValueError(f"indices {indices!r} select nothing of leg {leg!r} (size {size})")
    return chosen.start, step, len(chosen)


def _check(net: object) -> None:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a tnconv.Network, got {type(net).__name__}")
