"""A deterministic text dump of a network, for printing, diffs and tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tnconv.ir.network import Network


def dump(net: "Network") -> str:
    """One line per tensor (name, kind, legs), then leg sizes, the output and the einsum.

    Example::

        X    data           (n, i)
        W    data           (o, i)
        sizes: n=8 i=3 o=5
        output: (n, o)
        einsum: ab,cb->ac
    """
    width = max((len(e.name) for e in net.entries), default=0)
    kinds = [e.kind.describe() for e in net.entries]
    kind_width = max((len(k) for k in kinds), default=0)
    lines = [
        f"{e.name.ljust(width)}  {kind.ljust(kind_width)}  ({', '.join(e.legs)})"
        for e, kind in zip(net.entries, kinds)
    ]
    lines.append("sizes: " + " ".join(f"{leg}={size}" for leg, size in net.sizes.items()))
    lines.append(f"output: ({', '.join(net.output)})")
    lines.append(f"einsum: {net.to_einsum()}")
    return "\n".join(lines)
