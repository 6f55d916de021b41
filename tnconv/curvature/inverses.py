"""The damped inverses behind KFAC's preconditioner: ``(F + damping I)^{-1}`` of every factor, stacked by shape.

Each factor is symmetrised (``(F + F^T) / 2``: KFAC-reduce's dense products are symmetric to rounding
only), damped and Cholesky-factorised, and its inverse formed from the Cholesky factor
(``torch.cholesky_inverse``): about ``d^3`` multiply-adds in all, a third of them the factorisation, where an
eigen-decomposition (``torch.linalg.eigh``) costs several times that (``benchmarks/bench_preconditioner.py``).
Applying explicit inverses is two matrix products per layer, ``dB^2 dA + dB dA^2`` multiply-adds, the floor
of ``(B + damping I)^{-1} G (A + damping I)^{-1}``; a new damping costs one more inversion of the factors.

A finite factor that is not positive definite after damping (an indefinite one: the factors of a diverging
run, loaded ones) falls back, per group, to its eigen-decomposition with the eigenvalues below 0 clamped to 0,
so that its damped inverse exists; ``invert`` returns where it did, for the one warning of the preconditioner.

The inverses of the layers whose factors share a shape (and dtype and device) are held in one stacked tensor
per factor (``Stack``: the layers' groups one after another), so that the preconditioner applies them in one
batched product; a new inversion writes into the stacks of the last one when the layers are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tnconv.curvature.kfac_batch import check_factors

Pair = tuple[torch.Tensor, torch.Tensor]
StackKey = tuple[int, int, torch.dtype, torch.device]
TRANSPOSED_COPY_ROWS = 60
"""Rows from which PyTorch's 2-d copy of a transposed matrix runs by blocks (its ``copy_transpose`` path needs
``60 x 60`` elements); below, one batched copy of all groups costs fewer calls."""


@dataclass(frozen=True)
class Stack:
    """The inverses of the layers whose ``(A, B)`` share a shape, dtype and device: ``a`` ``(S, dA, dA)`` and ``b``
    ``(S, dB, dB)`` over all their groups, layer after layer; ``slots``: layer name -> the slice of its groups."""

    a: torch.Tensor
    b: torch.Tensor
    slots: dict[str, slice]


def stack_key(a: torch.Tensor, b: torch.Tensor) -> StackKey:
    """What the layers of one stack share: ``dA``, ``dB``, the dtype and the device."""
    return a.shape[-1], b.shape[-1], a.dtype, a.device


def plan(factors: Mapping[str, Pair]) -> dict[StackKey, dict[str, slice]]:
    """The stacks that ``factors`` (layer name -> ``(A, B)``) fill: their key -> layer name -> slots, in order."""
    layouts: dict[StackKey, dict[str, slice]] = {}
    for name, (a, b) in factors.items():
        slots = layouts.setdefault(stack_key(a, b), {})
        start = next(reversed(slots.values())).stop if slots else 0
        slots[name] = slice(start, start + a.shape[0])
    return layouts


def new_stacks(factors: Mapping[str, Pair], layouts: dict[StackKey, dict[str, slice]]) -> dict[StackKey, Stack]:
    """Empty stacks for ``layouts`` (``plan``), placed and typed as the factors."""
    stacks = {}
    for (d_a, d_b, dtype, device), slots in layouts.items():
        size = next(reversed(slots.values())).stop
        stacks[d_a, d_b, dtype, device] = Stack(
            torch.empty(size, d_a, d_a, dtype=dtype, device=device),
            torch.empty(size, d_b, d_b, dtype=dtype, device=device), slots,
        )  # fmt: skip
    return stacks


def invert(
    factors: Mapping[str, Pair], damping: float, stacks: dict[StackKey, Stack] | None = None
) -> tuple[dict[StackKey, Stack], list[str]]:
    """The damped inverses of ``factors`` (layer name -> ``(A, B)``, finite), written into ``stacks`` when they hold
    the same layers (else into new ones); and, for each group that needed the eigenvalue fallback, its layer,
    factor and group in words.

    A ValueError names the layer (and group) when a factor has no eigen-decomposition or its damped inverse is
    not finite in its dtype (a damping too small for the factor's scale).
    """
    layouts = plan(factors)
    if stacks is None or {key: stack.slots for key, stack in stacks.items()} != layouts:
        stacks = new_stacks(factors, layouts)
    clamped = []
    for stack in stacks.values():
        for name, slot in stack.slots.items():
            for which, factor, out in zip("AB", factors[name], (stack.a[slot], stack.b[slot])):
                groups = damped_inverse(factor, damping, out, name, which)
                clamped += [f"layer {name!r}, group {group}, factor {which}" for group in groups]
    check_factors(
        {name: (stack.a[slot], stack.b[slot]) for stack in stacks.values() for name, slot in stack.slots.items()},
        f"layer {{name!r}}: the inverse of its factor {{which}} + damping * I (damping={damping}) is not finite: "
        f"the damping is too small for the factor's scale in its dtype",
    )
    return stacks, clamped


def damped_inverse(factor: torch.Tensor, damping: float, out: torch.Tensor, layer: str, which: str) -> list[int]:
    """Write ``((F + F^T) / 2 + damping I)^{-1}`` of ``factor`` ``F`` ``(G, d, d)`` into ``out``: by Cholesky, or for a
    group where that fails (not positive definite) by the clamped eigen-decomposition; returns those groups.

    The damped factor is formed in ``out`` itself (``symmetrized_into``: no temporary of the factor's size), which
    the inverse then overwrites."""
    damped = symmetrized_into(out, factor)
    damped.diagonal(dim1=1, dim2=2).add_(damping)
    lower, info = torch.linalg.cholesky_ex(damped)
    failed = torch.nonzero(info).flatten().tolist()
    fallbacks = [clamped_inverse(damped[group], damping, layer, which, group) for group in failed]
    if failed:
        lower[failed] = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
    torch.cholesky_inverse(lower, out=out)
    for group, inverse in zip(failed, fallbacks):
        out[group] = inverse
    return failed


def symmetrized_into(out: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``out = (F + F^T) / 2`` for ``factor`` ``F`` ``(G, d, d)`` (exactly symmetric); returns ``out``.

    ``F^T`` is copied group by group where ``d >= TRANSPOSED_COPY_ROWS``: PyTorch copies a transposed matrix by
    blocks only in 2-d, and reading ``F^T`` element by element (``F + F.mT``) took 3-5 times as long as the blocked
    copy and the sum on a ``4608 x 4608`` factor (``benchmarks/RESULTS.md``, "KFAC step overheads")."""
    if factor.shape[-1] >= TRANSPOSED_COPY_ROWS:
        for target, source in zip(out, factor):
            target.copy_(source.mT)
    else:
        out.copy_(factor.mT)
    return out.add_(factor).mul_(0.5)


def clamped_inverse(damped: torch.Tensor, damping: float, layer: str, which: str, group: int) -> torch.Tensor:
    """``(F + damping I)^{-1}`` of one group's ``damped`` ``F + damping I`` ``(d, d)`` with ``F``'s eigenvalues below 0
    raised to 0: ``V diag(1 / max(l, damping)) V^T`` from ``damped = V diag(l) V^T``."""
    try:
        values, vectors = torch.linalg.eigh(damped)
    except torch.linalg.LinAlgError as error:
        raise ValueError(
            f"layer {layer!r}, group {group}: its factor {which} + damping * I has no eigen-decomposition ({error})"
        ) from None
    return (vectors / values.clamp(min=damping)) @ vectors.mT
