"""append_views: a view chain simplified as views are appended keeps its value, and squeezes find deep partners."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.ir.tensors import Data, IndexPattern
from tnconv.backends.torch.views import apply_views
from tnconv.ir.views import Flatten, Slice, Squeeze, Taps, Unflatten, View
from tnconv.passes.viewchain import append_views, squeeze_views


@st.composite
def view_chains(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[View, ...]]:
    """A source shape with size-1 axes, and a chain of views valid on it (splits into size-1 parts, squeezes...)."""
    source = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)))
    shape = list(source)
    views: list[View] = []
    for _ in range(draw(st.integers(1, 10))):
        axis = draw(st.integers(0, len(shape) - 1))
        size = shape[axis]
        choice = draw(st.sampled_from(("unflatten", "squeeze", "slice", "taps", "flatten")))
        if choice == "unflatten":
            parts = draw(st.sampled_from(((size, 1), (1, size), (1, size, 1))))
            views.append(Unflatten(axis, parts))
            shape[axis : axis + 1] = parts
        elif choice == "squeeze" and 1 in shape and len(shape) > 1:
            axis = draw(st.sampled_from([a for a, s in enumerate(shape) if s == 1]))
            views.append(Squeeze(axis))
            del shape[axis]
        elif choice == "slice":
            start, step = draw(st.integers(0, size - 1)), draw(st.integers(1, 2))
            count = draw(st.integers(1, (size - 1 - start) // step + 1))
            views.append(Slice(axis, start, step, count, size))
            shape[axis] = count
        elif choice == "taps":
            left, right, stride, dilation = (draw(st.integers(-1, 1)) for _ in range(4))
            kernel = draw(st.integers(1, 3))
            pattern = IndexPattern(size, kernel, max(stride, 1) + 1, left, right, max(dilation, 1))
            if pattern.output_size >= 1:
                views.append(Taps(axis, pattern))
                shape[axis : axis + 1] = [pattern.output_size, kernel]
        elif choice == "flatten" and axis + 1 < len(shape):
            views.append(Flatten(axis, (shape[axis], shape[axis + 1])))
            shape[axis : axis + 2] = [shape[axis] * shape[axis + 1]]
    for _ in range(draw(st.integers(0, 3))):  # squeezes last: their partners sit deep in the chain
        ones = [a for a, s in enumerate(shape) if s == 1]
        if ones and len(shape) > 1:
            axis = draw(st.sampled_from(ones))
            views.append(Squeeze(axis))
            del shape[axis]
    return source, tuple(views)


@settings(max_examples=60, deadline=None)
@given(view_chains(), st.integers(0, 10))
def test_appending_views_one_by_one_keeps_the_value(chain: tuple[tuple[int, ...], tuple[View, ...]], cut: int) -> None:
    source, views = chain
    x = torch.arange(math.prod(source), dtype=torch.float64).reshape(source)
    expected = apply_views(views, x)
    simplified = append_views(append_views(Data(), views[:cut]), views[cut:])
    assert len(simplified.views) <= len(views)
    torch.testing.assert_close(apply_views(simplified.views, x), expected, rtol=0, atol=0)


def _final_shape(source: tuple[int, ...], views: tuple[View, ...]) -> list[int]:
    x = torch.zeros(source)
    return list(apply_views(views, x).shape)


@settings(max_examples=150, deadline=None)
@given(view_chains(), st.data())
def test_squeezes_at_once_give_the_chain_of_squeezes_one_at_a_time(
    chain: tuple[tuple[int, ...], tuple[View, ...]], data: st.DataObject
) -> None:
    """``squeeze_views`` (from the highest axis down, where the partner is the last view) equals appending the
    squeezes one by one, in ascending order of the axes they remove (each in the axes the ones before left),
    with a leg's two axes last first; and the value is kept."""
    source, views = chain
    shape = _final_shape(source, views)
    ones = [axis for axis, size in enumerate(shape) if size == 1]
    chosen = sorted(data.draw(st.lists(st.sampled_from(ones), unique=True, max_size=len(shape) - 1)) if ones and
                    len(shape) > 1 else [])
    pairs = data.draw(st.booleans()) and len(chosen) >= 2  # the first two squeezed axes as one leg's: last first
    order = [chosen[1], chosen[0], *chosen[2:]] if pairs else chosen
    squeezes = []
    for removed, axis in enumerate(order):
        before = sum(1 for earlier in order[:removed] if earlier < axis)
        squeezes.append((axis, Squeeze(axis - before)))
    one_by_one = append_views(Data(views), [view for _, view in squeezes])
    assert squeeze_views(Data(views), squeezes) == one_by_one
    x = torch.arange(math.prod(source), dtype=torch.float64).reshape(source)
    torch.testing.assert_close(apply_views(one_by_one.views, x), apply_views((*views, *(v for _, v in squeezes)), x))


def test_squeezes_of_hundreds_of_split_axes_cancel_from_the_end() -> None:
    """The ``k`` legs of 1x1 size-1 dims: every split cancelled (one step each), and the weight's squeezes kept."""
    dims = 2000
    chain = (Unflatten(1, (1, 2)), *(Unflatten(3 + 2 * d, (1, 1)) for d in range(dims)))
    squeezes = [(4 + 2 * d, Squeeze(4 + d)) for d in range(dims)]
    assert squeeze_views(Data(chain), squeezes).views == (Unflatten(1, (1, 2)),)
    weight = squeeze_views(Data((Unflatten(0, (1, 3)),)), [(3 + d, Squeeze(3)) for d in range(dims)])
    assert weight.views == (Unflatten(0, (1, 3)), *(Squeeze(3),) * dims)


def test_a_squeeze_cancels_a_deep_split_and_lowers_the_views_after_it() -> None:
    """X of a conv with 1x1 size-1 dims: squeezing k1 undoes Pi1's split; the later splits move one axis down."""
    chain = (Unflatten(1, (1, 2)), Unflatten(3, (1, 1)), Unflatten(5, (1, 1)), Unflatten(7, (1, 1)))
    assert append_views(Data(chain), [Squeeze(4)]).views == (Unflatten(1, (1, 2)), Unflatten(4, (1, 1)), Unflatten(6, (1, 1)))
    weight = (Unflatten(0, (1, 3)), Squeeze(3), Squeeze(3))  # no partner: the squeeze goes last
    assert append_views(Data(weight), [Squeeze(3)]).views == (*weight, Squeeze(3))


def test_taps_read_from_a_slice_are_read_from_its_source() -> None:
    """``unused pixels`` then ``dense``: the slice and the taps become one ``Taps`` of the source pixels."""
    cut = Slice(2, 0, 1, 28, 30)
    merged = append_views(Data((cut,)), [Taps(2, IndexPattern(28, 4, 4))])
    assert merged.views == (Taps(2, IndexPattern(30, 4, 4)),)
    strided = append_views(Data((Slice(0, 1, 2, 5, 11),)), [Taps(0, IndexPattern(5, 2, 2, 0, -1))])
    assert strided.views == (Taps(0, IndexPattern(11, 2, 4, -1, -1, 2)),)  # symmetric where it can be
    x = torch.arange(11.0)
    torch.testing.assert_close(apply_views(strided.views, x), apply_views((Slice(0, 1, 2, 5, 11), Taps(0, IndexPattern(5, 2, 2, 0, -1))), x))
    padded = Taps(0, IndexPattern(5, 2, 2, 1, 1))  # reads padding: the slice stays
    assert append_views(Data((Slice(0, 1, 2, 5, 11),)), [padded]).views == (Slice(0, 1, 2, 5, 11), padded)
