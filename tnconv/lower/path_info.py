"""The per-step table of a program's contraction path (like opt_einsum's ``PathInfo``), with leg names.

Each pairwise step is written with the network's own leg names (``"n c_in i1,
k1 i1 -> n c_in k1"``: not re-lettered per step), its FLOPs (opt_einsum's
count, ``tnconv.lower.path.path_terms``) and the elements of its result. Sizes
are ints for a concrete program and sympy expressions for a symbolic one (the
steps of the plan chosen at representative sizes, costed in the symbols).
Preparations (gathers, window sums) and folds are not steps: the program's
``flops`` counts them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tnconv.ir.sizes import Size
from tnconv.lower.cost import CostTerms
from tnconv.lower.path import Contraction


@dataclass(frozen=True)
class StepInfo:
    """One pairwise step: ``equation`` in leg names, its ``flops`` and its result's ``size`` (elements)."""

    equation: str
    flops: Size
    size: Size


def path_info(contraction: Contraction, sizes: Mapping[str, Size]) -> tuple[StepInfo, ...]:
    """The steps of ``contraction`` with leg ``sizes`` (the network's, ints or sympy expressions)."""
    working = [tuple(term) for term in contraction.legs]
    rows = []
    for step, flops, size in zip(contraction.steps, contraction.cost.flops, contraction.cost.largest):
        inputs = [working[p] for p in step.positions]
        working = [term for p, term in enumerate(working) if p not in step.positions] + [step.legs]
        equation = ", ".join(" ".join(term) for term in inputs) + " -> " + " ".join(step.legs)
        cost = CostTerms((flops,), (size,))
        step_flops, step_size = cost.evaluate(sizes)
        rows.append(StepInfo(equation, step_flops, step_size))
    return tuple(rows)


def format_table(rows: tuple[StepInfo, ...]) -> str:
    """The steps as a text table: number, FLOPs, result elements, equation."""
    cells = [("step", "flops", "result size", "contraction")]
    cells += [(str(n), str(row.flops), str(row.size), row.equation) for n, row in enumerate(rows, 1)]
    widths = [max(len(line[column]) for line in cells) for column in range(3)]
    return "\n".join(
        f"{line[0]:>{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:>{widths[2]}}  {line[3]}" for line in cells
    )
