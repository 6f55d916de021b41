"""``vmap``: batch a network over a new leading leg of some of its tensors.

``vmap(net, "b", B, ["X"])`` turns ``f(X)`` into ``F[b, ...] = f(X[b])``:
every occurrence of the named tensors gets ``b`` as its first leg and the
output gets ``b`` as its first leg. One leg joining all batched tensors and
the output is exactly "the same network for each b". A data tensor's views
shift by one axis, so the user passes the operand with a leading batch axis.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, check_size
from tnconv.ir.tensors import Data
from tnconv.ir.views import View
from tnconv.passes.core import Record, Trace, termwise
from tnconv.ir.networksum import NetworkSum, Value


def vmap(net: Value, leg: str, size: Size, tensors: str | Iterable[str]) -> Value:
    """Add leg ``leg`` (size ``size``) first to every occurrence of ``tensors`` and to the output.

    See ``vmap_traced`` for the arguments and errors.
    """
    return vmap_traced(net, leg, size, tensors)[0]


def vmap_traced(net: Value, leg: str, size: Size, tensors: str | Iterable[str]) -> tuple[Value, Trace]:
    """``(batched network, trace)``: leg ``leg`` added first to every occurrence of ``tensors`` and to the output.

    Args:
        net: a ``Network`` (or a ``NetworkSum``: each term is batched).
        leg: the new leg's name (must not exist yet).
        size: its size (int or sympy expression).
        tensors: one name or several; each must be a data tensor of ``net``.

    Raises:
        ValueError: ``leg`` exists, ``tensors`` is empty or names an unknown
            or structured tensor (a structured tensor's legs are fixed by its kind).
    """
    if isinstance(net, NetworkSum):
        return termwise(lambda term: _vmap_network(term, leg, size, tensors))(net)
    if not isinstance(net, Network):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    return _vmap_network(net, leg, size, tensors)


def _vmap_network(net: Network, leg: str, size: Size, tensors: str | Iterable[str]) -> tuple[Network, Trace]:
    """``vmap_traced`` on one network (checked to be a ``Network``)."""
    if not isinstance(leg, str) or not leg:
        raise TypeError(f"leg must be a non-empty str, got {leg!r}")
    if leg in net.sizes:
        raise ValueError(f"leg {leg!r} already exists in the network (legs {net.all_legs}); pick a new name")
    size = check_size(size, f"leg {leg!r}")
    names = (tensors,) if isinstance(tensors, str) else tuple(tensors)
    if not names:
        raise ValueError("tensors must name at least one tensor to batch, got none")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"tensors must be tensor names (str), got {name!r}")
        positions = net.positions(name)
        if not positions:
            raise ValueError(f"unknown tensor {name!r} in tensors; the network has {net.tensors}")
        if any(net.entries[p].structured for p in positions):
            kind = net.entries[positions[0]].kind.label
            raise ValueError(f"tensor {name!r} is a structured {kind} tensor; only data tensors can be batched")
    batched = set(names)
    entries = [
        Tensor(e.name, (leg, *e.legs), Data(tuple(_shift(v) for v in e.views))) if e.name in batched else e
        for e in net.entries
    ]
    result = Network(entries, (leg, *net.output), {**net.sizes, leg: size})
    record = Record("vmap", names, (leg,), f"size {size}", f"add leg {leg} first to {', '.join(names)} and the output")
    return result, Trace((record,))


def _shift(view: View) -> View:
    """The same view one axis further right (a leading axis was added)."""
    return replace(view, axis=view.axis + 1)
