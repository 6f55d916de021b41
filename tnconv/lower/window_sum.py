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
  they are. ``WindowSum`` describes it: ``X[..., i] -> X'[r, ...]``, about one
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


@dataclass(frozen=True)
class WindowSum:
    """``E`` of a window sum on axis ``axis``: ``(a.., i, b..)`` -> ``(r, a.., b..)``.

    ``start``, ``blocks``, ``stride``: the run of equal column blocks (``blocks`` 0: none),
    summed into the first ``stride`` rows of ``r``; ``runs``: the border pixels as
    ``(first, count)`` runs of consecutive pixels, the next rows. The backend applies it
    (``tnconv.backends.torch.einsum``): one reduction over the run and views of the border.
    """

    axis: int
    start: int
    blocks: int
    stride: int
    runs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ColumnSplit:
    """``P = W E``: the run of ``blocks`` equal blocks of ``stride`` columns from ``start``, the
    border runs (``(first, count)``), and the weights ``W`` (``(K, R)`` integer counts, by rows)."""

    start: int
    blocks: int
    stride: int
    runs: tuple[tuple[int, int], ...]
    weights: tuple[tuple[int, ...], ...]

    @property
    def kept(self) -> int:
        """``R``: the rows of ``E`` (block sums and border pixels)."""
        return len(self.weights[0])

    def selection(self, axis: int) -> WindowSum:
        """``E``, applied to axis ``axis`` of a tensor."""
        return WindowSum(axis, self.start, self.blocks, self.stride, self.runs)


def split_columns(matrix: Sequence[Sequence[int]], stride: int) -> ColumnSplit | None:
    """The split of ``matrix`` (``P``, ``(K, I)`` by rows) with the longest run of equal ``stride``-blocks,
    or None when it keeps more than half of the columns (the product is then as cheap) or none
    (``P`` is zero: every tap reads padding)."""
    columns = list(zip(*matrix))
    pixels = len(columns)
    stride = max(1, min(stride, pixels))
    start, blocks = _longest_run(columns, stride)
    if blocks < 2 or not any(any(column) for column in columns[start : start + stride]):
        start, blocks = 0, 0
    end = start + blocks * stride
    border = [i for i, column in enumerate(columns) if any(column) and not start <= i < end]
    kept = (columns[start : start + stride] if blocks else []) + [columns[i] for i in border]
    if not 0 < len(kept) <= pixels // 2:
        return None
    weights = tuple(zip(*kept))
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


def _longest_run(columns: Sequence[tuple[int, ...]], stride: int) -> tuple[int, int]:
    """``(start, blocks)``: the longest run of equal consecutive column blocks of width ``stride``,
    over every alignment of the blocks (the first column of a block at ``start + q * stride``)."""
    pixels = len(columns)
    best = (0, 0)
    for offset in range(stride):
        count = (pixels - offset) // stride
        if count < 2:
            continue
        blocks = [tuple(columns[offset + q * stride : offset + (q + 1) * stride]) for q in range(count)]
        length = 0
        for q in range(count):
            if q + 1 < count and blocks[q + 1] == blocks[q]:
                length += 1
                continue
            if length + 1 > best[1]:
                best = (offset + (q - length) * stride, length + 1)
            length = 0
    return best
