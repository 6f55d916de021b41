"""Appending views to a data tensor's chain, keeping the chain short.

Rewrites add views one at a time (slice a leg, split it, read it as taps,
squeeze a size-1 axis, merge two axes). Naively the chain grows with views
that undo each other: splitting ``i`` into ``(o, k)`` with ``K = 1`` and then
squeezing ``k`` is no view at all. ``append_views`` cancels such pairs,
moving a new squeeze back past views on other axes to find its partner, and
merges a slice with the taps read from it into one ``Taps`` view, so that
the program applies as few torch views as possible. Every step is exact.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional, Sequence

from typing_extensions import assert_never

from tnconv.ir.sizes import Size, product, proven_equal, proven_le
from tnconv.ir.tensors import Data
from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View


def append_views(kind: Data, views: Iterable[View]) -> Data:
    """``kind`` with ``views`` applied after its own, simplified."""
    chain = list(kind.views)
    for view in views:
        chain = _append(chain, view)
    return Data(tuple(chain))


def squeeze_views(kind: Data, squeezes: Sequence[tuple[int, Squeeze]]) -> Data:
    """``append_views(kind, [view for _, view in squeezes])`` for squeezes only, each given with the axis it removes
    in the axes before any of them, those ascending (but for the axes of one leg, last first): the same chain,
    in one step per squeeze where it can be.

    Appended one at a time, squeezes in ascending order each cancel against a view deep in the
    chain and rebuild every view after it (the ``k`` legs of hundreds of 1x1 dims: quadratic).
    Taken from the highest axis down, such a squeeze cancels against the chain's last view, and
    the chain comes out the same: a squeeze cancels against the view that made its axis whatever
    the order (the views after that one are passed alike), a cancellation that only removes a
    size-1 part of the last view changes no other view, and a squeeze with no partner at all is
    appended, as it is, after the chain (in ascending order, the cancellations after it are of
    higher axes, which leave its axis alone). Where a squeeze does anything else (a partner
    before the last view), the squeezes are appended one at a time.
    """
    chain = list(kind.views)
    kept = set()
    for original, view in sorted(squeezes, key=lambda item: item[0], reverse=True):
        step = _squeeze_past(chain[-1], original) if chain else None
        if isinstance(step, list):
            chain.pop()
            for item in step:
                chain = _append(chain, item)
        elif _absorb_squeeze(chain, original) is None:
            kept.add(original)
        else:
            return append_views(kind, [view for _, view in squeezes])
    lowest: int | None = None  # the lowest axis cancelled later in the order than the squeeze at hand
    for original, _ in reversed(squeezes):
        if original not in kept:
            lowest = original if lowest is None else min(lowest, original)
        elif lowest is not None and lowest < original:  # it would lower the kept one (one leg's axes come last
            return append_views(kind, [view for _, view in squeezes])  # first)
    return Data((*chain, *(view for original, view in squeezes if original in kept)))


def _trivial(view: View) -> bool:
    match view:
        case Unflatten() | Flatten():
            return len(view.sizes) == 1
        case Slice():
            whole = proven_equal(view.count, view.source)
            return whole and proven_equal(view.start, 0) and (proven_equal(view.step, 1) or proven_equal(view.count, 1))
        case Squeeze() | Taps():
            return False
        case _:
            assert_never(view)


def _append(chain: list[View], view: View) -> list[View]:
    """``chain`` (owned by the caller, extended in place) with ``view`` after it, simplified."""
    if _trivial(view):
        return chain
    absorbed = _absorb(chain, view)
    if absorbed is not None:
        return absorbed
    chain.append(view)
    return chain


def _absorb(chain: Sequence[View], view: View) -> Optional[list[View]]:
    """``chain + [view]`` with ``view`` cancelled against an earlier view, or None when it cannot be."""
    if isinstance(view, Squeeze):
        return _absorb_squeeze(chain, view.axis)
    merged = _merge(chain[-1], view) if chain else None
    if merged is None:
        return None
    result = list(chain[:-1])
    for item in merged:
        result = _append(result, item)
    return result


def _absorb_squeeze(chain: Sequence[View], axis: int) -> Optional[list[View]]:
    """``chain`` then a squeeze of ``axis``, the squeeze cancelled against an earlier view, or None.

    The squeeze cancels against the last view, or moves before it and tries
    the one before that, and so on. The walk only tracks the squeezed axis;
    the views it moved past are rebuilt (one axis lower where the squeezed
    axis preceded theirs) once a partner is found, so a failed walk builds
    nothing. (Walks are long on tensors with hundreds of size-1 legs.)
    """
    before: list[int] = []  # the squeezed axis just before chain[-1], chain[-2], ...
    for index in range(len(chain) - 1, -1, -1):
        last = chain[index]
        if type(last) is Squeeze:  # inline ``_squeeze_past`` for the long runs of squeezes
            axis = axis + 1 if axis >= last.axis else axis
            before.append(axis)
            continue
        step = _squeeze_past(last, axis)
        if step is None:
            return None
        if isinstance(step, int):
            axis = step
            before.append(axis)
            continue
        result = list(chain[:index])
        for item in step:
            result = _append(result, item)
        before.reverse()  # now in chain order: the squeezed axis just before chain[index + 1], ...
        for past, axis in zip(chain[index + 1 :], before):
            if axis < past.axis:
                past = _lowered(past)
            if isinstance(past, _NEVER_ABSORBED):  # was in the chain: not trivial either
                result.append(past)
            else:
                result = _append(result, past)
        return result
    return None


def _squeeze_past(last: View, axis: int) -> int | list[View] | None:
    """A squeeze of ``axis`` after ``last``: the views the two cancel into, or its axis before ``last``, or None.

    None means neither: the squeeze cannot move past ``last``. ``last`` itself
    reads one axis lower once the squeeze moved before it, when the squeezed
    axis lies before its own.
    """
    if type(last) is Squeeze:  # first: runs of squeezes make the long walks
        return axis + 1 if axis >= last.axis else axis
    match last:
        case Unflatten():
            end = last.axis + len(last.sizes)
            if axis < last.axis:
                return axis
            if axis >= end:
                return axis - len(last.sizes) + 1
            at = axis - last.axis
            if proven_equal(last.sizes[at], 1):
                return [Unflatten(last.axis, last.sizes[:at] + last.sizes[at + 1 :])]
            return None
        case Taps():  # its legs are pattern legs, never squeezed: move past only
            if axis in (last.axis, last.axis + 1):
                return None
            return axis if axis < last.axis else axis - 1
        case Slice():
            return None if axis == last.axis else axis
        case Squeeze() | Flatten():
            return None
        case _:
            assert_never(last)


_NEVER_ABSORBED = (Unflatten, Taps)  # views that no earlier view cancels (only squeezes, slices, flattens can)


def _lowered(view: View) -> View:
    """``view`` one axis lower."""
    if type(view) is Unflatten:  # the common case, built directly (``replace`` costs twice as much)
        return Unflatten(view.axis - 1, view.sizes)
    return replace(view, axis=view.axis - 1)


def _merge(last: View, view: View) -> Optional[list[View]]:
    """Views equal to ``last`` then ``view`` (not a squeeze), shorter, or None."""
    if isinstance(last, Slice) and isinstance(view, Slice) and view.axis == last.axis:
        start = last.start + last.step * view.start  # a slice of a slice is a slice
        return [Slice(last.axis, start, last.step * view.step, view.count, last.source)]
    if isinstance(last, Unflatten) and isinstance(view, Flatten):
        low, count = last.axis, len(last.sizes)
        if low <= view.axis and view.axis + len(view.sizes) <= low + count:
            at = view.axis - low
            sizes = last.sizes[:at] + (product(view.sizes),) + last.sizes[at + len(view.sizes) :]
            return [Unflatten(low, sizes)]
    if isinstance(last, Slice) and isinstance(view, Taps) and view.axis == last.axis:
        merged = _taps_of_slice(last, view)
        return None if merged is None else [merged]
    return None


def _taps_of_slice(cut: Slice, taps: Taps) -> Optional[Taps]:
    """The taps ``taps`` reads from slice ``cut``, read from the slice's source instead, when they read no padding.

    Pixel ``j`` of the slice is ``start + step*j`` of the source, so the pattern
    ``S*o + D*k - P`` becomes ``(step*S)*o + (step*D)*k - (step*P - start)``; its right
    padding is chosen so that it keeps ``O`` outputs (equal to the left one where it can).
    """
    p = taps.pattern
    first, last = -p.pad_left, p.stride * (p.output_size - 1) + p.dilation * (p.kernel_size - 1) - p.pad_left
    if not (proven_le(0, first) and proven_le(last, cut.count - 1)):
        return None
    stride, dilation, left = cut.step * p.stride, cut.step * p.dilation, cut.step * p.pad_left - cut.start
    least = stride * (p.output_size - 1) + dilation * (p.kernel_size - 1) + 1 - cut.source - left
    right: Size = left if proven_le(least, left) and proven_le(left, least + stride - 1) else least
    pattern = replace(p, input_size=cut.source, stride=stride, pad_left=left, pad_right=right, dilation=dilation)
    return Taps(taps.axis, pattern)
