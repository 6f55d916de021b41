"""``fuse``: put a network in the place of a tensor.

``fuse(outer, "T", inner)`` replaces every occurrence of tensor ``T`` by a
copy of ``inner``: inner's output legs bind, in order, to that occurrence's
legs (two output legs bound to one repeated leg take inner's diagonal, as
``T[a, a]`` does); inner's other legs are summed inside the copy and get
fresh names (``v'``) where they clash with a leg of ``outer`` or of another
copy. Tensor names of ``inner`` are kept, so a data tensor named like one of
``outer`` is the same operand; a structured inner tensor whose name is a data
name of ``outer`` is renamed.

Sizes: an inner output leg whose size is a bare symbol takes the size of the
leg it binds to (``from_einsum`` networks without sizes fuse into concrete
ones); other sizes must be provably equal.
"""

from __future__ import annotations

import sympy

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, equal
from tnconv.ir.names import fresh_name
from tnconv.passes.core import Record, Trace
from tnconv.ir.networksum import NetworkSum, Value


def fuse(outer: Value, name: str, inner: Value) -> Value:
    """``outer`` with every occurrence of tensor ``name`` replaced by a copy of ``inner``.

    See ``fuse_traced`` (the same, with a ``Trace``) for details and errors.
    """
    return fuse_traced(outer, name, inner)[0]


def fuse_traced(outer: Value, name: str, inner: Value) -> tuple[Value, Trace]:
    """``(fused, trace)``: ``outer`` with every occurrence of tensor ``name`` replaced by a copy of ``inner``.

    A ``NetworkSum`` on either side gives the sum of the fused terms: the result is linear in
    ``outer``, and a product of sums in ``inner`` where ``name`` occurs more than once (each
    occurrence takes each term of ``inner`` in turn, so the cross terms are there).

    Raises:
        ValueError: ``name`` is not a tensor of ``outer``; inner's output has
            a different number of legs than the tensor; sizes differ or cannot
            be proven equal.
    """
    if isinstance(outer, NetworkSum):
        return _sum([fuse_traced(term, name, inner) for term in outer.terms])
    if isinstance(inner, NetworkSum):
        if isinstance(outer, Network) and len(outer.positions(name)) > 1:
            return _each_occurrence(outer, name, inner)
        return _sum([fuse_traced(outer, name, term) for term in inner.terms])
    for label, value in (("outer", outer), ("inner", inner)):
        if not isinstance(value, Network):
            raise TypeError(f"{label} must be a tnconv.Network or NetworkSum, got {type(value).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a tensor name (str), got {name!r}")
    positions = outer.positions(name)
    if not positions:
        raise ValueError(f"unknown tensor {name!r}; outer has {outer.tensors}")
    data_names = {e.name for e in outer.entries if not e.structured and e.name != name}
    entries: list[Tensor] = []
    sizes: dict[str, Size] = dict(outer.sizes)
    taken = set(outer.all_legs)
    renamed: dict[str, str] = {}
    for position, entry in enumerate(outer.entries):
        if position not in positions:
            entries.append(entry)
            continue
        copy = _bind(entry, [outer.size(leg) for leg in entry.legs], inner)
        legs = dict(zip(copy.output, entry.legs))
        for leg in copy.all_legs:
            if leg not in legs:
                legs[leg] = fresh_name(leg, taken)
                taken.add(legs[leg])
                sizes[legs[leg]] = copy.size(leg)
                if legs[leg] != leg:
                    renamed[leg] = legs[leg]
        names = {e.name for e in entries} | set(outer.tensors)
        for inner_entry in copy.entries:
            label = inner_entry.name
            if inner_entry.structured and label in data_names:
                label = fresh_name(label, names | data_names)
            entries.append(Tensor(label, tuple(legs[leg] for leg in inner_entry.legs), inner_entry.kind))
    binding = ", ".join(f"{a}->{b}" for a, b in zip(inner.output, outer.legs(positions[0])))
    effect = f"replace {len(positions)} occurrence(s) of {name} by ({', '.join(inner.tensors)})"
    if renamed:
        effect += "; inner legs renamed " + ", ".join(f"{a}->{b}" for a, b in renamed.items())
    record = Record("fuse", (name,), tuple(outer.legs(positions[0])), f"inner output binds {binding}", effect)
    return outer.replace(tensors=entries, sizes=sizes), Trace((record,))


def _each_occurrence(outer: Network, name: str, inner: NetworkSum) -> tuple[Value, Trace]:
    """``fuse_traced`` of a sum ``inner`` into the several occurrences of ``name``: each occurrence is renamed
    apart (a name of neither network) and fused on its own, so that their product of sums is expanded."""
    taken = {*outer.tensors, *(label for term in inner.terms for label in term.tensors)}
    apart: list[str] = []
    entries = []
    for entry in outer.entries:
        if entry.name == name:
            apart.append(fresh_name(name, taken))
            taken.add(apart[-1])
            entry = Tensor(apart[-1], entry.legs, entry.kind)
        entries.append(entry)
    result: Value = outer.replace(tensors=entries)
    records: list[Record] = []
    for label in apart:
        result, trace = fuse_traced(result, label, inner)
        records.extend(trace)
    return result, Trace(records)


def _bind(entry: Tensor, shape: list[Size], inner: Network) -> Network:
    """``inner`` with output sizes matched to ``shape`` (bare symbols substituted); checks counts and sizes."""
    if len(inner.output) != len(entry.legs):
        raise ValueError(
            f"inner has {len(inner.output)} output legs {inner.output} but tensor {entry.name!r} "
            f"has {len(entry.legs)} legs {entry.legs}"
        )
    values: dict[sympy.Symbol, Size] = {}
    for leg, size in zip(inner.output, shape):
        have = inner.size(leg)
        if isinstance(have, sympy.Symbol) and equal(have, size) is not True:
            if have in values and equal(values[have], size) is not True:
                raise ValueError(f"inner size symbol {have} would have to be both {values[have]} and {size}")
            values[have] = size
    bound = inner.substitute(values) if values else inner
    for leg, outer_leg, size in zip(bound.output, entry.legs, shape):
        if equal(bound.size(leg), size) is not True:
            raise ValueError(
                f"inner output leg {leg!r} has size {bound.size(leg)} but tensor {entry.name!r} leg "
                f"{outer_leg!r} has size {size}"
            )
    return bound


def _sum(results: list[tuple[Value, Trace]]) -> tuple[NetworkSum, Trace]:
    """The sum of the terms of several results (networks or sums), and their traces joined."""
    terms: list[Network] = []
    for value, _ in results:
        terms.extend(value.terms if isinstance(value, NetworkSum) else (value,))
    return NetworkSum(terms), Trace(record for _, trace in results for record in trace)

