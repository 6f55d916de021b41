"""Sizes: symbol names, and conditions over symbolic sizes that are proven (or refuted) for all values only.

The floor-aware prover is checked for soundness against evaluation: whatever it
proves (or refutes) holds (or fails) at every value tried; and it proves the
conditions conv rules ask of conv output sizes.
"""

from __future__ import annotations

import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tnconv.ir.sizes import as_size, equal, is_le, leg_symbol, proven_divisible, proven_lt, quotient

H, W, M = leg_symbol("H"), leg_symbol("W"), leg_symbol("M")


def test_as_size_names_positive_integer_symbols() -> None:
    assert as_size("N", "batch") == leg_symbol("N") and as_size(3, "batch") == 3
    assert as_size(sympy.Symbol("N") * 2, "channels") == 2 * leg_symbol("N")  # a bare symbol becomes a size symbol
    assert as_size(sympy.Integer(4), "channels") == 4 and isinstance(as_size(sympy.Integer(4), "c"), int)


@pytest.mark.parametrize("value, error, words", [
    ("1N", ValueError, ["batch", "'1N'"]),
    (sympy.Symbol("N") / 2, ValueError, ["batch", "integer", "N/2"]),
    (-2, ValueError, ["batch", "-2"]),
    (1.5, TypeError, ["batch", "1.5"]),
    (True, TypeError, ["batch", "True"]),
])
def test_as_size_refuses_what_is_no_size(value: object, error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        as_size(value, "batch")
    assert all(word in str(info.value) for word in words), str(info.value)


def test_conditions_with_floor_are_proven_refuted_or_left_open() -> None:
    half = sympy.floor(H / 2)
    assert is_le(2 * half, H) is True and is_le(H, 2 * half) is None and is_le(H + 1, 2 * half) is False
    assert is_le(H, H - 1) is False and is_le(H - 1, H) is True and is_le(2, H) is None and is_le(1, H) is True
    # the last tap of a stride-2, 3-tap pattern without padding reads inside the input, for every H
    outputs = sympy.floor((H - 3) / 2) + 1
    assert is_le(2 * (outputs - 1) + 2, H - 1) is True and proven_lt(2 * (outputs - 1) + 2, H)
    assert equal(2 * half, H) is None and equal(2 * sympy.floor(M + sympy.Rational(1, 2)), 2 * M + 1) is False


def test_divisibility_and_quotients() -> None:
    assert proven_divisible(2 * M, 2) and not proven_divisible(M, 2) and proven_divisible(6, 3)
    assert not proven_divisible(7, 2)
    assert quotient(2 * M, 2) == M and quotient(6, 3) == 2 and isinstance(quotient(6, 3), int)


@st.composite
def floor_expressions(draw: st.DrawFn) -> sympy.Expr:
    """``c0 + c1*H + c2*floor((H + d)/q) + c3*W``: linear in one floor term, as conv output sizes are."""
    c0, c1, c2, c3 = (draw(st.integers(-4, 4)) for _ in range(4))
    d, q = draw(st.integers(-5, 5)), draw(st.integers(1, 4))
    return c0 + c1 * H + c2 * sympy.floor((H + d) / q) + c3 * W


@settings(max_examples=60, deadline=None)
@given(floor_expressions(), floor_expressions())
def test_is_le_is_sound(a: sympy.Expr, b: sympy.Expr) -> None:
    """Where ``is_le`` answers, the answer holds at every value of the symbols tried."""
    answer = is_le(a, b)
    assume(answer is not None)  # open: nothing claimed (the cases above check that conv conditions are decided)
    left, right = (sympy.lambdify((H, W), side, "math") for side in (a, b))
    for h in range(1, 25):
        for w in (1, 2, 7):
            assert (left(h, w) <= right(h, w)) is answer, (a, b, h, w)
