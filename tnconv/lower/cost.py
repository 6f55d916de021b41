"""A plan's cost as terms over leg names, so that one plan has a cost for any sizes of its legs.

The planner works on concrete sizes, but every cost it counts is a product of
leg sizes: a gather writes its host's legs, a pairwise step touches the legs
it joins (opt_einsum's ``flop_count``), a fold reads its result's legs. Kept
as ``(coefficient, legs)`` terms, the cost of a plan chosen at representative
sizes can be evaluated at the symbolic sizes of the network it came from (a
sympy expression: ``Program.flops`` of a symbolic program) or at any integers.
Legs that only the plan has (a window sum's kept rows) carry their size in
``sizes``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

import sympy

from tnconv.ir.sizes import Size

Term = tuple[int, tuple[str, ...]]
"""``coefficient * prod(size of each leg)`` (a leg listed twice counts twice)."""


@dataclass(frozen=True)
class CostTerms:
    """FLOPs as a sum of terms, the largest intermediate as the largest of its terms, and the sizes of
    the legs that only the plan has (not the network)."""

    flops: tuple[Term, ...] = ()
    largest: tuple[Term, ...] = ()
    sizes: tuple[tuple[str, int], ...] = ()

    def __add__(self, other: "CostTerms") -> "CostTerms":
        return CostTerms(self.flops + other.flops, self.largest + other.largest, self.sizes + other.sizes)

    def evaluate(self, sizes: Mapping[str, Size]) -> tuple[Size, Size]:
        """``(flops, largest intermediate)`` at leg ``sizes`` (ints give ints; sympy sizes a sympy expression)."""
        known = {**dict(self.sizes), **sizes}
        concrete = all(isinstance(known[leg], int) for _, legs in self.flops + self.largest for leg in legs)
        if concrete:
            flops = sum(c * math.prod(int(known[leg]) for leg in legs) for c, legs in self.flops)
            return flops, max((c * math.prod(int(known[leg]) for leg in legs) for c, legs in self.largest), default=0)
        flops_expr = sympy.Add(*(c * sympy.Mul(*(known[leg] for leg in legs)) for c, legs in self.flops))
        terms = list(dict.fromkeys(c * sympy.Mul(*(known[leg] for leg in legs)) for c, legs in _undominated(self.largest)))
        largest = [term for term in terms if not any(other is not term and _at_least(other, term) for other in terms)]
        return sympy.expand(flops_expr), (sympy.Max(*largest) if largest else sympy.Integer(0))


def _at_least(big: sympy.Expr, small: sympy.Expr) -> bool:
    """Whether ``big`` is a constant multiple (> 1) of ``small``: ``9*N*(H - 2)`` over ``3*N*(H - 2)``."""
    ratio = sympy.simplify(big / small)
    return bool(ratio.is_number and ratio > 1)


def _undominated(terms: tuple[Term, ...]) -> list[Term]:
    """The terms no other term bounds for all sizes >= 1 (its legs include these legs and its coefficient is
    no smaller), each once, so that ``Max`` of them reads simply."""
    unique = list(dict.fromkeys((c, tuple(sorted(legs))) for c, legs in terms))
    kept = []
    for n, (c, legs) in enumerate(unique):
        mine = Counter(legs)
        if not any(
            m != n and d >= c and not (mine - Counter(other))
            for m, (d, other) in enumerate(unique)
        ):
            kept.append((c, legs))
    return kept
