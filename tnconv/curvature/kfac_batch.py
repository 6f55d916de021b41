"""One batch on its way into KFAC's running factors: what each layer got, and the checks it must pass first.

A batch is refused, before any running factor is touched, when a factor it would add is not
finite: ``check_batch`` bounds every layer's batch factors by the diagonals of their Grams
(``tnconv.curvature.factors.input_factor_diagonal`` / ``output_factor_diagonal``: one pass over a
layer's input and one over its columns, no factor-sized temporary), and ``check_factors`` reads
factors that exist as tensors (a distributed batch's, after the all-reduce; a loaded state's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from tnconv.curvature.factors import input_factor_diagonal, output_factor_diagonal
from tnconv.curvature.hooks import Record
from tnconv.curvature.supported import Layer, patch_size
from tnconv.routines.gram import HALF

FACTOR_NAMES = ("A", "B")
SOURCES = ("inputs", "output gradients (the columns pulled back to it)")
HEADROOM = 4
"""A Gram diagonal entry may reach ``finfo.max / HEADROOM``: off-diagonal entries, bounded by the diagonal, are then
summed with a transposed copy of themselves (``tnconv.routines.gram``) and blended into a running factor without
overflowing."""


@dataclass(frozen=True)
class LayerBatch:
    """What one batch gives a layer: its record (input, geometry) and the columns pulled back to its output."""

    layer: Layer
    record: Record
    columns: torch.Tensor


def factor_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that a layer's factors are summed and held in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in HALF else dtype


def check_batch(batches: Sequence[LayerBatch], reduce: bool) -> None:
    """Raise a ValueError naming the first layer whose batch factor ``A`` or ``B`` would not be finite (NaN or inf
    in what it is summed from, or too large to sum in its dtype); one synchronisation for all layers."""
    fine = []
    for batch in batches:
        x, geometry = batch.record.x, batch.record.geometry
        limit = torch.finfo(factor_dtype(x.dtype)).max / HEADROOM
        fine.append(input_factor_diagonal(x, geometry, reduce).amax() <= limit)
        fine.append(output_factor_diagonal(batch.columns, geometry, reduce).amax() <= limit)
    if not fine:
        return
    verdicts = torch.stack(fine).tolist()
    for index, ok in enumerate(verdicts):
        if not ok:
            batch, which = batches[index // 2], index % 2
            raise ValueError(
                f"the batch's factor {FACTOR_NAMES[which]} of layer {batch.layer.name!r} is not finite (NaN or inf "
                f"in the layer's {SOURCES[which]}, or too large to sum in "
                f"{factor_dtype(batch.record.x.dtype)}): the batch is refused and the running factors are unchanged"
            )


def check_factors(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], message: str) -> None:
    """Raise a ValueError for the first layer of ``factors`` (layer name -> ``(A, B)``) with a NaN or inf entry:
    ``message`` formatted with the factor (``which``, "A" or "B") and the layer (``name``). One synchronisation."""
    names = list(factors)
    if not names:
        return
    verdicts = torch.stack([factor.isfinite().all() for name in names for factor in factors[name]]).tolist()
    for index, ok in enumerate(verdicts):
        if not ok:
            raise ValueError(message.format(which=FACTOR_NAMES[index % 2], name=names[index // 2]))


def factor_shapes(layer: Layer, joined: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The shapes of a layer's ``(A, B)``: ``(G, dA, dA)`` with ``dA = d + 1`` when the bias is ``joined`` to ``A``,
    ``(G, c, c)`` with ``c = C_out // G``."""
    groups = layer.layout.groups
    d = patch_size(layer) + joined
    per_group = layer.layout.out_channels // groups
    return (groups, d, d), (groups, per_group, per_group)
