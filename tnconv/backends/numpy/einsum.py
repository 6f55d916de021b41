"""Einsum and sliced plans (``tnconv.lower.nodes``) as numpy calls.

``executor(plan)`` gives ``run(operands, constants)``: the data operands read
through their views, the working tensors prepared (taps gathers, scatters,
window sums), the pairwise steps run by ``numpy.einsum`` on their per-step
equations, then the folds and the final permutation. ``constants(plan, dtype)``
builds what ``run`` takes (one tuple per part of a sliced plan).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from typing_extensions import assert_never

from tnconv.backends.contraction import contraction
from tnconv.backends.numpy.arrays import chain, constant, fold, taps, window_sum
from tnconv.lower.nodes import Einsum, Executor, Preparation, Sliced
from tnconv.lower.path import Step

Arrays = Sequence[np.ndarray]
Run = Callable[[Arrays, Any], np.ndarray]


def executor(plan: Executor) -> Run:
    """``run(operands, constants)`` of an einsum or sliced plan (see the module docstring)."""
    reads = [(item.operand, chain(item.views)) for item in plan.reads]
    body = _body(plan)
    return lambda operands, made: body([view(operands[n]) for n, view in reads], made)


def constants(plan: Executor, dtype: np.dtype) -> Any:
    """The constants of ``plan`` in ``dtype``: a tuple of arrays, or for a sliced plan one such per part."""
    match plan:
        case Sliced():
            return tuple(constants(part, dtype) for part in plan.parts)
        case Einsum():
            return tuple(constant(description, dtype) for description in plan.constants)
        case _:
            assert_never(plan)


def _body(plan: Executor) -> Run:
    match plan:
        case Sliced():
            return _sliced(plan, [_body(part) for part in plan.parts])
        case Einsum():
            return _einsum(plan)
        case _:
            assert_never(plan)


def _einsum(plan: Einsum) -> Run:
    contract = contraction(plan, _preparation, _step)

    def run(data: Arrays, made: Sequence[np.ndarray]) -> np.ndarray:
        result = contract(data, made)
        for node in plan.folds:
            result = fold(result, node, made)
        return result if plan.permutation is None else result.transpose(plan.permutation)

    return run


def _step(step: Step) -> Callable[..., np.ndarray]:
    """One contraction step: ``numpy.einsum`` of its equation (pairs through BLAS where the legs allow)."""
    equation = step.equation
    return lambda *operands: np.einsum(equation, *operands, optimize=len(operands) > 1)


def _sliced(plan: Sliced, parts: Sequence[Run]) -> Run:
    def run(data: Arrays, made: Sequence[Any]) -> np.ndarray:
        results = []
        for start, length, part in plan.pieces:
            narrowed = [
                t if axis < 0 else t[(slice(None),) * axis + (slice(start, start + length),)]
                for t, axis in zip(data, plan.axes)
            ]
            results.append(parts[part](narrowed, made[part]))
        if plan.output_axis >= 0:
            return np.concatenate(results, plan.output_axis)
        return sum(results[1:], results[0])

    return run


def _preparation(preparation: Preparation) -> Callable[[np.ndarray, Sequence[np.ndarray]], np.ndarray]:
    """A working tensor's gathers (taps, ``k`` last), scatters and window sums, in that order."""

    def prepare(x: np.ndarray, made: Sequence[np.ndarray]) -> np.ndarray:
        for gather in preparation.gathers:
            x = np.moveaxis(taps(x, gather.axis, gather.window), gather.axis + 1, -1)
        for scatter in preparation.scatters:
            x = fold(x, scatter, made)
        for item in preparation.sums:
            x = window_sum(x, item)
        return x

    return prepare
