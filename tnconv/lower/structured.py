"""Structured lowering: index patterns run as strided views, gathers and scatters, never dense.

A dense index pattern ``Pi[k, o, i]`` multiplies a convolution's cost by about
the input size. Each pattern is classified by how it meets the rest of the
network (``tnconv.lower.classify``) and, in a ``Lowering`` (planned by
``tnconv.lower.lowering``), run without ever being built:

- *gather*: its input leg ``i`` joins exactly one other tensor ``T`` (and not
  the output). ``T`` contracted with ``Pi`` is ``T`` with ``i`` replaced by
  ``(o, k)``: a pad (zeros, or an index map for reflect/replicate/circular)
  followed by ``Tensor.unfold`` and a dilation slice - a strided view of the
  padded ``T``. It is applied before the pairwise contraction, and the
  contraction is planned over the gathered tensor, so the planner sees the
  cost model "``X`` with ``Pi`` = ``X``'s legs with ``i -> (k, o)``".
- *fold*: ``i`` is an output leg on no other tensor and ``o`` joins other
  tensors: the rest is contracted keeping ``(k, o)``, then a scatter-add
  (``index_add``) sends each ``(k, o)`` to its pixel ``i``.
- *scatter*: otherwise, when ``o`` joins exactly one other tensor ``T`` (and
  not the output), ``T``'s ``o`` is scattered onto ``(k, i)`` before the
  contraction (the im2col of a transposed convolution, when its ``i`` meets
  another pattern as in KFAC of a transposed layer).
- anything else (a leg shared with another pattern in a way none of these
  handles, an empty pattern) is materialized densely, and ``Lowering.dense``
  names it.

A ``PatternSum`` (``sum_o Pi``, the ``(K, I)`` matrix of tap counts) whose
``i`` joins exactly one data tensor (and not the output) runs as a *window
sum* (``tnconv.lower.window_sum``): the tensor's ``i`` is reduced to the few
rows ``r`` that matter (about one pass over it, no ``(I, K)`` product) and the
pattern sum becomes the small ``(K, R)`` matrix of their weights, contracted
like any tensor. Other pattern sums are materialized and contracted like any
tensor.

Each working tensor is *prepared* (``Preparation``) before the pairwise
contraction: its gathers (one pad for all zero-padded axes, then strided
views), scatters and window sums, in that order. Two working tensors that are
the same operand prepared alike (the two copies of ``X`` in a KFAC factor) are
prepared once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from tnconv.ir.tensors import IndexPattern
from tnconv.lower.plan import Plan
from tnconv.lower.window_sum import WindowSum, apply_window_sums


@dataclass(frozen=True)
class Window:
    """An index pattern with integer hyper-parameters (what a gather or fold needs)."""

    input_size: int
    kernel_size: int
    output_size: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int
    mode: str

    @classmethod
    def of(cls, pattern: IndexPattern) -> "Window":
        return cls(
            int(pattern.input_size), int(pattern.kernel_size), int(pattern.output_size), int(pattern.stride),
            int(pattern.dilation), int(pattern.pad_left), int(pattern.pad_right), pattern.mode,
        )

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel_size - 1) + 1

    def pattern(self) -> IndexPattern:
        return IndexPattern(
            self.input_size, self.kernel_size, self.stride, self.pad_left, self.pad_right, self.dilation, self.mode
        )


@dataclass(frozen=True)
class Gather:
    """Replace leg ``i`` of a working tensor (at ``axis``) by ``o`` there and ``k`` appended last.

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
    (``apply_window_sums`` with ``split_sums``).

    ``alias`` >= 0: none of that runs; the tensor is working tensor ``alias`` once prepared
    (the same operand, read and prepared alike).
    """

    slot: int
    gathers: tuple[Gather, ...] = ()
    scatters: tuple[Fold, ...] = ()
    sums: tuple[WindowSum, ...] = ()
    alias: int = -1
    split_sums: bool = False

    def __call__(self, x: torch.Tensor, constants: Sequence[torch.Tensor]) -> torch.Tensor:
        x = apply_gathers(x, self.gathers, constants)
        for fold in self.scatters:
            selection = constants[fold.selection] if fold.selection >= 0 else None
            x = apply_fold(x, fold, constants[fold.target], selection)
        return apply_window_sums(x, self.sums, self.split_sums)


@dataclass(frozen=True)
class Lowering:
    """How a concrete network runs: working tensors, their preparations, pairwise steps, folds, a final
    permutation.

    Working slots follow the network's order, less the gathered, scattered and folded index
    patterns: each holds a data entry (``data`` gives their network positions,
    ``execute`` gets their tensors in that order) or a densely built structured tensor or window-sum
    weights (the first constants).
    """

    data: tuple[int, ...]
    sources: tuple[tuple[bool, int], ...]
    preparations: tuple[Preparation, ...]
    plan: Plan
    folds: tuple[Fold, ...]
    permutation: tuple[int, ...] | None
    constants: tuple[tuple[str, object], ...] = field(compare=False)
    flops: int
    largest_intermediate: int
    dense: tuple[str, ...]
    same: tuple[int, ...] = ()

    def make_constants(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The dense structured tensors and the window-sum weights (in ``dtype``) and the index maps
        (int64), on ``device``.

        Index maps and weights were computed when lowering (on the CPU, outside any trace), so that
        building constants under ``torch.compile`` runs no data-dependent operation.
        """
        made = []
        for what, payload in self.constants:
            if what == "dense":
                kind, shape = payload  # type: ignore[misc]
                made.append(kind.materialize(shape, dtype, device))
            elif what == "weights":
                made.append(payload.to(device=device, dtype=dtype))  # type: ignore[union-attr]
            else:
                made.append(payload.to(device))  # type: ignore[union-attr]
        return tuple(made)

    def execute(self, data: Sequence[torch.Tensor], constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run on the data entries' tensors (views applied), in ``self.data`` order."""
        working = [data[n] if is_data else constants[n] for is_data, n in self.sources]
        for preparation in self.preparations:
            slot = preparation.slot
            if preparation.alias >= 0:
                working[slot] = working[preparation.alias]
            else:
                working[slot] = preparation(working[slot], constants)
        results: list[torch.Tensor] = []
        for number, step in enumerate(self.plan.steps):
            inputs = [working[p] for p in step.positions]
            working = [t for p, t in enumerate(working) if p not in step.positions]
            earlier = self.same[number] if self.same else -1
            results.append(step(*inputs) if earlier < 0 else results[earlier])
            working.append(results[-1])
        result = working[0]
        for fold in self.folds:
            selection = constants[fold.selection] if fold.selection >= 0 else None
            result = apply_fold(result, fold, constants[fold.target], selection)
        if self.permutation is not None:
            result = result.permute(self.permutation)
        return result


# --- the operations -----------------------------------------------------------------------
def signed_pad(x: torch.Tensor, pad: Sequence[int], mode: str = "constant") -> torch.Tensor:
    """``F.pad`` (``pad`` in its order: last dim first) where negative amounts crop - also when a
    crop reaches past the other side's padding, which ``F.pad`` refuses."""
    grow = [max(amount, 0) for amount in pad]
    if any(grow):
        x = F.pad(x, grow, mode=mode)
    for n in range(len(pad) // 2):
        left, right = pad[2 * n], pad[2 * n + 1]
        if left < 0 or right < 0:
            dim = x.ndim - 1 - n
            x = x.narrow(dim, max(-left, 0), x.shape[dim] - grow[2 * n] - grow[2 * n + 1] + left + right)
    return x


def apply_gathers(x: torch.Tensor, gathers: Sequence[Gather], constants: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` with each gather applied in order (``apply_gather``), the zero padding of the axes ``x``
    has now done by one pad (one copy instead of one per axis).

    A gather can pad early when it is the first on its axis (a chained gather acts on an axis
    an earlier one produced).
    """
    early, seen = set(), set()
    for number, gather in enumerate(gathers):
        padding = gather.window.pad_left or gather.window.pad_right
        if gather.index < 0 and padding and gather.axis < x.ndim and gather.axis not in seen:
            early.add(number)
        seen.add(gather.axis)
    if early:
        pad = [0, 0] * x.ndim
        for number in early:
            gather = gathers[number]
            pad[2 * (x.ndim - 1 - gather.axis)] = gather.window.pad_left
            pad[2 * (x.ndim - 1 - gather.axis) + 1] = gather.window.pad_right
        x = signed_pad(x, pad[: 2 * (x.ndim - min(gathers[n].axis for n in early))])
    for number, gather in enumerate(gathers):
        index = constants[gather.index] if gather.index >= 0 else None
        x = apply_gather(x, gather.axis, gather.window, index, padded=number in early)
    return x


def apply_gather(
    x: torch.Tensor, axis: int, window: Window, pad_index: torch.Tensor | None, padded: bool = False
) -> torch.Tensor:
    """``x`` with axis ``axis`` (pixels ``i``) replaced by ``o`` there and ``k`` appended last.

    ``result[..., o, ..., k] = x[..., S*o + D*k - P, ...]`` (zero outside for mode zeros): a
    pad (a copy; none when there is no padding, or when ``padded`` says it is done) and then
    strided views.
    """
    if pad_index is not None:
        x = x.index_select(axis, pad_index)
    elif not padded and (window.pad_left or window.pad_right):
        x = signed_pad(x, [0, 0] * (x.ndim - 1 - axis) + [window.pad_left, window.pad_right])
    x = x.unfold(axis, window.span, window.stride)
    if window.dilation > 1:
        x = x[..., :: window.dilation]
    return x


def apply_fold(
    y: torch.Tensor, fold: Fold, target: torch.Tensor, selection: torch.Tensor | None
) -> torch.Tensor:
    """Scatter-add ``y[..., k, o]`` onto ``i = S*o + D*k - P`` (folded back for padding modes)."""
    window = fold.window
    if fold.k_axis >= 0:
        y = y.movedim((fold.k_axis, fold.o_axis), (-2, -1))
    else:
        y = y.movedim(fold.o_axis, -1).unsqueeze(-2)
        y = y.expand(*y.shape[:-2], window.kernel_size, window.output_size)
    y = y.reshape(*y.shape[:-2], window.kernel_size * window.output_size)
    if selection is not None:
        y = y.index_select(-1, selection)
    size = window.input_size * (window.kernel_size if fold.keep_k else 1)
    result = y.new_zeros(*y.shape[:-1], size).index_add(-1, target, y)
    if fold.keep_k:
        result = result.unflatten(-1, (window.kernel_size, window.input_size))
    return result


def pad_index(window: Window) -> torch.Tensor:
    """For each padded position ``j`` in ``[0, I + P_left + P_right)``, the input pixel it reads."""
    padded = window.input_size + window.pad_left + window.pad_right
    whole = IndexPattern(window.input_size, padded, 1, window.pad_left, window.pad_right, 1, window.mode)
    index, _ = whole.positions(torch.device("cpu"))
    return index[:, 0].contiguous()


def fold_target(window: Window, keep_k: bool) -> torch.Tensor:
    """For each ``(k, o)`` inside the input (flattened), its pixel ``i`` (``k * I + i`` when ``k`` is kept)."""
    index, valid = window.pattern().positions(torch.device("cpu"))
    if keep_k:
        index = index + window.input_size * torch.arange(window.kernel_size)[:, None]
    return index.flatten()[valid.flatten()].contiguous()


def fold_selection(window: Window) -> torch.Tensor:
    """The flattened ``(k, o)`` that read a pixel inside the input (zero padding drops the rest)."""
    _, valid = window.pattern().positions(torch.device("cpu"))
    return valid.flatten().nonzero().flatten()
