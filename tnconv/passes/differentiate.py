"""``differentiate``: the derivative of a network with respect to one of its tensors.

A network is multilinear in its tensors, so removing a tensor ``T`` leaves
its derivative: with ``f[out] = sum T[a] R[a, ...]`` we get
``df[out]/dT[b] = R[b, ...]``. The removed tensor's legs become output legs,
appended after ``net.output`` in the tensor's leg order:

- a leg that is not an output leg simply becomes one (it stays connected to
  the tensors it joined; it is no longer summed);
- a leg that already is an output leg, or that the tensor carries twice (a
  diagonal), gets a fresh name (``n'``) joined to the old one by an
  ``Identity`` (``df[n]/dT[n'] = delta[n, n'] ...``);
- a leg that no other tensor carries is joined to an all-ones tensor (the
  result does not depend on it).

The new legs are the tensor's *legs*, i.e. the operand seen through the
tensor's data views: the derivative with respect to ``X`` of a conv network
(``X`` has legs ``(n, g, c_in, i1, ...)`` via ``Unflatten(1, (G, C_in/G))``)
has output legs ``(..., n, g, c_in, i1, ...)``; reshape them to get the
derivative with respect to the operand's ``(N, C_in, *I)`` layout.

Where the tensor occurs several times (an operand used twice), the product
rule gives one network per occurrence and the result is a ``NetworkSum``.
Differentiating a ``NetworkSum`` differentiates each term (terms without the
tensor are zero and drop out), so second derivatives of multilinear
networks work. New legs are named after the first occurrence's legs in all
terms, so that the terms share one output.
"""

from __future__ import annotations

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import equal
from tnconv.ir.tensors import Identity, Ones
from tnconv.ir.names import fresh_name
from tnconv.passes.core import Record, Trace
from tnconv.ir.networksum import NetworkSum, Value

__all__ = ["differentiate", "differentiate_traced", "NetworkSum"]


def differentiate(net: Value, name: str) -> Value:
    """The derivative of ``net`` with respect to tensor ``name`` (every occurrence).

    See ``differentiate_traced`` (the same, with a ``Trace`` of what was done).
    """
    return differentiate_traced(net, name)[0]


def differentiate_traced(net: Value, name: str) -> tuple[Value, Trace]:
    """``(derivative, trace)``: the derivative of ``net`` with respect to tensor ``name``.

    Args:
        net: a ``Network`` or a ``NetworkSum``.
        name: the tensor to differentiate by.

    Returns:
        A ``Network`` with output ``net.output + legs of name``, or a
        ``NetworkSum`` of such networks when ``name`` occurs more than once.

    Raises:
        ValueError: ``name`` occurs nowhere, or its occurrences differ in
            kind/views or leg sizes (then "its legs" are not one thing).
    """
    if isinstance(net, NetworkSum):
        terms = net.terms
    elif isinstance(net, Network):
        terms = (net,)
    else:
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a tensor name (str), got {name!r}")
    occurrences = [(term, position) for term in terms for position in term.positions(name)]
    if not occurrences:
        names = sorted({n for term in terms for n in term.tensors})
        raise ValueError(f"unknown tensor {name!r}: the network has {names} (a derivative of zero is not represented)")
    reference_term, reference_position = occurrences[0]
    reference = reference_term.entries[reference_position]
    reference_sizes = [reference_term.size(leg) for leg in reference.legs]
    for term, position in occurrences[1:]:
        entry = term.entries[position]
        sizes = [term.size(leg) for leg in entry.legs]
        if entry.kind != reference.kind or len(sizes) != len(reference_sizes) or any(
            equal(a, b) is False for a, b in zip(sizes, reference_sizes)
        ):
            raise ValueError(
                f"occurrences of tensor {name!r} differ: {reference.legs} {reference.kind.describe()} vs "
                f"{entry.legs} {entry.kind.describe()}; its derivative would have no single leg layout"
            )
    every_leg = {leg for term in terms for leg in term.all_legs}
    temporary: list[str] = []
    for slot in range(len(reference.legs)):
        temporary.append(fresh_name(f"#d{slot}", every_leg | set(temporary)))
    pieces = [_remove(term, position, tuple(temporary)) for term, position in occurrences]
    taken = {leg for piece in pieces for leg in piece.all_legs} - set(temporary)
    final: list[str] = []
    for leg in reference.legs:
        final.append(fresh_name(leg, taken | set(final)))
    renamed = [piece.rename(dict(zip(temporary, final))) for piece in pieces]
    effect = f"remove {name}; its legs ({', '.join(reference.legs)}) become output legs ({', '.join(final)})"
    if len(renamed) > 1:
        effect += f"; product rule: a sum of {len(renamed)} networks"
    condition = f"{len(occurrences)} occurrence(s) in {len(terms)} term(s)"
    record = Record("differentiate", (name,), tuple(final), condition, effect)
    return (renamed[0] if len(renamed) == 1 else NetworkSum(renamed)), Trace((record,))


def _remove(net: Network, position: int, new_legs: tuple[str, ...]) -> Network:
    """``net`` without tensor ``position``, whose legs become output legs named ``new_legs``."""
    removed = net.entries[position]
    renames: dict[str, str] = {}
    tied: dict[str, list[str]] = {}
    for leg, new in zip(removed.legs, new_legs):
        if leg in net.output or leg in renames:
            tied.setdefault(renames.get(leg, leg), []).append(new)
        else:
            renames[leg] = new
    entries = [
        Tensor(e.name, tuple(renames.get(leg, leg) for leg in e.legs), e.kind)
        for p, e in enumerate(net.entries)
        if p != position
    ]
    names = set(net.tensors)
    for base, legs in tied.items():
        label = fresh_name(f"delta_{base}", names)
        names.add(label)
        entries.append(Tensor(label, (base, *legs), Identity()))
    carried = {leg for entry in entries for leg in entry.legs}
    loose = tuple(leg for leg in new_legs if leg not in carried)
    if loose or not entries:
        entries.append(Tensor(fresh_name("ones", names), loose, Ones()))
    sizes = {renames.get(leg, leg): size for leg, size in net.sizes.items()}
    sizes.update({new: net.size(leg) for leg, new in zip(removed.legs, new_legs)})
    return net.replace(tensors=entries, output=net.output + new_legs, sizes=sizes)
