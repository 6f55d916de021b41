"""The network verifier: checks the invariants every pass must keep (run after each pass in tests)."""

from __future__ import annotations

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, equal
from tnconv.ir.tensors import Data, Identity
from tnconv.ir.views import source_labels, source_shape


class InvariantError(ValueError):
    """A network breaks an invariant of the IR."""


def verify(net: Network) -> Network:
    """Check ``net``'s invariants and return it; raise ``InvariantError`` naming the first broken one.

    Invariants: every leg has a size; the output legs are distinct and on some
    tensor; each structured tensor's leg sizes are those its kind implies
    (identity legs equal, index pattern ``(K, O, I)``); data views are
    well-formed; all occurrences of one operand need the same operand shape
    and have data kind; the graph has one edge per leg slot.
    """
    legs = {leg for entry in net.entries for leg in entry.legs}
    if set(net.sizes) != legs:
        raise InvariantError(f"sizes cover {sorted(net.sizes)} but tensors have legs {sorted(legs)}")
    if len(set(net.output)) != len(net.output) or not set(net.output) <= legs:
        raise InvariantError(f"output {net.output} must be distinct legs present on tensors")
    occurrences: dict[str, tuple[int, Tensor, tuple[Size, ...]]] = {}  # name -> its first occurrence
    for position, entry in enumerate(net.entries):
        where = f"tensor {entry.name!r} (position {position})"
        shape = tuple(net.size(leg) for leg in entry.legs)
        implied = entry.kind.implied_sizes()
        if implied is not None:
            if len(implied) != len(shape):
                raise InvariantError(f"{where} of kind {entry.kind.label} needs {len(implied)} legs, has {entry.legs}")
            for leg, have, want in zip(entry.legs, shape, implied):
                if equal(have, want) is False:
                    raise InvariantError(f"{where}: leg {leg!r} has size {have} but its kind implies {want}")
        if isinstance(entry.kind, Identity):
            if len(shape) < 2:
                raise InvariantError(f"{where}: an identity needs at least two legs, has {entry.legs}")
            if any(equal(shape[0], s) is False for s in shape[1:]):
                raise InvariantError(f"{where}: identity legs {entry.legs} have unequal sizes {shape}")
        if isinstance(entry.kind, Data):
            try:
                source = source_shape(entry.views, shape)
            except (IndexError, TypeError, ValueError) as error:
                raise InvariantError(f"{where}: views {entry.kind.views} do not fit legs {entry.legs}: {error}") from error
            first = occurrences.setdefault(entry.name, (position, entry, source))
            if first[0] != position:
                _check_same_operand(first, (position, entry, source))
        elif entry.name in occurrences or any(
            e.name == entry.name and not e.structured for e in net.entries
        ):
            raise InvariantError(f"{where}: name is shared by a data tensor and a {entry.kind.label} tensor")
    slots = sum(len(entry.legs) for entry in net.entries)
    if net.graph.number_of_edges() != slots:
        raise InvariantError(f"graph has {net.graph.number_of_edges()} edges for {slots} leg slots")
    return net


def _check_same_operand(first: tuple[int, Tensor, tuple[Size, ...]], other: tuple[int, Tensor, tuple[Size, ...]]) -> None:
    """Two occurrences of one operand are bound to one tensor: their operand shapes must agree axis by axis."""
    (position_a, entry_a, shape_a), (position_b, entry_b, shape_b) = first, other
    labels_a = source_labels(entry_a.views, entry_a.legs)
    labels_b = source_labels(entry_b.views, entry_b.legs)
    where = (
        f"operand {entry_a.name!r} is one tensor bound to every occurrence, but its occurrence at position "
        f"{position_b} has legs ({', '.join(labels_b)}) of sizes {shape_b} and the one at position {position_a} "
        f"has legs ({', '.join(labels_a)}) of sizes {shape_a}"
    )
    if len(shape_a) != len(shape_b):
        raise InvariantError(f"{where}: {len(shape_b)} axes against {len(shape_a)}")
    for axis, (a, b, leg_a, leg_b) in enumerate(zip(shape_a, shape_b, labels_a, labels_b)):
        if equal(a, b) is False:
            raise InvariantError(f"{where}: axis {axis} is leg {leg_b} of size {b} against leg {leg_a} of size {a}")
