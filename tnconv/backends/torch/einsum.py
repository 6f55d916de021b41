"""Einsum and sliced plans (``tnconv.lower.nodes``) as torch calls, built once.

``executor(plan)`` gives ``(run, constants)``: ``run(operands, made)`` reads the
data operands through their views, prepares the working tensors (taps
gathers, scatters, window sums), runs the pairwise steps, the folds and the
final permutation; ``constants.make(dtype, device)`` builds what ``run``
takes as ``made``.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from typing_extensions import assert_never

from tnconv.backends.contraction import contraction
from tnconv.backends.torch.constants import Constants
from tnconv.backends.torch.steps import step as step_call
from tnconv.backends.torch.views import chain, taps_reader
from tnconv.lower.nodes import Einsum, Executor, Fold, Preparation, Read, Sliced
from tnconv.lower.window_sum import WindowSum

Tensors = Sequence[torch.Tensor]
Body = Callable[[Tensors, Sequence], torch.Tensor]  # (read data tensors, constants) -> result
Run = Callable[[Tensors, Sequence], torch.Tensor]  # (operands, constants) -> result


class SlicedConstants:
    """The constants of a sliced plan: one set per part."""

    def __init__(self, parts: Sequence["Constants | SlicedConstants"]) -> None:
        self._parts = tuple(parts)

    def make(self, dtype: torch.dtype, device: torch.device) -> tuple:
        return tuple(part.make(dtype, device) for part in self._parts)


def executor(plan: Executor) -> tuple[Run, Union[Constants, SlicedConstants]]:
    """``(run, constants)`` of an einsum or sliced plan (see the module docstring)."""
    read = reader(plan.reads)
    body, constants = _body(plan)
    return (lambda operands, made: body(read(operands), made)), constants


def reader(reads: Sequence[Read]) -> Callable[[Tensors], list[torch.Tensor]]:
    """The data entries' tensors from the operands: each operand seen through its views."""
    numbers = [item.operand for item in reads]
    views = [chain(item.views) for item in reads]
    if all(call is None for call in views):
        return lambda operands: [operands[n] for n in numbers]
    pairs = list(zip(numbers, views))
    return lambda operands: [operands[n] if call is None else call(operands[n]) for n, call in pairs]


def _body(plan: Executor) -> tuple[Body, Union[Constants, SlicedConstants]]:
    match plan:
        case Sliced():
            parts = [_body(part) for part in plan.parts]
            return _sliced(plan, [body for body, _ in parts]), SlicedConstants([made for _, made in parts])
        case Einsum():
            return _einsum(plan), Constants(plan.constants)
        case _:
            assert_never(plan)


def _einsum(plan: Einsum) -> Body:
    contract = contraction(plan, _preparation, step_call)
    folds = [_fold(fold) for fold in plan.folds]
    permutation = plan.permutation

    def run(data: Tensors, constants: Sequence[torch.Tensor]) -> torch.Tensor:
        result = contract(data, constants)
        for fold in folds:
            result = fold(result, constants)
        return result if permutation is None else result.permute(permutation)

    return run


def _sliced(plan: Sliced, parts: Sequence[Body]) -> Body:
    axes, pieces, output_axis = plan.axes, plan.pieces, plan.output_axis

    def run(data: Tensors, constants: Sequence) -> torch.Tensor:
        total: torch.Tensor | None = None
        chunks = []
        for start, length, part in pieces:
            narrowed = [t if axis < 0 else t.narrow(axis, start, length) for t, axis in zip(data, axes)]
            result = parts[part](narrowed, constants[part])
            if output_axis >= 0:
                chunks.append(result)
            else:
                total = result if total is None else total + result
        if output_axis >= 0:
            return torch.cat(chunks, output_axis)
        assert total is not None
        return total

    return run


def _preparation(preparation: Preparation) -> Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]:
    """A working tensor's gathers (taps, ``k`` last), scatters and window sums, in that order."""
    gathers = preparation.gathers
    indices = [gather.index for gather in gathers]
    run = [(gather.axis, gather.window) for gather in gathers]
    read = taps_reader(run, True, [index >= 0 for index in indices]) if gathers else None
    scatters = [_fold(fold) for fold in preparation.scatters]
    sums, split = preparation.sums, preparation.split_sums

    def prepare(x: torch.Tensor, constants: Sequence[torch.Tensor]) -> torch.Tensor:
        if read is not None:
            x = read(x, [constants[index] if index >= 0 else None for index in indices])
        for scatter in scatters:
            x = scatter(x, constants)
        return apply_window_sums(x, sums, split) if sums else x

    return prepare


def _fold(fold: Fold) -> Callable[[torch.Tensor, Sequence[torch.Tensor]], torch.Tensor]:
    """Scatter-add ``y[..., k, o]`` onto ``i = S*o + D*k - P`` (folded back for padding modes)."""
    window, k_axis, o_axis, keep_k = fold.window, fold.k_axis, fold.o_axis, fold.keep_k
    target, selection = fold.target, fold.selection
    kernel, outputs, size = window.kernel_size, window.output_size, window.input_size

    def scatter(y: torch.Tensor, constants: Sequence[torch.Tensor]) -> torch.Tensor:
        if k_axis >= 0:
            y = y.movedim((k_axis, o_axis), (-2, -1))
        else:
            y = y.movedim(o_axis, -1).unsqueeze(-2)
            y = y.expand(*y.shape[:-2], kernel, outputs)
        y = y.reshape(*y.shape[:-2], kernel * outputs)
        if selection >= 0:
            y = y.index_select(-1, constants[selection])
        result = y.new_zeros(*y.shape[:-1], size * (kernel if keep_k else 1)).index_add(-1, constants[target], y)
        return result.unflatten(-1, (kernel, size)) if keep_k else result

    return scatter


def window_sum(x: torch.Tensor, window: WindowSum) -> torch.Tensor:
    """``E`` of a window sum applied to axis ``window.axis`` of ``x``: ``(a.., i, b..)`` -> ``(r, a.., b..)``."""
    parts = window_pieces(x, window)
    return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


def window_pieces(x: torch.Tensor, window: WindowSum) -> list[torch.Tensor]:
    """The result's rows in order, unjoined: the block sums ``(S, a.., b..)`` and the border runs (views of ``x``)."""
    moved = x.movedim(window.axis, 0)  # (i, a.., b..), a view
    parts = []
    if window.blocks:
        run = x.narrow(window.axis, window.start, window.blocks * window.stride)
        sums = run.unflatten(window.axis, (window.blocks, window.stride)).sum(window.axis)  # (a.., S, b..)
        parts.append(sums.movedim(window.axis, 0))
    parts.extend(moved.narrow(0, first, count) for first, count in window.runs)
    return parts


def apply_window_sums(x: torch.Tensor, sums: Sequence[WindowSum], split_first: bool) -> torch.Tensor:
    """``x`` with ``sums`` applied in order (each puts its ``r`` first).

    ``split_first``: the first one's pieces (``window_pieces``) go through the others one
    by one and are joined at the end, on the axis where its ``r`` ends up. Its border runs are
    then read as views and never copied at full size; only the others' results are joined.
    That saves a copy of ``R / I`` of ``x`` and costs a few more torch calls, so it is chosen
    for large tensors.
    """
    if not split_first or len(sums) < 2:
        for item in sums:
            x = window_sum(x, item)
        return x
    done = []
    for piece in window_pieces(x, sums[0]):
        for item in sums[1:]:
            piece = window_sum(piece, item)
        done.append(piece)
    return done[0] if len(done) == 1 else torch.cat(done, len(sums) - 1)
