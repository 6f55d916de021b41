"""Leg sizes: plain ints or sympy expressions.

A size is an ``int`` whenever it is known, so that concrete networks never
touch sympy on a hot path. Unknown sizes are positive integer symbols named
after their leg (or given by name: ``as_size("N")``); they are resolved by
substitution (``Network.substitute``) or when operands are bound. Conditions
over sizes answer ``True``, ``False`` or ``None`` (unknown: it holds for some
values of the symbols and not for others, or sympy cannot tell), so that
rewrites apply only when a condition is proven for all values:
``proven_equal``, ``proven_le``, ``proven_lt`` and ``proven_divisible`` say
True only then (ints answer at once; sympy answers are cached, since rules ask
the same questions of every tensor on every sweep).

Symbols stand for positive integers. Sizes are integer-valued, so ``a < b`` is
``a + 1 <= b``. Conv output sizes hold ``floor`` (``floor((I - 3)/2) + 1``),
which sympy's inequality solver does not see through; ``is_le`` bounds each
floor term of a difference that is linear in them (``u - (q-1)/q <= floor(u)
<= u`` for ``u`` an integer over ``q``) and then proves the sign of a
polynomial in the symbols, each ``>= 1``.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Union

import sympy

from tnconv.caches import cached

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


def as_size(value: object, what: str) -> Size:
    """A size given for ``what`` as an ``int`` or sympy expression; a ``str`` names a symbol (``"N"``).

    Symbols stand for positive integers: a name, or a sympy symbol declared without
    that assumption, becomes ``leg_symbol(name)``, so that ``"N"`` and
    ``sympy.Symbol("N")`` are the same size. Raises TypeError for other types
    (bool, float) and ValueError for a negative number, a name that is not an
    identifier, or an expression that is not an integer for all values of its symbols.
    """
    if isinstance(value, str):
        if not value.isidentifier():
            raise ValueError(f"size of {what} must be an int or a symbol name (an identifier such as 'N'), got {value!r}")
        return leg_symbol(value)
    if isinstance(value, bool) or not isinstance(value, (int, sympy.Expr)):
        raise TypeError(f"size of {what} must be an int, a symbol name or a sympy expression, got {value!r}")
    size = check_size(value, what)
    if isinstance(size, int):
        return size
    loose = {s: leg_symbol(s.name) for s in size.free_symbols if not (s.is_integer and s.is_positive)}
    size = size.xreplace(loose) if loose else size
    if size.is_integer is not True:
        raise ValueError(f"size of {what} must be an integer for all values of its symbols, got {value!r}")
    if size.is_negative:
        raise ValueError(f"size of {what} must be >= 0, got {value!r}")
    return size


def quotient(size: Size, divisor: Size) -> Size:
    """``size / divisor`` where ``divisor`` divides ``size`` (``proven_divisible``): an int or an expression."""
    if isinstance(size, int) and isinstance(divisor, int):
        return size // divisor
    result = sympy.sympify(size) / divisor
    return int(result) if result.is_Integer else result


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
        return math.prod(values)
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
    return _equal(a, b)


@cached(maxsize=4096)
def _equal(a: Size, b: Size) -> bool | None:
    """``equal`` for sympy sizes (cached): zero once expanded, or refuted by a bound on the difference; sympy's
    ``simplify`` only where ``floor`` terms may cancel."""
    difference = sympy.expand(sympy.sympify(a) - sympy.sympify(b))
    if difference == 0:
        return True
    low, high = _floor_bounds(difference)
    if _positive(low) or _positive(-high):
        return False
    if difference.has(sympy.floor):
        difference = sympy.simplify(difference)
    if difference.is_zero is True:
        return True
    if difference.is_zero is False:
        return False
    return None


def is_le(a: Size, b: Size) -> bool | None:
    """Whether ``a <= b``: True or False when proven for all values of the symbols, else None."""
    if isinstance(a, int) and isinstance(b, int):
        return a <= b
    return _is_le(a, b)


def proven_equal(a: Size, b: Size) -> bool:
    """Whether ``a == b`` is proven."""
    return a == b if isinstance(a, int) and isinstance(b, int) else _proven("==", a, b)


def proven_le(a: Size, b: Size) -> bool:
    """Whether ``a <= b`` is proven."""
    return a <= b if isinstance(a, int) and isinstance(b, int) else _proven("<=", a, b)


def proven_lt(a: Size, b: Size) -> bool:
    """Whether ``a < b`` is proven (sizes are integers: ``a + 1 <= b``)."""
    return a < b if isinstance(a, int) and isinstance(b, int) else _proven("<", a, b)


def proven_divisible(size: Size, divisor: Size) -> bool:
    """Whether ``size % divisor == 0`` is proven (``2*M`` by 2: yes; ``M`` by 2: no)."""
    if isinstance(size, int) and isinstance(divisor, int):
        return size % divisor == 0
    return (sympy.sympify(size) / divisor).is_integer is True


@cached(maxsize=4096)
def _proven(relation: str, a: Size, b: Size) -> bool:
    """The cached sympy answer behind ``proven_*`` (``relation`` one of ``==``, ``<=``, ``<``)."""
    if relation == "==":
        return _equal(a, b) is True
    return _is_le(a + 1 if relation == "<" else a, b) is True


@cached(maxsize=4096)
def _is_le(a: Size, b: Size) -> bool | None:
    """``is_le`` for sympy sizes (cached): the sign of ``b - a`` from bounds on its floor terms."""
    difference = sympy.expand(sympy.sympify(b) - sympy.sympify(a))
    low, high = _floor_bounds(difference)
    if _nonnegative(low):
        return True
    if _positive(-high):  # b - a <= high < 0
        return False
    return None


def _floor_bounds(expression: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """Lower and upper bounds of ``expression`` free of ``floor``, when it is linear in its floor terms.

    ``floor(u)`` lies in ``[u - (q-1)/q, u]`` when ``u`` is an integer over a number ``q``
    (``(I - 3)/2``), else in ``(u - 1, u]``; a term with a positive coefficient takes the low
    end for the lower bound, one with a negative coefficient the high end. An expression
    that is not linear in its floor terms is its own bounds (left to sympy).
    """
    floors = expression.atoms(sympy.floor)
    if not floors:
        return expression, expression
    low = high = expression
    for term in floors:
        coefficient = expression.coeff(term)
        if not coefficient.is_Number or any(term in other.atoms(sympy.floor) for other in floors - {term}):
            return expression, expression
        inside = sympy.together(term.args[0])
        numerator, denominator = sympy.fraction(inside)
        slack = (1 - sympy.Rational(1, denominator)) if denominator.is_Integer and numerator.is_integer else 1
        smallest, largest = inside - slack, inside
        low = low.subs(term, smallest if coefficient > 0 else largest)
        high = high.subs(term, largest if coefficient > 0 else smallest)
    if low.atoms(sympy.floor) or high.atoms(sympy.floor):
        return expression, expression
    return sympy.expand(low), sympy.expand(high)


def _nonnegative(expression: sympy.Expr) -> bool:
    """Whether ``expression >= 0`` is proven (``_shifted_sign``; sympy's own answer only for expressions that are
    neither polynomials in the symbols, which ``_shifted_sign`` settles, nor hold ``floor``, which sympy cannot
    bound: it takes long to say so)."""
    return _shifted_sign(expression, strict=False) or (_unsettled(expression) and decide(sympy.Ge(expression, 0)) is True)


def _positive(expression: sympy.Expr) -> bool:
    """Whether ``expression > 0`` is proven."""
    return _shifted_sign(expression, strict=True) or (_unsettled(expression) and decide(sympy.Gt(expression, 0)) is True)


def _unsettled(expression: sympy.Expr) -> bool:
    """Whether ``_shifted_sign`` cannot judge ``expression`` and sympy may: not a polynomial, no ``floor``."""
    return _shifted(expression) is None and not expression.has(sympy.floor)


def _shifted_sign(expression: sympy.Expr, strict: bool) -> bool:
    """Whether ``expression`` is >= 0 (> 0 when ``strict``) because, with each symbol ``s`` (a positive integer)
    written ``1 + t`` (``t >= 0``), it is a polynomial in the ``t`` whose coefficients are all >= 0 (and whose
    constant term is > 0 when ``strict``)."""
    shifted = _shifted(expression)
    if shifted is None:
        return False
    if shifted.is_Number:
        return bool(shifted > 0 if strict else shifted >= 0)
    polynomial = sympy.Poly(shifted, *sorted(shifted.free_symbols, key=str))
    constant = polynomial.coeff_monomial(1)
    return all(c >= 0 for c in polynomial.coeffs()) and (not strict or constant > 0)


def _shifted(expression: sympy.Expr) -> sympy.Expr | None:
    """``expression`` with each symbol ``s`` replaced by ``s + 1``, expanded; None unless it is then a polynomial
    in symbols that are all positive integers (so that the new symbols are >= 0)."""
    symbols = expression.free_symbols
    if not all(s.is_integer and s.is_positive for s in symbols):
        return None
    shifted = sympy.expand(expression.xreplace({s: s + 1 for s in symbols}))
    if not shifted.free_symbols:
        return shifted if shifted.is_Number else None
    return shifted if shifted.is_polynomial(*shifted.free_symbols) else None
