"""Contraction steps as fixed recipes of ``sum``, ``permute``, ``reshape`` and ``matmul`` calls.

``torch.einsum`` parses its equation and plans the same permutes, reshapes
and batched product on every call, which costs more than the product itself
on small tensors, and its fixed layout copies large operands whose contracted
legs are not last. A step of a plan knows its legs and sizes in advance, so
it is compiled once into a ``Unary`` (one operand: sum and permute) or a
``Pairwise`` recipe (two operands, after summing legs only one of them has),
plain data that the backend turns into calls (``tnconv.backends.torch.steps``):

- legs on both operands and kept are batch legs ``L``, legs on one operand and
  kept its free legs ``M`` / ``N``, legs on both and not kept are contracted
  (``K``); the product is ``matmul`` of ``P`` as ``(L.., M, K)`` and ``Q`` as
  ``(L.., K, N)``, with size-1 axes where an operand lacks a leg of ``L``
  (broadcast), so that the free legs leading an operand can also be ``L``;
  contracted legs that lead both operands can also be ``L``, summed after the
  product (a batch of products, then a sum, instead of copying both operands);
- among a few such layouts (either operand first; contracted legs in either
  operand's order; leading free legs broadcast; in the last step, free legs
  in the output's order) the one that copies the fewest elements is chosen, assuming each working tensor is laid out in the
  order of its legs: operands whose legs already read ``(L, M, K)`` or
  ``(L, K, M)`` are only reshaped (and transposed), never copied;
- the result keeps the product's natural leg order ``(L, M, N)``, so that the
  next step sees a contiguous tensor; only the last step permutes into the
  output order.

A leg repeated on one operand (a diagonal) has no such recipe: that step
keeps its ``torch.einsum`` equation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import takewhile
from typing import Iterator, Mapping, Sequence, overload


@dataclass(frozen=True)
class Unary:
    """Sum axes ``summed`` out, then permute (None: already in order)."""

    summed: tuple[int, ...]
    permutation: tuple[int, ...] | None

    @property
    def identity(self) -> bool:
        return not self.summed and self.permutation is None


@dataclass(frozen=True)
class Operand:
    """One side of a product: sum/permute (None: nothing), reshape, then swap the last two axes or not."""

    prepare: Unary | None
    shape: tuple[int, ...]
    transpose: bool
    reshape: bool = True
    axes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = field(default=((), (), ()), compare=False)


@dataclass(frozen=True)
class Pairwise:
    """``matmul(first(P), second(Q))`` (``swap``: P is the step's second operand), split and permuted."""

    first: Operand
    second: Operand
    swap: bool
    shape: tuple[int, ...]
    permutation: tuple[int, ...] | None
    gram: bool = False
    summed: tuple[int, ...] = ()
    reshape: bool = True


Recipe = Unary | Pairwise


def recipe(
    operands: Sequence[tuple[str, ...]], keep: Sequence[str] | set[str], sizes: Mapping[str, int],
    order: tuple[str, ...] | None = None,
) -> tuple[Recipe | None, tuple[str, ...]]:
    """The recipe of one step and its result legs.

    ``keep``: the legs the result has; ``order``: their order, or None for the recipe's
    natural order. The recipe is None (the step runs as an einsum) when a leg repeats on a tensor.
    """
    kept = set(keep)
    natural: tuple[str, ...]
    if any(len(set(legs)) != len(legs) for legs in operands) or len(operands) not in (1, 2):
        natural = tuple(dict.fromkeys(leg for legs in operands for leg in legs if leg in kept))
        return None, order or natural
    if len(operands) == 1:
        natural = tuple(leg for leg in operands[0] if leg in kept)
        target = order or natural
        return _unary(operands[0], list(natural), target), target
    a, b = operands
    pa = [leg for leg in a if leg in b or leg in kept]
    pb = [leg for leg in b if leg in a or leg in kept]
    best = min(_layouts(pa, pb, kept, sizes, order), key=lambda layout: layout[0])
    _, swap, p, q, lead, free_p, contracted, free_q = best
    first = _operand(a if not swap else b, p, lead, free_p, contracted, sizes, last=False)
    second = _operand(b if not swap else a, q, lead, contracted, free_q, sizes, last=True)
    summed = tuple(axis for axis, leg in enumerate(lead) if leg not in kept)
    natural = (*(leg for leg in lead if leg in kept), *free_p, *free_q)
    target = order or natural
    permutation = tuple(natural.index(leg) for leg in target)
    identity = permutation == tuple(range(len(permutation)))
    shape = tuple(sizes[leg] for leg in natural)
    product = tuple(first.shape[:-2]) + (first.shape[-1 if first.transpose else -2],)
    product += (second.shape[-2 if second.transpose else -1],)
    product = tuple(size for axis, size in enumerate(product) if axis not in summed)
    pairwise = Pairwise(first, second, swap, shape, None if identity else permutation, summed=summed,
                        reshape=product != shape)
    return pairwise, target


def _layouts(
    pa: list[str], pb: list[str], kept: set[str], sizes: Mapping[str, int], order: tuple[str, ...] | None
) -> Iterator[tuple[int, bool, list[str], list[str], list[str], list[str], list[str], list[str]]]:
    """Candidate layouts ``(copied elements, swap, P, Q, L, M, K, N)`` of a product, in preference order.

    With a fixed result ``order`` (the last step), a product whose natural order differs is
    charged its size: its permuted view is copied by whoever needs the output contiguous.
    """
    for swap, p, q in ((False, pa, pb), (True, pb, pa)):
        batch = [leg for leg in p if leg in q and leg in kept]
        shared = [leg for leg in p if leg in q and leg not in kept]
        free_p = [leg for leg in p if leg not in q]
        free_q = [leg for leg in q if leg not in p]
        options = []
        for lead in (batch, [leg for leg in q if leg in batch]):
            for contracted in (shared, [leg for leg in q if leg in shared]):
                options.append((lead, free_p, contracted, free_q))
        for own, other, first in ((q, p, False), (p, q, True)):
            prefix = list(takewhile(lambda leg: leg not in shared, own))
            if set(batch) <= set(prefix) and any(leg not in other for leg in prefix):
                rest_free = [leg for leg in (free_q if not first else free_p) if leg not in prefix]
                contracted = [leg for leg in own if leg in shared]
                if first:
                    options.append((prefix, rest_free, contracted, free_q))
                else:
                    options.append((prefix, free_p, contracted, rest_free))
        common = [leg for leg, other in zip(p, q) if leg == other]
        common = common[: next((n for n, (x, y) in enumerate(zip(p, q)) if x != y), len(common))]
        if any(leg in shared for leg in common) and set(batch) <= set(common):
            contracted = [leg for leg in shared if leg not in common]
            options.append((common, free_p, contracted, free_q))
        if order is not None:  # free legs in the output's order: the last step then needs no permutation
            options += [(lead, _ordered(m, order), k, _ordered(n, order)) for lead, m, k, n in options]
        for lead, m, k, n in options:
            cost = _copies(p, lead, m, k, sizes) + _copies(q, lead, k, n, sizes)
            summed = [leg for leg in lead if leg in shared]
            if summed:  # the product keeps the contracted leading legs, summed afterwards
                cost += math.prod(sizes[leg] for leg in [*lead, *m, *n])
            natural = [leg for leg in [*lead, *m, *n] if leg not in shared]
            if order is not None and tuple(natural) != order:
                cost += math.prod(sizes[leg] for leg in natural)
            yield cost, swap, p, q, lead, m, k, n


def _ordered(legs: list[str], order: tuple[str, ...]) -> list[str]:
    """``legs`` sorted by their place in ``order`` (legs not in it last, in their order)."""
    return sorted(legs, key=lambda leg: order.index(leg) if leg in order else len(order))


def _copies(legs: list[str], lead: list[str], rows: list[str], columns: list[str], sizes: Mapping[str, int]) -> int:
    """Elements copied to bring an operand with ``legs`` into ``(lead, rows, columns)``.

    ``(lead, columns, rows)`` is a free transpose for a matrix, but ``matmul`` copies a
    transposed operand that has batch axes to fold them; broadcasting an operand that has
    only some of the batch legs materializes it at full batch size.
    """
    own_lead = [leg for leg in lead if leg in legs]
    size = math.prod(sizes[leg] for leg in legs)
    copied = 0
    if legs != own_lead + rows + columns and (legs != own_lead + columns + rows or own_lead):
        copied += size
    if own_lead != lead and own_lead:  # broadcast over the lead legs it lacks (a product, no division: sizes may be 0)
        copied += math.prod(sizes[leg] for leg in lead if leg not in own_lead) * size
    return copied


def _operand(
    legs: tuple[str, ...], kept: list[str], lead: list[str], rows: list[str], columns: list[str],
    sizes: Mapping[str, int], last: bool,
) -> Operand:
    """Bring an operand into ``(lead with 1s where it lacks a leg, rows, columns)`` (``rows``/``columns``
    are ``M, K`` for the first operand and ``K, N`` for the second).

    An operand that has to be copied anyway is copied into whichever of the two layouts ends
    in its longer leg (then transposed if need be): a copy runs its innermost loop along the
    last axis, and short innermost loops (a kernel leg of 2 or 3) make it several times slower.
    """
    own_lead = [leg for leg in lead if leg in kept]
    straight, swapped = own_lead + rows + columns, own_lead + columns + rows
    transpose = kept == swapped and kept != straight
    if kept not in (straight, swapped) and rows and columns:
        transpose = sizes[rows[-1]] > sizes[columns[-1]]
    order = swapped if transpose else straight
    prepare = _unary(legs, kept, order)
    outer = tuple(sizes[leg] if leg in kept else 1 for leg in lead)
    inner = (math.prod(sizes[leg] for leg in rows), math.prod(sizes[leg] for leg in columns))
    shape = (*outer, *(reversed(inner) if transpose else inner))
    axes = tuple(tuple(legs.index(leg) for leg in block) for block in (own_lead, rows, columns))
    reshape = shape != tuple(sizes[leg] for leg in order)
    prepared = None if prepare.identity else prepare
    return Operand(prepared, shape, transpose, reshape=reshape, axes=axes)  # type: ignore[arg-type]


@overload
def as_gram(calls: Pairwise) -> Pairwise: ...
@overload
def as_gram(calls: Recipe | None) -> Recipe | None: ...
def as_gram(calls: Recipe | None) -> Recipe | None:
    """``calls`` computing ``A^T A`` from one arranged operand, when both of its operands are the same
    tensor and their arrangements are transposes of each other (else ``calls`` unchanged)."""
    if not isinstance(calls, Pairwise):
        return calls
    first, second = calls.first, calls.second
    lead, rows, columns = first.axes
    summed = [operand.prepare.summed if operand.prepare is not None else () for operand in (first, second)]
    if second.axes != (lead, columns, rows) or summed[0] != summed[1] or first.shape[:-2] != second.shape[:-2]:
        return calls
    return replace(calls, gram=True)


def _unary(legs: tuple[str, ...], kept: list[str], order: Sequence[str]) -> Unary:
    """Sum the legs not in ``kept``, then permute the kept legs (in ``legs`` order) into ``order``."""
    summed = tuple(axis for axis, leg in enumerate(legs) if leg not in kept)
    permutation = tuple(kept.index(leg) for leg in order)
    return Unary(summed, None if permutation == tuple(range(len(permutation))) else permutation)
