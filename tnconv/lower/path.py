"""Contraction paths: tensors with named legs -> a fixed sequence of small pairwise steps.

opt_einsum chooses the contraction order (any number of legs: it names them
with unicode symbols). Each step is then written as its own einsum equation
over at most 52 letters, assigned per step (``torch.einsum`` has no more),
and as a recipe of fixed calls (``tnconv.lower.steps``). The result is plain
data (positions, strings, recipes): running it needs no opt_einsum object.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import opt_einsum

from tnconv.lower.cost import CostTerms
from tnconv.lower.optimize import AUTO, Optimize
from tnconv.lower.steps import Recipe, recipe


LETTERS = string.ascii_letters


@dataclass(frozen=True)
class Step:
    """Contract the working operands at ``positions`` (removed) with ``equation``; append the result.

    ``legs`` are the result's legs; ``size`` its number of elements. ``recipe`` is the
    step as fixed calls (``tnconv.lower.steps``), or None where an einsum runs it.
    """

    positions: tuple[int, ...]
    equation: str
    legs: tuple[str, ...]
    size: int = 0
    recipe: Recipe | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Contraction:
    """A contraction order over a list of tensors and its cost, as opt_einsum estimates it."""

    path: tuple[tuple[int, ...], ...]
    steps: tuple[Step, ...]
    flops: int
    largest_intermediate: int
    cost: CostTerms = field(default=CostTerms(), compare=False)
    legs: tuple[tuple[str, ...], ...] = field(default=(), compare=False)
    """The legs of the tensors contracted (the path's positions index them)."""


def contraction(
    legs: Sequence[tuple[str, ...]],
    output: tuple[str, ...],
    sizes: Mapping[str, int],
    optimize: Optimize = AUTO,
) -> Contraction:
    """Plan the contraction of tensors with the given legs (all sizes integers) into ``output``.

    Raises ValueError when there is nothing to contract or the optimizer cannot plan it.
    """
    if not legs:
        raise ValueError("cannot compile a network without tensors")
    names = list(dict.fromkeys(leg for term in legs for leg in term))
    symbols = {leg: opt_einsum.get_symbol(n) for n, leg in enumerate(names)}
    inputs = ",".join("".join(symbols[leg] for leg in term) for term in legs)
    equation = f"{inputs}->{''.join(symbols[leg] for leg in output)}"
    shapes = [tuple(int(sizes[leg]) for leg in term) for term in legs]
    try:
        path, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize=optimize.argument(len(legs)))
    except (KeyError, ValueError, TypeError, IndexError) as error:
        readable = ",".join(" ".join(term) for term in legs) + " -> " + " ".join(output)
        hint = ""
        if optimize.optimizer is not None:
            hint = (
                f" (an optimizer object must return a path that contracts these {len(legs)} tensors into one; "
                "one that keeps its search, such as cotengra's HyperOptimizer, plans one contraction: use a "
                "new one per network, or cotengra.ReusableHyperOptimizer)"
            )
        raise ValueError(f"optimize={optimize!r} could not plan {readable}: {error}{hint}") from error
    steps = pairwise_steps(legs, output, sizes, [tuple(step) for step in path])
    cost = path_terms(legs, output, [tuple(step) for step in path])
    return Contraction(
        tuple(tuple(s) for s in path), steps, int(info.opt_cost), int(info.largest_intermediate), cost, tuple(legs)
    )


def path_terms(
    legs: Sequence[tuple[str, ...]], output: tuple[str, ...], path: Sequence[tuple[int, ...]]
) -> CostTerms:
    """opt_einsum's cost of ``path`` as terms over leg names (``tnconv.lower.cost``): each step costs the
    product of the sizes of the legs it involves, times ``max(1, operands - 1)``, plus one when it sums
    a leg (``opt_einsum.helpers.flop_count``); the largest intermediate is the largest step result."""
    working = [set(term) for term in legs]
    flops, results = [], []
    for positions in path:
        joined = [working[p] for p in positions]
        working = [term for p, term in enumerate(working) if p not in positions]
        involved = set().union(*joined)
        result = involved & set(output).union(*working)
        factor = max(1, len(positions) - 1) + (1 if involved - result else 0)
        flops.append((factor, tuple(sorted(involved))))
        results.append((1, tuple(sorted(result))))
        working.append(result)
    return CostTerms(tuple(flops), tuple(results) or ((1, ()),))


def pairwise_steps(
    legs: Sequence[tuple[str, ...]],
    output: tuple[str, ...],
    sizes: Mapping[str, int],
    path: Sequence[tuple[int, ...]],
) -> tuple[Step, ...]:
    """Turn a path over positions into steps: per-step einsum equations with local letters, and recipes."""
    working: list[tuple[str, ...]] = list(legs)
    steps = []
    for number, positions in enumerate(path):
        operands = [working[p] for p in positions]
        rest = [term for p, term in enumerate(working) if p not in positions]
        if number == len(path) - 1:
            keep, order = set(output), output
        else:
            needed = set(output).union(*map(set, rest))
            keep, order = {leg for term in operands for leg in term if leg in needed}, None
        calls, result = recipe(operands, keep, sizes, order)
        involved = list(dict.fromkeys([leg for term in operands for leg in term] + list(result)))
        if len(involved) > len(LETTERS):
            raise ValueError(
                f"contraction step {number} joins {len(involved)} distinct legs; torch.einsum has only "
                f"{len(LETTERS)} letters per call: {involved}"
            )
        letter = {leg: LETTERS[n] for n, leg in enumerate(involved)}
        equation = ",".join("".join(letter[l] for l in term) for term in operands)
        equation += "->" + "".join(letter[l] for l in result)
        size = 1
        for leg in result:
            size *= int(sizes[leg])
        steps.append(Step(tuple(positions), equation, result, size, calls))
        working = rest + [result]
    return tuple(steps)
