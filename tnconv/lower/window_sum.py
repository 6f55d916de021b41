"""Window sums: a tensor contracted with ``sum_o Pi`` (a ``PatternSum``) in about one pass over it.

``P[k, i] = sum_o Pi[k, o, i]`` (``(K, I)``) counts how often tap ``k`` reads
pixel ``i``. Contracting a tensor ``X[..., i]`` with it as a matrix product
costs ``K`` multiply-adds per element of ``X`` and, when ``i`` is not ``X``'s
last axis, a transposed copy of ``X`` first. But ``P``'s columns repeat:
away from the borders, each pixel of one residue class modulo the stride is
read by the same taps. So ``P``'s columns are cut into blocks of ``S``
consecutive pixels (``S`` the stride) and ``P = W E``:

- ``E`` (``(R, I)``, ``R = S + B``) *selects*: over the longest run
  ``[q0, q0 + Q)`` of equal blocks it sums ``X`` block by block (one reduction,
  ``S`` rows), and it reads the ``B`` other non-zero columns (the border) as
  they are. ``WindowSum`` applies it: ``X[..., i] -> X'[r, ...]``, about one
  pass over ``X`` and one allocation of ``R / I`` of its size (the border runs
  are views, copied once into the result);
- ``W`` (``(K, R)``) holds the columns of ``P`` that ``E`` kept: a small matrix
  contracted with ``X'`` like any other tensor of the network::

    (X P^T)[..., k] = sum_r W[k, r] X'[r, ...]
    X'[s, ...] = sum_{q < Q} X[..., (q0 + q)*S + s]   (s < S),   X'[S + b, ...] = X[..., border_b]

This is exact for any ``P`` (padding modes included); it is used when
``R <= I / 2``, where it reads ``X`` about once instead of multiplying it by an
``(I, K)`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class WindowSum:
    """``E`` of a window sum on axis ``axis``: ``(a.., i, b..)`` -> ``(r, a.., b..)``.

    ``start``, ``blocks``, ``stride``: the run of equal column blocks (``blocks`` 0: none),
    summed into the first ``stride`` rows of ``r``; ``runs``: the border pixels as
    ``(first, count)`` runs of consecutive pixels, the next rows.
    """

    axis: int
    start: int
    blocks: int
    stride: int
    runs: tuple[tuple[int, int], ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.pieces(x)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)

    def pieces(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The result's rows in order, unjoined: the block sums ``(S, a.., b..)`` and the border
        runs (views of ``x``)."""
        moved = x.movedim(self.axis, 0)  # (i, a.., b..), a view
        parts = []
        if self.blocks:
            run = x.narrow(self.axis, self.start, self.blocks * self.stride)
            sums = run.unflatten(self.axis, (self.blocks, self.stride)).sum(self.axis)  # (a.., S, b..)
            parts.append(sums.movedim(self.axis, 0))
        parts.extend(moved.narrow(0, first, count) for first, count in self.runs)
        return parts


def apply_window_sums(x: torch.Tensor, sums: Sequence[WindowSum], split_first: bool) -> torch.Tensor:
    """``x`` with ``sums`` applied in order (each puts its ``r`` first).

    ``split_first``: the first one's pieces (``WindowSum.pieces``) go through the others one
    by one and are joined at the end, on the axis where its ``r`` ends up. Its border runs are
    then read as views and never copied at full size; only the others' results are joined.
    That saves a copy of ``R / I`` of ``x`` and costs a few more torch calls, so it is chosen
    for large tensors.
    """
    if not split_first or len(sums) < 2:
        for window_sum in sums:
            x = window_sum(x)
        return x
    done = []
    for piece in sums[0].pieces(x):
        for window_sum in sums[1:]:
            piece = window_sum(piece)
        done.append(piece)
    return done[0] if len(done) == 1 else torch.cat(done, len(sums) - 1)


@dataclass(frozen=True)
class ColumnSplit:
    """``P = W E``: the run of ``blocks`` equal blocks of ``stride`` columns from ``start``, the
    border runs (``(first, count)``), and ``weights`` ``W`` (``(K, R)``, float64)."""

    start: int
    blocks: int
    stride: int
    runs: tuple[tuple[int, int], ...]
    weights: torch.Tensor

    @property
    def kept(self) -> int:
        """``R``: the rows of ``E`` (block sums and border pixels)."""
        return int(self.weights.shape[1])

    def selection(self, axis: int) -> WindowSum:
        """``E``, applied to axis ``axis`` of a tensor."""
        return WindowSum(axis, self.start, self.blocks, self.stride, self.runs)


def split_columns(matrix: torch.Tensor, stride: int) -> ColumnSplit | None:
    """The split of ``matrix`` (``P``, ``(K, I)``) with the longest run of equal ``stride``-blocks,
    or None when it keeps more than half of the columns (the product is then as cheap) or none
    (``P`` is zero: every tap reads padding)."""
    kernel, pixels = matrix.shape
    stride = max(1, min(stride, pixels))
    start, blocks = _longest_run(matrix, stride)
    if blocks < 2 or not matrix[:, start : start + stride].any():
        start, blocks = 0, 0
    inside = torch.zeros(pixels, dtype=torch.bool)
    inside[start : start + blocks * stride] = True
    border = ((matrix != 0).any(0) & ~inside).nonzero().flatten().tolist()
    columns = [matrix[:, start : start + stride]] if blocks else []
    columns.append(matrix[:, border])
    weights = torch.cat(columns, 1).to(torch.float64).contiguous()
    if not 0 < weights.shape[1] <= pixels // 2:
        return None
    return ColumnSplit(start, blocks, stride, _runs(border), weights)


def _runs(pixels: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted pixels as ``(first, count)`` runs of consecutive ones."""
    runs: list[list[int]] = []
    for pixel in pixels:
        if runs and runs[-1][0] + runs[-1][1] == pixel:
            runs[-1][1] += 1
        else:
            runs.append([pixel, 1])
    return tuple((first, count) for first, count in runs)


def _longest_run(matrix: torch.Tensor, stride: int) -> tuple[int, int]:
    """``(start, blocks)``: the longest run of equal consecutive column blocks of width ``stride``,
    over every alignment of the blocks (the first column of a block at ``start + q * stride``)."""
    kernel, pixels = matrix.shape
    best = (0, 0)
    for offset in range(stride):
        count = (pixels - offset) // stride
        if count < 2:
            continue
        blocks = matrix[:, offset : offset + count * stride].reshape(kernel, count, stride)
        equal = (blocks[:, 1:] == blocks[:, :-1]).all(2).all(0).tolist()
        length = 0
        for q, same in enumerate(equal + [False]):
            if same:
                length += 1
                continue
            if length + 1 > best[1]:
                best = (offset + (q - length) * stride, length + 1)
            length = 0
    return best
