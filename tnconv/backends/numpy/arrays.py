"""Views, taps, scatters, window sums and structured constants as numpy calls.

Taps ``(o, k)`` of an axis are read with one ``numpy.take`` of the positions the
index pattern reads (``IndexPattern.read_positions``: a padding mode's fold
already applied), a zero appended to the axis where zero padding is read: a
copy, where the torch backend makes strided views. Scatters add with
``numpy.add.at``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from typing_extensions import assert_never

from tnconv.ir.tensors import Identity, IndexPattern, Kind, Ones, PatternSum
from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View
from tnconv.lower.nodes import Constant, DenseTensor, Fold, IndexMap, Weights
from tnconv.lower.window import Window
from tnconv.lower.window_sum import WindowSum

Call = Callable[[np.ndarray], np.ndarray]


def chain(views: Sequence[View]) -> Call:
    """The callable that applies ``views`` in order."""
    calls = [_view(view) for view in views]

    def apply(array: np.ndarray) -> np.ndarray:
        for call in calls:
            array = call(array)
        return array

    return apply


def _view(view: View) -> Call:
    match view:
        case Unflatten():
            axis, sizes = view.axis, tuple(int(s) for s in view.sizes)
            return lambda array: array.reshape(array.shape[:axis] + sizes + array.shape[axis + 1 :])
        case Slice():
            start, step, count = int(view.start), int(view.step), int(view.count)
            index = (slice(None),) * view.axis + (slice(start, start + step * (count - 1) + 1, step),)
            return lambda array: array[index]
        case Squeeze():
            squeezed = view.axis
            return lambda array: array.squeeze(squeezed)
        case Flatten():
            first, count = view.axis, len(view.sizes)
            return lambda array: array.reshape(array.shape[:first] + (-1,) + array.shape[first + count :])
        case Taps():
            tapped, window = view.axis, Window.of(view.pattern)
            return lambda array: taps(array, tapped, window)
        case _:
            assert_never(view)


def taps(array: np.ndarray, axis: int, window: Window) -> np.ndarray:
    """Axis ``axis`` of ``array`` read as the taps of ``window``: ``(o, k)`` at ``(axis, axis + 1)`` (a copy)."""
    positions = np.array(window.pattern().read_positions(), dtype=np.int64).reshape(
        window.kernel_size, window.output_size
    ).T  # (o, k)
    if (positions < 0).any():  # zero padding: read an appended zero
        zero = np.zeros(array.shape[:axis] + (1,) + array.shape[axis + 1 :], dtype=array.dtype)
        array = np.concatenate([array, zero], axis)
        positions = np.where(positions < 0, window.input_size, positions)
    return np.take(array, positions, axis)


def fold(y: np.ndarray, node: Fold, constants: Sequence[np.ndarray]) -> np.ndarray:
    """Scatter-add ``y[..., k, o]`` onto ``i = S*o + D*k - P`` (folded back for padding modes): ``tnconv.lower.nodes
    .Fold``."""
    window = node.window
    kernel, outputs, size = window.kernel_size, window.output_size, window.input_size
    if node.k_axis >= 0:
        y = np.moveaxis(y, (node.k_axis, node.o_axis), (-2, -1))
    else:
        y = np.moveaxis(y, node.o_axis, -1)[..., None, :]
        y = np.broadcast_to(y, (*y.shape[:-2], kernel, outputs))
    y = y.reshape(*y.shape[:-2], kernel * outputs)
    if node.selection >= 0:
        y = np.take(y, constants[node.selection], -1)
    result = np.zeros((*y.shape[:-1], size * (kernel if node.keep_k else 1)), dtype=y.dtype)
    np.add.at(result, (..., constants[node.target]), y)  # type: ignore[arg-type]
    return result.reshape(*result.shape[:-1], kernel, size) if node.keep_k else result


def window_sum(x: np.ndarray, window: WindowSum) -> np.ndarray:
    """``E`` of a window sum applied to axis ``window.axis`` of ``x``: ``(a.., i, b..)`` -> ``(r, a.., b..)``."""
    moved = np.moveaxis(x, window.axis, 0)
    parts = []
    if window.blocks:
        run = moved[window.start : window.start + window.blocks * window.stride]
        parts.append(run.reshape(window.blocks, window.stride, *run.shape[1:]).sum(0))
    parts.extend(moved[first : first + count] for first, count in window.runs)
    return np.concatenate(parts, 0)


def dense(kind: Kind, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """The structured tensor ``kind`` with ``shape`` as a dense array."""
    shape = tuple(int(size) for size in shape)
    if isinstance(kind, Ones):
        return np.ones(shape, dtype)
    if isinstance(kind, Identity):
        result = np.zeros(shape, dtype)
        index = np.arange(shape[0])
        result[(index,) * len(shape)] = 1
        return result
    if isinstance(kind, IndexPattern):
        positions = np.array(kind.read_positions(), dtype=np.int64).reshape(shape[:2])
        result = np.zeros(shape, dtype)
        k, o = np.nonzero(positions >= 0)
        result[k, o, positions[k, o]] = 1
        return result
    if isinstance(kind, PatternSum):
        return np.array(kind.counts(), dtype=dtype).reshape(shape)
    raise TypeError(f"a {kind.label} tensor is bound by the user, not built")


def constant(description: Constant, dtype: np.dtype) -> np.ndarray:
    """A plan's constant (``tnconv.lower.nodes``) as an array: dense tensors and weights in ``dtype``, index maps
    as int64."""
    match description:
        case DenseTensor():
            return dense(description.kind, description.shape, dtype)
        case Weights():
            return np.array(description.rows, dtype=dtype)
        case IndexMap():
            return np.array(description.values, dtype=np.int64)
        case _:
            assert_never(description)
