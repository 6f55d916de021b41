"""Which structured tensors of a network run how: gathered, folded, scattered, window-summed, or dense.

See ``tnconv.lower.einsum`` for what each means. The rules look at how a
structured tensor's legs meet the other tensors; applying one changes its
host's legs, so the rules are applied repeatedly, following those changes.
"""

from __future__ import annotations

from typing import NamedTuple

from tnconv.ir.network import Network
from tnconv.ir.tensors import IndexPattern, PatternSum


class Classes(NamedTuple):
    """Network positions: ``(pattern, host)`` pairs for gathers, scatters and window sums (in the
    order they apply), and the patterns that fold the result; the other structured tensors are dense."""

    gathers: list[tuple[int, int]]
    folds: list[int]
    scatters: list[tuple[int, int]]
    sums: list[tuple[int, int]]


def classify(net: Network) -> Classes:
    """How each index pattern and pattern sum of ``net`` runs.

    Gathers are found repeatedly, following each host's legs as gathers change them, so
    that a pattern whose input leg is another pattern's output (a chain) gathers too.
    A pattern that neither gathers nor folds scatters its host's ``o`` onto ``(k, i)``
    when ``o`` joins only that host (a transposed conv's im2col met by another pattern).
    A pattern sum ``(k, i)`` is window-summed into the one data tensor its ``i`` joins.
    """
    entries = net.entries
    hosts = {p: list(e.legs) for p, e in enumerate(entries) if not isinstance(e.kind, IndexPattern)}
    patterns = [p for p, e in enumerate(entries) if isinstance(e.kind, IndexPattern)]
    pending = [p for p in patterns if len(set(entries[p].legs)) == 3 and min(net.size(l) for l in entries[p].legs) >= 1]
    stuck = [p for p in patterns if p not in pending]
    gathers: list[tuple[int, int]] = []

    def on_other_patterns(leg: str, position: int) -> bool:
        return any(leg in entries[q].legs for q in pending + stuck if q != position)

    changed = True
    while changed:
        changed = False
        for p in list(pending):
            k, o, i = entries[p].legs
            on = [q for q, legs in hosts.items() if i in legs]
            if i in net.output or len(on) != 1 or on_other_patterns(i, p):
                continue
            host = hosts[on[0]]
            if host.count(i) != 1 or k in host or o in host:
                continue
            host[host.index(i)] = o
            host.append(k)
            gathers.append((p, on[0]))
            pending.remove(p)
            changed = True
    folds = []
    for p in pending:
        k, o, i = entries[p].legs
        if any(on_other_patterns(leg, p) for leg in (k, o, i)) or i not in net.output or o in net.output:
            continue
        if any(i in legs for legs in hosts.values()) or not any(o in legs for legs in hosts.values()):
            continue
        folds.append(p)
    scatters: list[tuple[int, int]] = []
    changed = True
    while changed:
        changed = False
        for p in [q for q in pending if q not in folds]:
            k, o, i = entries[p].legs
            on = [q for q, legs in hosts.items() if o in legs]
            if o in net.output or len(on) != 1 or on_other_patterns(o, p) or on_other_patterns(k, p):
                continue
            host = hosts[on[0]]
            if host.count(o) != 1 or k in host or i in host:
                continue
            host.remove(o)
            host.extend((k, i))
            scatters.append((p, on[0]))
            pending.remove(p)
            changed = True
    sums: list[tuple[int, int]] = []
    for p, entry in enumerate(entries):
        if not isinstance(entry.kind, PatternSum) or len(set(entry.legs)) != 2:
            continue
        k, i = entry.legs
        on = [q for q, legs in hosts.items() if i in legs and q != p]
        if i in net.output or len(on) != 1 or on_other_patterns(i, p) or entries[on[0]].structured:
            continue
        host = hosts[on[0]]
        if host.count(i) != 1 or k in host or min(net.size(k), net.size(i)) < 1:
            continue
        host.remove(i)
        host.append(k)
        del hosts[p]
        sums.append((p, on[0]))
    return Classes(gathers, folds, scatters, sums)
