"""``square_patterns``: two copies of one index pattern that read the same pixel are one pattern.

``Pi[k, o, i] = [i == pad(S*o + D*k - P_left)]`` holds at most one 1 in each
``(k, o)`` row: tap ``k`` of output ``o`` reads one pixel (or padding). So two
copies of a pattern that share their ``k`` and ``o`` legs multiply to one::

    Pi[k, o, i] Pi[k, o, i'] = Pi[k, o, i] delta[i, i']

and the second copy goes, its ``i'`` renamed ``i`` on every tensor. This is
what makes the squared patches ``U[n,c,k,o]^2`` (``U = X Pi``) the patches of
the squared input: after the rewrite the two copies of ``X`` read the same
pixel, and ``simplify`` sums ``o`` on the pattern alone (``PatternSum``).
For a transposed layer the copies share ``k`` and ``i`` and differ on ``o``;
a zeros-mode pattern holds at most one 1 in each ``(k, i)`` column too
(``o = (i + P_left - D*k) / S``), padding modes that fold positions back
(reflect, replicate, circular) do not: there the rule does not fire.

The rule is not one of ``simplify``'s (``tnconv.passes.simplify.RULES``): a
derivation that squares patches runs it as a stage (``tnconv.conv.derived``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tnconv.ir.network import Network, Tensor
from tnconv.ir.networksum import Value
from tnconv.ir.tensors import IndexPattern
from tnconv.passes.core import Pass, Record, Rewrite, Trace, fixpoint
from tnconv.passes.sweep import Rule, sweep


@dataclass(frozen=True)
class _Square:
    """The pattern at ``second`` repeats the one at ``first`` on the legs they share; ``merged`` -> ``kept``."""

    first: int
    second: int
    shared: tuple[str, str]
    kept: str
    merged: str


def _match_square(net: Network, position: int) -> Optional[_Square]:
    """The first later copy of the pattern at ``position`` that shares its ``k`` leg and one of ``o``, ``i``.

    Sharing ``o``, the copy's ``i`` merges into this one's; sharing ``i`` (zeros mode only), its ``o``.
    The merged leg must be summed (not an output leg) and each pattern's three legs distinct.
    """
    entry = net.entries[position]
    if not isinstance(entry.kind, IndexPattern) or len(set(entry.legs)) != 3:
        return None
    k, o, i = entry.legs
    for other in net.tensors_on(k):
        copy = net.entries[other]
        if other <= position or copy.kind != entry.kind or len(set(copy.legs)) != 3 or copy.legs[0] != k:
            continue
        k2, o2, i2 = copy.legs
        if o2 == o and i2 != i and i2 not in net.output:
            return _Square(position, other, (k, o), i, i2)
        if i2 == i and o2 != o and o2 not in net.output and entry.kind.mode == "zeros":
            return _Square(position, other, (k, i), o, o2)
    return None


def _square(net: Network, match: _Square) -> Rewrite:
    first, second = net.entries[match.first], net.entries[match.second]
    entries = [
        Tensor(e.name, tuple(match.kept if leg == match.merged else leg for leg in e.legs), e.kind)
        for position, e in enumerate(net.entries)
        if position != match.second
    ]
    sizes = {leg: size for leg, size in net.sizes.items() if leg != match.merged}
    a, b = match.shared
    condition = f"{a}, {b} shared; each ({a}, {b}) of the pattern holds one 1 at most"
    effect = f"{first.name}[{', '.join(first.legs)}] delta[{match.kept}, {match.merged}]: rename {match.merged}->{match.kept}; drop the copy"
    return net.replace(tensors=entries, sizes=sizes), Record("pattern square", (first.name, second.name), match.shared,
                                                             condition, effect)


pattern_square: Rule[_Square] = Rule("pattern square", IndexPattern, _match_square, _square)
"""``Pi[k, o, i] Pi[k, o, i'] -> Pi[k, o, i] delta[i, i']`` (and ``o``, ``o'`` for zeros-mode copies sharing ``i``)."""

SQUARE_PATTERNS: Pass = fixpoint(sweep("square patterns", ((pattern_square,),)))


def square_patterns(net: Value) -> Value:
    """``net`` with every pair of pattern copies that read the same pixel merged (see the module docstring)."""
    return square_patterns_traced(net)[0]


def square_patterns_traced(net: Value) -> tuple[Value, Trace]:
    """``(square_patterns(net), trace)``: one ``pattern square`` record per merged copy."""
    return SQUARE_PATTERNS.traced(net)
