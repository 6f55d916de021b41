"""One batch on its way into KFAC's running factors: what each layer got, and the checks it must pass first.

A batch is refused, before any running factor is touched, when a factor it would add is not
finite: ``check_batch`` bounds every layer's batch factors by the diagonals of their Grams
(``tnconv.curvature.factors.input_factor_diagonal`` / ``output_factor_diagonal``: one pass over a
layer's input and one over its columns, no factor-sized temporary; KFAC-reduce's from the patch sums that its
``A`` is then formed from, ``LayerBatch.with_sums``), and ``check_factors`` reads
factors that exist as tensors (a distributed batch's, after the all-reduce; a loaded state's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from tnconv.curvature.factors import Geometry, InputSums, input_factor_diagonal, input_sums, output_factor_diagonal
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
    """What one batch gives a layer: its input ``x`` (as its routines take it) and ``geometry``, and its output side:
    the ``columns`` pulled back to its output ``(M, *y.shape)`` (``update``), or the batch's output factor ``b``
    ``(G, c, c)``, formed from them as they arrived (``track``: the columns are gone by the time the batch joins);
    for KFAC-reduce, the ``sums`` of its input's patches (``with_sums``), which its ``A``, the check of ``A`` and a
    joined bias all read."""

    layer: Layer
    x: torch.Tensor
    geometry: Geometry
    columns: torch.Tensor | None = None
    b: torch.Tensor | None = None
    sums: InputSums | None = None

    @classmethod
    def pulled(cls, layer: Layer, record: Record, columns: torch.Tensor) -> LayerBatch:
        """The batch of a layer whose input ``record`` captured and whose ``columns`` were pulled back to it."""
        return cls(layer, record.x, record.geometry, columns=columns)

    def with_sums(self) -> LayerBatch:
        """This batch with the ``sums`` of its input's patches (``factors.input_sums``: one pass over the input)."""
        return replace(self, sums=input_sums(self.x, self.geometry))

    def output_diagonal(self, reduce: bool) -> torch.Tensor:
        """The diagonal ``(G, c)`` of the batch's ``B`` (before its scaling), from the columns or the formed ``b``."""
        if self.b is not None:
            return self.b.diagonal(dim1=1, dim2=2)
        assert self.columns is not None  # a batch holds one of the two
        return output_factor_diagonal(self.columns, self.geometry, reduce)


@dataclass
class Pending:
    """A rank's batches since its last all-reduce (``KFAC(distributed=True)``): their factors blended into tensors of
    its own (layer name -> ``(A, B)``, as ``KFAC._pending_blends`` weighs them), its ``samples`` and its number of
    ``batches``. ``update`` all-reduces each batch; a ``track()`` block all of its batches at once, when it ends."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    samples: int = 0
    batches: int = 0


def factor_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that a layer's factors are summed and held in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in HALF else dtype


def check_batch(batches: Sequence[LayerBatch], reduce: bool) -> None:
    """Raise a ValueError naming the first layer whose batch factor ``A`` or ``B`` would not be finite (NaN or inf
    in what it is summed from, or too large to sum in its dtype); one synchronisation for all layers."""
    fine = []
    for batch in batches:
        limit = torch.finfo(factor_dtype(batch.x.dtype)).max / HEADROOM
        fine.append(input_factor_diagonal(batch.x, batch.geometry, reduce, batch.sums).amax() <= limit)
        fine.append(batch.output_diagonal(reduce).amax() <= limit)
    if not fine:
        return
    verdicts = torch.stack(fine).tolist()
    for index, ok in enumerate(verdicts):
        if not ok:
            batch, which = batches[index // 2], index % 2
            raise ValueError(
                f"the batch's factor {FACTOR_NAMES[which]} of layer {batch.layer.name!r} is not finite (NaN or inf "
                f"in the layer's {SOURCES[which]}, or too large to sum in "
                f"{factor_dtype(batch.x.dtype)}): the batch is refused and the running factors are unchanged"
            )


def check_factors(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], message: str) -> None:
    """Raise a ValueError for the first layer of ``factors`` (layer name -> ``(A, B)``) with a NaN or inf entry:
    ``message`` formatted with the factor (``which``, "A" or "B") and the layer (``name``). One synchronisation.

    A factor is finite when its smallest and largest entries are (``torch.aminmax`` propagates NaN): one reading
    pass per factor and no temporary of its size (``isfinite`` writes a mask as large as the factor and reads it
    again, 1.1 s of an 11 s inversion of ResNet-18's factors at batch 32)."""
    names = list(factors)
    if not names:
        return
    verdicts = torch.stack([finite(factor) for name in names for factor in factors[name]]).tolist()
    for index, ok in enumerate(verdicts):
        if not ok:
            raise ValueError(message.format(which=FACTOR_NAMES[index % 2], name=names[index // 2]))


def finite(tensor: torch.Tensor) -> torch.Tensor:
    """Whether every entry of ``tensor`` (not empty) is finite, as a 0-d bool tensor: its smallest and largest entries
    are (``check_factors``)."""
    return torch.stack(torch.aminmax(tensor)).isfinite().all()


def factor_shapes(layer: Layer, joined: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The shapes of a layer's ``(A, B)``: ``(G, dA, dA)`` with ``dA = d + 1`` when the bias is ``joined`` to ``A``,
    ``(G, c, c)`` with ``c = C_out // G``."""
    groups = layer.layout.groups
    d = patch_size(layer) + joined
    per_group = layer.layout.out_channels // groups
    return (groups, d, d), (groups, per_group, per_group)
