"""Leg sizes: plain ints or sympy expressions.

A size is an ``int`` whenever it is known, so that concrete networks never
touch sympy on a hot path. Unknown sizes are positive integer symbols named
after their leg; they are resolved by substitution (``Network.substitute``) or
when operands are bound. Conditions over sizes answer ``True``, ``False`` or
``None`` (unknown), so that rewrites apply only when a condition is proven:
``proven_equal``, ``proven_le`` and ``proven_lt`` say True only then (ints
answer at once; sympy answers are cached, since rules ask the same questions
of every tensor on every sweep).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable, Mapping, Union

import sympy

Size = Union[int, sympy.Expr]


def leg_symbol(name: str) -> sympy.Symbol:
    """The positive integer symbol that stands for the unknown size of leg ``name``."""
    return sympy.Symbol(name, integer=True, positive=True)


def check_size(value: object, what: str) -> Size:
    """Validate a size given for ``what``; return it as an ``int`` when it is a number.

    Raises TypeError for non-integers (bool, float, str) and ValueError for negatives.
    """
    if isinstance(value, bool) or not isinstance(value, (int, sympy.Expr)):
        raise TypeError(f"size of {what} must be an int or a sympy expression, got {value!r}")
    if isinstance(value, sympy.Expr):
        if value.is_Integer:
            value = int(value)
        elif value.is_Number:
            raise TypeError(f"size of {what} must be an integer, got {value!r}")
        else:
            return value
    if value < 0:
        raise ValueError(f"size of {what} must be >= 0, got {value}")
    return int(value)


def is_concrete(size: Size) -> bool:
    """Whether ``size`` is a known integer."""
    return isinstance(size, int)


def substitute(size: Size, values: Mapping[sympy.Symbol, Size]) -> Size:
    """Replace symbols in ``size``; the result is an ``int`` when it became a number."""
    if isinstance(size, int) or not values:
        return size
    result = size.subs(values)
    return int(result) if result.is_Integer else result


def symbols_of(sizes: Iterable[Size]) -> frozenset[sympy.Symbol]:
    """All free symbols of the given sizes."""
    found: set[sympy.Symbol] = set()
    for size in sizes:
        if not isinstance(size, int):
            found |= size.free_symbols
    return frozenset(found)


def product(sizes: Iterable[Size]) -> Size:
    """The product of sizes, an int when all are ints."""
    values = list(sizes)
    if all(isinstance(v, int) for v in values):
        return math.prod(values)  # type: ignore[arg-type]
    return sympy.Mul(*values)


def decide(condition: object) -> bool | None:
    """Answer a condition over sizes: True, False, or None when it cannot be proven either way."""
    if isinstance(condition, bool):
        return condition
    if condition is sympy.true:
        return True
    if condition is sympy.false:
        return False
    simplified = sympy.simplify(condition)
    if simplified is sympy.true:
        return True
    if simplified is sympy.false:
        return False
    return None


def equal(a: Size, b: Size) -> bool | None:
    """Whether two sizes are equal: True, False, or None when unknown."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    difference = sympy.simplify(sympy.sympify(a) - sympy.sympify(b))
    if difference.is_zero is True:
        return True
    if difference.is_zero is False:
        return False
    return None


def proven_equal(a: Size, b: Size) -> bool:
    """Whether ``a == b`` is proven."""
    return a == b if isinstance(a, int) and isinstance(b, int) else _proven("==", a, b)


def proven_le(a: Size, b: Size) -> bool:
    """Whether ``a <= b`` is proven."""
    return a <= b if isinstance(a, int) and isinstance(b, int) else _proven("<=", a, b)


def proven_lt(a: Size, b: Size) -> bool:
    """Whether ``a < b`` is proven."""
    return a < b if isinstance(a, int) and isinstance(b, int) else _proven("<", a, b)


@lru_cache(maxsize=4096)
def _proven(relation: str, a: Size, b: Size) -> bool:
    """The cached sympy answer behind ``proven_*`` (``relation`` one of ``==``, ``<=``, ``<``)."""
    if relation == "==":
        return equal(a, b) is True
    compare = sympy.Le if relation == "<=" else sympy.Lt
    return decide(compare(sympy.sympify(a), sympy.sympify(b))) is True
