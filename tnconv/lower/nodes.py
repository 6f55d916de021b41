"""The plan of a concrete network as plain data: what a backend runs (``tnconv.backends.torch``).

A plan is one of:

- ``Native``: one kernel computes the whole network (``tnconv.lower.kernels``);
- ``Einsum``: the data operands are read through their views (``Read``), index
  patterns run as taps gathers, scatters, folds and window sums
  (``Preparation``, ``Fold``), the rest as pairwise steps along a path
  (``tnconv.lower.path``), with structured constants described, not built
  (``DenseTensor``, ``Weights``, ``IndexMap``);
- ``Sliced``: an einsum plan run on chunks of one leg, to bound memory;
- ``PairGram``: a pattern-pair Gram (``tnconv.lower.pair_gram``).

Every node is a frozen dataclass of ints, strings, tuples, views and kinds, so
that planning needs no torch and a plan can be compared, hashed and printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from tnconv.ir.tensors import Kind
from tnconv.ir.views import View
from tnconv.lower.cost import CostTerms
from tnconv.lower.kernels import Native
from tnconv.lower.pair_gram import PairGram
from tnconv.lower.path import Contraction
from tnconv.lower.window import Window
from tnconv.lower.window_sum import WindowSum


# --- constants: described here, built by the backend per dtype and device -------------------------


@dataclass(frozen=True)
class DenseTensor:
    """A structured tensor of kind ``kind`` built densely with ``shape``."""

    kind: Kind
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Weights:
    """Window-sum weights ``W`` (``(K, R)``, by rows: integer counts), in the operands' dtype."""

    rows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class IndexMap:
    """Integer positions (a padding mode's pixel map, a scatter's targets or selection), int64."""

    values: tuple[int, ...]


Constant = Union[DenseTensor, Weights, IndexMap]


# --- the einsum stage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """A data entry's tensor: operand number ``operand`` seen through ``views``."""

    operand: int
    views: tuple[View, ...]


@dataclass(frozen=True)
class Gather:
    """Replace leg ``i`` of a working tensor (at ``axis``) by ``o`` there and ``k`` appended last: the
    tensor read as the taps of ``window`` (the ``Taps`` view's realisation, ``k`` moved last).

    ``index`` is the constant holding the padded-position map (modes other than zeros), or -1.
    """

    axis: int
    window: Window
    index: int


@dataclass(frozen=True)
class Fold:
    """Scatter-add ``(k, o)`` of the result onto ``i``: drop ``o`` (and ``k``), append ``(k, i)`` or ``i``.

    ``k_axis`` is -1 when the result has no ``k`` (it is broadcast); ``target`` and
    ``selection`` are constant numbers (``selection`` -1 when every ``(k, o)`` is inside).
    """

    o_axis: int
    k_axis: int
    keep_k: bool
    window: Window
    target: int
    selection: int


@dataclass(frozen=True)
class Preparation:
    """What happens to working tensor ``slot`` before the pairwise contraction, in this order:
    ``gathers``, ``scatters`` (``Fold`` s whose ``o_axis`` is the host's ``o``), ``sums``
    (window sums; ``split_sums``: the first one's pieces are not joined).

    ``alias`` >= 0: none of that runs; the tensor is working tensor ``alias`` once prepared
    (the same operand, read and prepared alike).
    """

    slot: int
    gathers: tuple[Gather, ...] = ()
    scatters: tuple[Fold, ...] = ()
    sums: tuple[WindowSum, ...] = ()
    alias: int = -1
    split_sums: bool = False


@dataclass(frozen=True)
class Einsum:
    """How a concrete network runs as an einsum: working tensors, their preparations, pairwise steps,
    folds, a final permutation.

    ``reads``: one per data entry, in network order. Working slots follow the network's
    order, less the gathered, scattered and folded index patterns: ``sources[n]`` is
    ``(True, j)`` for the j-th read or ``(False, j)`` for constant j (a densely built
    structured tensor or window-sum weights). ``same[n]``: an earlier step whose result
    step n reuses, or -1 (empty: none). ``dense`` names the patterns built densely.
    """

    reads: tuple[Read, ...]
    sources: tuple[tuple[bool, int], ...]
    preparations: tuple[Preparation, ...]
    contraction: Contraction
    folds: tuple[Fold, ...]
    permutation: tuple[int, ...] | None
    constants: tuple[Constant, ...] = field(compare=False)
    flops: int
    largest_intermediate: int
    dense: tuple[str, ...]
    same: tuple[int, ...] = ()
    cost: CostTerms = field(default=CostTerms(), compare=False)
    """``flops`` and ``largest_intermediate`` as terms over leg names (``tnconv.lower.cost``)."""


@dataclass(frozen=True)
class Sliced:
    """Run ``parts`` on chunks ``(start, length, part)`` of ``leg``; concatenate on ``output_axis`` or sum (-1).

    ``reads`` as in ``Einsum`` (the parts read nothing: they get the chunks); ``axes[n]`` is
    the axis of ``leg`` in the n-th read tensor (-1 when it has none).
    """

    reads: tuple[Read, ...]
    leg: str
    axes: tuple[int, ...]
    output_axis: int
    pieces: tuple[tuple[int, int, int], ...]
    parts: tuple["Einsum | Sliced", ...]
    flops: int
    largest_intermediate: int

    @property
    def dense(self) -> tuple[str, ...]:
        return self.parts[0].dense

    def describe(self) -> str:
        """``"leg:chunks"`` for this slicing and the ones inside it, e.g. ``"n:4,c:2"``."""
        inner = self.parts[0]
        rest = f",{inner.describe()}" if isinstance(inner, Sliced) else ""
        return f"{self.leg}:{len(self.pieces)}{rest}"


Executor = Union[Einsum, Sliced]
Plan = Union[Native, PairGram, Einsum, Sliced]
