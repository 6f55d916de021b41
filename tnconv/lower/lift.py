"""The structural form of a network: ``Taps`` views read back as the index patterns they are.

``tnconv.simplify`` turns an index pattern ``Pi[k, o, i]`` whose taps relabel
pixels into a ``Taps`` view on the data that reads it: ``X[.., i, ..]``
contracted with ``Pi`` becomes ``X`` read with ``i -> (o, k)``. The value is the
same and the einsum path gets cheaper, but the network no longer shows the
convolution a PyTorch kernel computes. ``structural(net)`` undoes that exactly
(a change of representation, not a guess): each ``Taps`` view becomes a new
pattern tensor ``Pi(k, o, i')`` and the data tensor carries the fresh pixel
leg ``i'`` again, so that ``tnconv.lower.native`` matches simplified and
unsimplified networks of one layer alike.

A ``Taps`` view is read back when the views after it leave its two axes
alone (they move before it); otherwise its tensor keeps it. ``as_taps`` goes
the other way for chosen patterns (a 1x1 conv as the matrix product of
strided views it is).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from tnconv.ir.names import fresh_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data
from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View


def structural(net: Network) -> Network:
    """``net`` with every ``Taps`` view that can be read back as an index pattern tensor (``net`` itself when none)."""
    if not any(isinstance(e.kind, Data) and any(type(v) is Taps for v in e.kind.views) for e in net.entries):
        return net
    sizes = dict(net.sizes)
    names = set(net.tensors)
    entries: list[Tensor] = []
    patterns: list[tuple[tuple[int, int], Tensor]] = []  # ((tensor, axis of i), pattern): the spatial order
    for position, entry in enumerate(net.entries):
        split = _taps_last(entry.kind.views) if isinstance(entry.kind, Data) else None
        if not split or not split[1]:
            entries.append(entry)
            continue
        rest, taps = split
        legs = list(entry.legs)
        lifted = []
        for view in reversed(taps):
            o, k = legs[view.axis], legs[view.axis + 1]
            i = fresh_name(f"{o}:{k}", sizes)
            sizes[i] = view.pattern.input_size
            legs[view.axis : view.axis + 2] = [i]
            name = fresh_name(f"Pi[{i}]", names)
            names.add(name)
            lifted.append(Tensor(name, (k, o, i), view.pattern))
        axis = {leg: n for n, leg in enumerate(legs)}  # a chained pattern's pixel leg is another's output leg
        patterns += [((position, axis.get(pattern.legs[2], len(legs))), pattern) for pattern in lifted]
        entries.append(Tensor(entry.name, tuple(legs), Data(rest)))
    ordered = [pattern for _, pattern in sorted(patterns, key=lambda item: item[0])]
    return Network([*entries, *ordered], net.output, sizes)


def _taps_last(views: Sequence[View]) -> Optional[tuple[tuple[View, ...], tuple[Taps, ...]]]:
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


def _before(tap: Taps, view: View) -> Optional[tuple[View, Taps]]:
    """``view`` (applied after ``tap``) and ``tap`` rewritten so that ``view`` applies first; None when ``view``
    touches ``tap``'s axes ``(o, k)``."""
    a = tap.axis
    if isinstance(view, (Squeeze, Slice, Unflatten)):
        if view.axis in (a, a + 1):
            return None
        if view.axis > a + 1:
            return replace(view, axis=view.axis - 1), tap
        grown = len(view.sizes) - 1 if isinstance(view, Unflatten) else -1 if isinstance(view, Squeeze) else 0
        return view, replace(tap, axis=a + grown)
    if isinstance(view, Flatten):
        end = view.axis + len(view.sizes)
        if view.axis > a + 1:
            return replace(view, axis=view.axis - 1), tap
        if end <= a:
            return view, replace(tap, axis=a - len(view.sizes) + 1)
    return None


def as_taps(net: Network, positions: Sequence[int]) -> Optional[Network]:
    """``net`` with the index patterns at ``positions`` read as taps by the one data tensor on their pixel leg,
    or None when a pattern's pixel leg is an output leg or joins anything else."""
    entries = list(net.entries)
    for position in positions:
        k, o, i = net.entries[position].legs
        readers = [q for q in net.tensors_on(i) if q != position]
        if i in net.output or len(readers) != 1 or not isinstance(entries[readers[0]].kind, Data):
            return None
        reader = entries[readers[0]]
        if reader.legs.count(i) != 1:
            return None
        slot = reader.legs.index(i)
        legs = (*reader.legs[:slot], o, k, *reader.legs[slot + 1 :])
        views = (*reader.kind.views, Taps(slot, net.entries[position].kind))  # type: ignore[attr-defined, arg-type]
        entries[readers[0]] = Tensor(reader.name, legs, Data(views))
    return net.replace(tensors=[entry for p, entry in enumerate(entries) if p not in set(positions)])
