"""Contraction steps as fixed torch calls: ``sum``, ``permute``, ``reshape`` and ``matmul``.

``torch.einsum`` parses its equation and plans the same permutes, reshapes
and batched product on every call, which costs more than the product itself
on small tensors. A step of a plan knows its legs and sizes in advance, so it
is compiled once into a ``Pairwise`` (two operands) or ``Unary`` (one
operand) recipe:

- legs on one operand only and not kept are summed out first;
- legs on both operands and kept are the batch, legs on one operand and kept
  are its free legs, legs on both and not kept are contracted;
- each operand is permuted to ``(batch, free, contracted)`` (``(batch,
  contracted, free)`` for the second) and reshaped to 3 (or 2) axes,
  multiplied with ``torch.matmul``, and the product is split into legs and
  permuted into the step's output order.

A leg repeated on one operand (a diagonal) has no such recipe: that step
keeps its ``torch.einsum`` equation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch


@dataclass(frozen=True)
class Unary:
    """Sum axes ``summed`` out, then permute (None: already in order)."""

    summed: tuple[int, ...]
    permutation: tuple[int, ...] | None

    @property
    def identity(self) -> bool:
        return not self.summed and self.permutation is None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.summed:
            tensor = tensor.sum(self.summed)
        return tensor if self.permutation is None else tensor.permute(self.permutation)


@dataclass(frozen=True)
class Pairwise:
    """``matmul`` of two operands prepared by ``Unary`` steps and reshapes; the product split and permuted.

    Each preparation, reshape and permutation is None where it would change nothing.
    """

    first: Unary | None
    first_shape: tuple[int, ...] | None
    second: Unary | None
    second_shape: tuple[int, ...] | None
    shape: tuple[int, ...] | None
    permutation: tuple[int, ...] | None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.first is not None:
            a = self.first(a)
        if self.first_shape is not None:
            a = a.reshape(self.first_shape)
        if self.second is not None:
            b = self.second(b)
        if self.second_shape is not None:
            b = b.reshape(self.second_shape)
        result = torch.matmul(a, b)
        if self.shape is not None:
            result = result.reshape(self.shape)
        return result if self.permutation is None else result.permute(self.permutation)


def recipe(
    operands: Sequence[tuple[str, ...]], result: tuple[str, ...], sizes: Mapping[str, int]
) -> Unary | Pairwise | None:
    """The torch-call recipe of one step, or None when it needs ``torch.einsum`` (a repeated leg)."""
    if any(len(set(legs)) != len(legs) for legs in operands) or len(set(result)) != len(result):
        return None
    if len(operands) == 1:
        return _unary(operands[0], [leg for leg in operands[0] if leg in result], result)
    if len(operands) != 2:
        return None
    a, b = operands
    batch = [leg for leg in a if leg in b and leg in result]
    contracted = [leg for leg in a if leg in b and leg not in result]
    free_a = [leg for leg in a if leg not in b and leg in result]
    free_b = [leg for leg in b if leg not in a and leg in result]
    first = _unary(a, [l for l in a if l in b or l in result], (*batch, *free_a, *contracted))
    second = _unary(b, [l for l in b if l in a or l in result], (*batch, *contracted, *free_b))

    def size(legs: Sequence[str]) -> int:
        return math.prod(sizes[leg] for leg in legs)

    def changed(shape: tuple[int, ...], legs: Sequence[str]) -> tuple[int, ...] | None:
        return None if shape == tuple(sizes[leg] for leg in legs) else shape

    lead = (size(batch),) if batch else ()
    flat = [*batch, *free_a, *free_b]
    product = (*lead, size(free_a), size(free_b))
    permutation = tuple(flat.index(leg) for leg in result)
    return Pairwise(
        None if first.identity else first,
        changed((*lead, size(free_a), size(contracted)), (*batch, *free_a, *contracted)),
        None if second.identity else second,
        changed((*lead, size(contracted), size(free_b)), (*batch, *contracted, *free_b)),
        None if product == tuple(sizes[leg] for leg in flat) else tuple(sizes[leg] for leg in flat),
        None if permutation == tuple(range(len(permutation))) else permutation,
    )


def _unary(legs: tuple[str, ...], kept: list[str], order: Sequence[str]) -> Unary:
    """Sum the legs not in ``kept``, then permute the kept legs (in ``legs`` order) into ``order``."""
    summed = tuple(axis for axis, leg in enumerate(legs) if leg not in kept)
    permutation = tuple(kept.index(leg) for leg in order)
    return Unary(summed, None if permutation == tuple(range(len(permutation))) else permutation)
