"""The network verifier: checks the invariants every pass must keep (run after each pass in tests)."""

from __future__ import annotations

from tnconv.ir.network import Network
from tnconv.ir.sizes import equal
from tnconv.ir.tensors import Data, Identity
from tnconv.ir.views import source_shape


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
    operand_shapes: dict[str, tuple] = {}
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
                source = source_shape(entry.kind.views, shape)
            except (IndexError, TypeError) as error:
                raise InvariantError(f"{where}: views {entry.kind.views} do not fit legs {entry.legs}") from error
            previous = operand_shapes.setdefault(entry.name, source)
            if len(previous) != len(source) or any(equal(a, b) is False for a, b in zip(previous, source)):
                raise InvariantError(f"{where}: operand shape {source} differs from another occurrence's {previous}")
        elif entry.name in operand_shapes or any(
            e.name == entry.name and not e.structured for e in net.entries
        ):
            raise InvariantError(f"{where}: name is shared by a data tensor and a {entry.kind.label} tensor")
    slots = sum(len(entry.legs) for entry in net.entries)
    if net.graph.number_of_edges() != slots:
        raise InvariantError(f"graph has {net.graph.number_of_edges()} edges for {slots} leg slots")
    return net
