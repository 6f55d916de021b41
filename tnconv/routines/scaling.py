"""A routine's formulas for a layer: the value of its ``Scaling.formula`` (or of its ``Costs``), with the layer's numbers.

``quantities(hyper)`` gives the layer quantities of ``QUANTITIES`` (``N`` samples,
``T`` output locations, ...); ``scale(formula, hyper)`` the exact rational the
network's result is multiplied by (``1/(N*T^2)`` of a KFAC-reduce factor);
``shortcut_pays(costs, values)`` whether a shortcut's cost formula is at most the whole network's.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import sympy
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper
from tnconv.routines.routine import QUANTITIES, Costs

_NAME = re.compile(r"[A-Za-z_]\w*")


def quantities(hyper: ConvHyper) -> dict[str, int]:
    """The layer quantities ``QUANTITIES`` names, as ints (``C_out`` only when the layer has it)."""
    values = {
        "N": hyper.batch, "T": math.prod(hyper.output_size), "G": hyper.groups, "C_in": hyper.in_channels,
        "K": hyper.kernel_elements,
    }
    if hyper.out_channels is not None:
        values["C_out"] = hyper.out_channels
    return values


@cached(maxsize=64)
def expression(formula: str) -> sympy.Expr:
    """``formula`` (``^`` a power) as a sympy expression in the ``QUANTITIES`` symbols; ValueError otherwise."""
    local = {name: sympy.Symbol(name, integer=True, positive=True) for name in QUANTITIES}
    try:
        parsed = parse_expr(formula, local_dict=local, transformations=(*standard_transformations, convert_xor))
    except (SyntaxError, TypeError, ValueError) as error:
        raise ValueError(f"scaling formula {formula!r} is not an expression: {error}") from None
    unknown = sorted(str(s) for s in parsed.free_symbols if str(s) not in QUANTITIES)
    if unknown or not isinstance(parsed, sympy.Expr):
        raise ValueError(f"scaling formula {formula!r} uses {unknown}; it may use {', '.join(QUANTITIES)}")
    return parsed


def scale(formula: str, hyper: ConvHyper) -> sympy.Rational:
    """The exact value of ``formula`` for the layer ``hyper``."""
    return evaluate(formula, quantities(hyper))


def evaluate(formula: str, values: Mapping[str, int]) -> sympy.Rational:
    """The exact value of ``formula`` for the quantities ``values`` (``N``, ``T``, ...: ``QUANTITIES``)."""
    parsed = expression(formula)
    missing = sorted(str(s) for s in parsed.free_symbols if str(s) not in values)
    if missing:
        raise ValueError(f"scaling formula {formula!r} needs {missing}, which this layer does not have")
    result = parsed.subs({symbol: values[str(symbol)] for symbol in parsed.free_symbols})
    if not isinstance(result, sympy.Rational):
        raise ValueError(f"scaling formula {formula!r} is not a rational number for this layer: {result}")
    return result


def shortcut_pays(costs: Costs, values: Mapping[str, int]) -> bool:
    """Whether the shortcut's cost (``costs.shortcut``) is at most the whole network's (``costs.network``) for the
    layer quantities ``values`` (``quantities(hyper)`` of a conv layer)."""
    return bool(evaluate(costs.shortcut, values) <= evaluate(costs.network, values))


def used(formula: str) -> tuple[str, ...]:
    """The quantities ``formula`` uses, in order of first appearance."""
    return tuple(dict.fromkeys(name for name in _NAME.findall(formula) if name in QUANTITIES))


def substituted(formula: str, hyper: ConvHyper) -> str:
    """``formula`` with each quantity replaced by its value: ``1/(N*T^2)`` -> ``1/(8*3,136^2)``."""
    values = quantities(hyper)
    return _NAME.sub(lambda match: f"{values[match.group()]:,}" if match.group() in values else match.group(), formula)
