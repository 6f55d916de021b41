"""How a Gram of patches runs (KFAC-expand's input factor ``A = sum_{n,o} U U^T``), as plan nodes (no torch).

The Gram of a conv layer's patches ``U`` ``(N, G, d, T)`` is the value of the
KFAC-expand network, but a whole batch of patches is ``prod(K)`` times the
input, so the way it runs depends on its sizes and on the backend's speeds
(``tnconv.lower.target.Target``):

- ``NetworkGram``: the network's own plan runs it (``pair``: the planner chose a
  pattern-pair Gram, ``tnconv.lower.pair_gram``; else one arranged product, where the
  Gram is one product anyway - fewer than two full panels of rows - and the patches
  fit one chunk: fewer calls than patches, layout and Gram, which decide such short calls);
- ``PatchGram``: the patches of chunks of samples of about ``target.patch_chunk``
  elements (``PatchChunk``: whose memory the allocator reuses from chunk to chunk),
  each multiplied with itself by upper panels as it comes; a chunk's patches come from
  its einsum plan (strided views laid out in one copy) from ``target.views_from``
  patch elements on, else from the part's own plan (a native im2col kernel).

The same chunks serve the other products of patches (the GGN diagonal by columns or
by location pairs, chunked by the elements they form per sample: ``patch_chunks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from tnconv.lower.nodes import Plan
from tnconv.lower.pair_choice import PANEL
from tnconv.lower.pair_gram import PairGram
from tnconv.lower.target import Target


@dataclass(frozen=True)
class NetworkGram:
    """The Gram runs as its network's own plan: a pattern-pair Gram (``pair``, of ``calls`` weight-VJP calls) or
    one product (``calls`` 0)."""

    pair: bool
    calls: int = 0


@dataclass(frozen=True)
class PatchChunk:
    """Samples ``[start, stop)`` of the batch; ``views``: their patches come from the einsum plan (views, one copy),
    not from the part's own plan."""

    start: int
    stop: int
    views: bool

    @property
    def samples(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PatchGram:
    """The patches of ``chunks`` of samples, each chunk's multiplied with themselves as they come."""

    chunks: tuple[PatchChunk, ...]


GramPlan = Union[NetworkGram, PatchGram]


def patch_chunks(batch: int, per_sample: int, patch_elements: int, target: Target) -> tuple[PatchChunk, ...]:
    """The batch in chunks of samples of equal size (the last one smaller) holding about ``target.patch_chunk``
    elements at ``per_sample`` elements a sample (never less than one sample); a chunk's patches are views from
    ``target.views_from`` elements of patches (``patch_elements`` a sample) on."""
    count = min(batch, -(-batch * per_sample // target.patch_chunk))
    size = -(-batch // count)
    chunks = []
    for start in range(0, batch, size):
        stop = min(start + size, batch)
        chunks.append(PatchChunk(start, stop, (stop - start) * patch_elements >= target.views_from))
    return tuple(chunks)


def gram_plan(plan: Plan, rows: int, batch: int, patch_elements: int, target: Target) -> GramPlan:
    """How the Gram of ``rows`` (``d``) rows of patches of ``batch`` samples (``patch_elements`` a sample) runs on
    ``target``, given ``plan``, the KFAC-expand network's own plan for it (see the module docstring)."""
    if isinstance(plan, PairGram):
        return NetworkGram(pair=True, calls=plan.calls)
    if rows < 2 * PANEL and batch * patch_elements <= target.patch_chunk:
        return NetworkGram(pair=False)
    return PatchGram(patch_chunks(batch, patch_elements, patch_elements, target))
