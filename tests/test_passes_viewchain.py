"""append_views: a view chain simplified as views are appended keeps its value, and squeezes find deep partners."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.ir.tensors import Data
from tnconv.ir.views import Flatten, Pad, Slice, Squeeze, Unflatten, View, Windows, apply_views
from tnconv.passes.viewchain import append_views


@st.composite
def view_chains(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[View, ...]]:
    """A source shape with size-1 axes, and a chain of views valid on it (splits into size-1 parts, squeezes...)."""
    source = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)))
    shape = list(source)
    views: list[View] = []
    for _ in range(draw(st.integers(1, 10))):
        axis = draw(st.integers(0, len(shape) - 1))
        size = shape[axis]
        choice = draw(st.sampled_from(("unflatten", "squeeze", "slice", "windows", "flatten", "pad")))
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
        elif choice == "windows":
            width, step = draw(st.integers(1, size)), draw(st.integers(1, 2))
            count = (size - width) // step + 1
            views.append(Windows(axis, width, step, count, size))
            shape[axis : axis + 1] = [count, width]
        elif choice == "flatten" and axis + 1 < len(shape):
            views.append(Flatten(axis, (shape[axis], shape[axis + 1])))
            shape[axis : axis + 2] = [shape[axis] * shape[axis + 1]]
        elif choice == "pad":
            left, right = draw(st.integers(0, 1)), draw(st.integers(0, 1))
            views.append(Pad(axis, left, right, size))
            shape[axis] = size + left + right
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


def test_a_squeeze_cancels_a_deep_split_and_lowers_the_views_after_it() -> None:
    """X of a conv with 1x1 size-1 dims: squeezing k1 undoes Pi1's split; the later splits move one axis down."""
    chain = (Unflatten(1, (1, 2)), Unflatten(3, (1, 1)), Unflatten(5, (1, 1)), Unflatten(7, (1, 1)))
    assert append_views(Data(chain), [Squeeze(4)]).views == (Unflatten(1, (1, 2)), Unflatten(4, (1, 1)), Unflatten(6, (1, 1)))
    weight = (Unflatten(0, (1, 3)), Squeeze(3), Squeeze(3))  # no partner: the squeeze goes last
    assert append_views(Data(weight), [Squeeze(3)]).views == (*weight, Squeeze(3))
