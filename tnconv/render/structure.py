"""Which legs of a network are drawn as lines, dangling legs or hyperedges with a dot.

Every tensor is a node; a leg shared by exactly two tensors is a line between
them; an open (output) leg on one tensor dangles from it; every other leg (on
three or more tensors, on two tensors and the output, on one tensor only and
summed, or twice on one tensor) is a hyperedge whose lines meet at a dot.

The drawing modules read a network through what it shows (entries with names,
legs and kinds, sizes, the output) and a tensor's kind through its ``label``:
they import nothing of ``tnconv.ir`` at run time, so that the IR can draw and
print itself (``Network.dump``, ``Network._repr_svg_``) with no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from tnconv.ir.network import Network

SHAPES = {"index_pattern": "pattern", "pattern_sum": "pattern_sum", "identity": "identity", "ones": "ones"}
"""The drawn shape of each structured kind, by its label (any other kind: ``"data"``)."""
PATTERN_ROLES = {"index_pattern": "koi", "pattern_sum": "ki"}
"""The role (``k``, ``o`` or ``i``) of each leg of a pattern kind, by its label."""


def terms_of(net: object) -> tuple[Sequence["Network"], tuple[str, ...]]:
    """The networks to draw and the output: ``(net,)`` for a network, a ``NetworkSum``'s terms; TypeError else."""
    if hasattr(net, "terms"):
        return net.terms, net.output  # type: ignore[attr-defined]
    if hasattr(net, "entries") and hasattr(net, "output"):
        return (net,), net.output  # type: ignore[return-value]
    raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")


def leg_text(net: "Network", leg: str) -> str:
    """``leg=size``, or the leg alone when its size is its own unknown symbol."""
    size = net.size(leg)
    if getattr(size, "is_Symbol", False) and size.name == leg:  # type: ignore[union-attr]
        return leg
    return f"{leg}={size}".replace(" ", "")


def node_shape(kind: object) -> str:
    """The drawn shape of a tensor kind."""
    return SHAPES.get(getattr(kind, "label", ""), "data")


def tensor_text(entry: object) -> str:
    """The text inside a tensor's node."""
    label = entry.kind.label  # type: ignore[attr-defined]
    name = entry.name  # type: ignore[attr-defined]
    return {"identity": "δ", "ones": "1", "pattern_sum": f"Σ{name}"}.get(label, name)


@dataclass(frozen=True)
class Graph:
    """The abstract drawing: node keys with shapes and texts, and one entry per line."""

    keys: tuple[str, ...]
    shapes: tuple[str, ...]
    texts: tuple[str, ...]
    lines: tuple[tuple[str, str, str], ...]  # (leg, a, b)
    lengths: tuple[float, ...]  # preferred length of each line, in graph units
    labelled: tuple[tuple[str, int], ...]  # (leg, index of the line that carries its label)
    columns: tuple[int | None, ...] = ()  # per tensor node: -1 input side, 0 pattern, +1 kernel side, None free


def structure(net: "Network") -> Graph:
    """Decide which legs are plain lines, dangling legs or hyperedges with a dot."""
    keys = [f"t{p}" for p in range(len(net.entries))]
    shapes = [node_shape(e.kind) for e in net.entries]
    texts = [tensor_text(e) for e in net.entries]
    lines: list[tuple[str, str, str]] = []
    lengths: list[float] = []
    labelled: list[tuple[str, int]] = []
    for leg in net.all_legs:
        slots = [f"t{p}" for p, e in enumerate(net.entries) for l in e.legs if l == leg]
        is_output = leg in net.output
        if is_output and len(slots) == 1:
            keys.append(f"end:{leg}")
            shapes.append("end")
            texts.append("")
            labelled.append((leg, len(lines)))
            lines.append((leg, slots[0], f"end:{leg}"))
            lengths.append(0.8)
        elif not is_output and len(slots) == 2 and slots[0] != slots[1]:
            labelled.append((leg, len(lines)))
            lines.append((leg, slots[0], slots[1]))
            both_data = all(shapes[keys.index(s)] == "data" for s in slots)
            lengths.append(2.1 if both_data else 1.3)
        else:
            dot = f"dot:{leg}"
            keys.append(dot)
            shapes.append("dot")
            texts.append("")
            first = len(lines)
            for slot in slots:
                lines.append((leg, slot, dot))
                lengths.append(1.25)
            labelled.append((leg, first))
            if is_output:
                keys.append(f"end:{leg}")
                shapes.append("end")
                texts.append("")
                labelled[-1] = (leg, len(lines))
                lines.append((leg, dot, f"end:{leg}"))
                lengths.append(0.7)
    return Graph(
        tuple(keys), tuple(shapes), tuple(texts), tuple(lines), tuple(lengths), tuple(labelled), columns(net)
    )


def columns(net: "Network") -> tuple[int | None, ...]:
    """The paper's columns of a conv network: inputs left (-1), index patterns middle (0), kernels right (+1).

    A tensor joined to a pattern's ``i`` leg is an input, one joined to its
    ``k`` leg a kernel; one joined only to ``o`` legs (an output gradient)
    goes to whichever side no input takes. Tensors not joined to a pattern,
    and every tensor of a network without patterns, get ``None`` (free).
    """
    roles: dict[str, str] = {}  # leg -> "k", "o" or "i" of the pattern carrying it
    patterns = [entry.kind.label in PATTERN_ROLES for entry in net.entries]
    for entry, pattern in zip(net.entries, patterns):
        if pattern:
            roles.update(zip(entry.legs, PATTERN_ROLES[entry.kind.label]))
    if not roles:
        return tuple(None for _ in net.entries)
    touched = [
        set() if pattern else {roles[leg] for leg in entry.legs if leg in roles}
        for entry, pattern in zip(net.entries, patterns)
    ]
    has_inputs = any("i" in roles_of for roles_of in touched)
    result: list[int | None] = []
    for pattern, roles_of in zip(patterns, touched):
        if pattern:
            result.append(0)
        elif "i" in roles_of:
            result.append(-1)
        elif "k" in roles_of:
            result.append(1)
        elif "o" in roles_of:
            result.append(1 if has_inputs else -1)
        else:
            result.append(None)
    return tuple(result)
