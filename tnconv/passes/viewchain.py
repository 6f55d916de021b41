"""Appending views to a data tensor's chain, keeping the chain short.

Rewrites add views one at a time (slice a leg, split it, squeeze a size-1
axis, merge two axes). Naively the chain grows with views that undo each
other: splitting ``i`` into ``(o, k)`` with ``K = 1`` and then squeezing
``k`` is no view at all. ``append_views`` cancels such pairs, moving a new
squeeze back past views on other axes to find its partner, so that the
program applies as few torch views as possible. Every step is exact.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional, Sequence

from tnconv.ir.sizes import product, proven_equal
from tnconv.ir.tensors import Data
from tnconv.ir.views import Flatten, Pad, Slice, Squeeze, Unflatten, View, Windows


def append_views(kind: Data, views: Iterable[View]) -> Data:
    """``kind`` with ``views`` applied after its own, simplified."""
    chain = list(kind.views)
    for view in views:
        chain = _append(chain, view)
    return Data(tuple(chain))


def _trivial(view: View) -> bool:
    if isinstance(view, Unflatten):
        return len(view.sizes) == 1
    if isinstance(view, Flatten):
        return len(view.sizes) == 1
    if isinstance(view, Pad):
        return proven_equal(view.left, 0) and proven_equal(view.right, 0)
    if isinstance(view, Slice):
        whole = proven_equal(view.count, view.source)
        return whole and proven_equal(view.start, 0) and (proven_equal(view.step, 1) or proven_equal(view.count, 1))
    return False


def _append(chain: list[View], view: View) -> list[View]:
    if _trivial(view):
        return chain
    absorbed = _absorb(chain, view)
    return absorbed if absorbed is not None else [*chain, view]


def _absorb(chain: Sequence[View], view: View) -> Optional[list[View]]:
    """``chain + [view]`` with ``view`` cancelled against an earlier view, or None when it cannot be."""
    if not chain:
        return None
    last = chain[-1]
    merged = _cancel(last, view)
    if merged is not None:
        result = list(chain[:-1])
        for item in merged:
            result = _append(result, item)
        return result
    swapped = _commute(last, view)
    if swapped is None:
        return None
    before, after = swapped
    inner = _absorb(chain[:-1], before)
    return None if inner is None else _append(inner, after)


def _cancel(last: View, view: View) -> Optional[list[View]]:
    """Views equal to ``last`` then ``view``, shorter, or None."""
    if isinstance(last, Windows) and isinstance(view, Squeeze) and view.axis == last.axis + 1:
        if proven_equal(last.size, 1):  # windows of one index: a strided slice
            return [Slice(last.axis, 0, last.step, last.count, last.source)]
    if isinstance(last, Slice) and isinstance(view, Slice) and view.axis == last.axis:
        start = last.start + last.step * view.start  # a slice of a slice is a slice
        return [Slice(last.axis, start, last.step * view.step, view.count, last.source)]
    if not isinstance(last, Unflatten):
        return None
    low, count = last.axis, len(last.sizes)
    if isinstance(view, Squeeze) and low <= view.axis < low + count:
        at = view.axis - low
        if proven_equal(last.sizes[at], 1):
            return [Unflatten(low, last.sizes[:at] + last.sizes[at + 1 :])]
    if isinstance(view, Flatten) and low <= view.axis and view.axis + len(view.sizes) <= low + count:
        at = view.axis - low
        sizes = last.sizes[:at] + (product(view.sizes),) + last.sizes[at + len(view.sizes) :]
        return [Unflatten(low, sizes)]
    return None


def _commute(last: View, view: View) -> Optional[tuple[View, View]]:
    """``(before, after)`` with ``before`` then ``after`` equal to ``last`` then ``view``, for a squeeze."""
    if not isinstance(view, Squeeze):
        return None
    axis = view.axis
    if isinstance(last, Unflatten):
        end = last.axis + len(last.sizes)
        if axis < last.axis:
            return Squeeze(axis), Unflatten(last.axis - 1, last.sizes)
        if axis >= end:
            return Squeeze(axis - len(last.sizes) + 1), last
        return None
    if isinstance(last, Windows) and axis not in (last.axis, last.axis + 1):
        if axis < last.axis:
            return Squeeze(axis), Windows(last.axis - 1, last.size, last.step, last.count, last.source)
        return Squeeze(axis - 1), last
    if isinstance(last, (Slice, Pad)) and axis != last.axis:
        return Squeeze(axis), replace(last, axis=last.axis - 1 if axis < last.axis else last.axis)
    if isinstance(last, Squeeze):
        if axis >= last.axis:
            return Squeeze(axis + 1), last
        return Squeeze(axis), Squeeze(last.axis - 1)
    return None
