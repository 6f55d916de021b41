"""``tnconv derive`` with symbolic sizes (``--input N,64,H,W``): the program's cost as formulas.

A layer whose batch or spatial sizes are symbols is derived once for all
their values; the derivation's trace says which rewrites were proven for all
sizes and which did not fire (``not proven for all sizes: ...``). The compiled
program is symbolic: its plan is chosen at ``REPRESENTATIVE_SIZE`` for every
symbol and its FLOPs and largest intermediate are sympy expressions
(``tnconv.programs.program``). For the KFAC factors, the cost of the
unfold-based computation (im2col, then products of the unfolded tensor ``U``)
is shown next to it, as a formula in the same symbols.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TextIO

import sympy

from tnconv.cli.show import steps
from tnconv.lower.kernels import Native
from tnconv.programs.program import REPRESENTATIVE_SIZE, Program

if TYPE_CHECKING:
    from tnconv.cli.derive import Derivation


def symbolic_runs(program: Program) -> dict[str, Any]:
    """What a call of a symbolic program runs, as JSON-ready data (formulas as strings)."""
    from tnconv.cli.derive import step_table

    plan = program.symbolic_plan
    native = plan.name if isinstance(plan, Native) else None
    kernel = program.kernel_cost()
    return {
        "symbolic": True, "strategy": program.strategy, "representative_size": REPRESENTATIVE_SIZE,
        "kernel": None if native is None else {"name": native, "flops": str(kernel.flops) if kernel else None},
        "flops": str(program.flops), "largest_intermediate": str(program.largest_intermediate),
        "einsum_plan": {
            "runs": native is None, "path": [list(step) for step in program.path], "steps": list(program.steps),
            "table": step_table(program),
            "flops": str(program.flops), "largest_intermediate": str(program.largest_intermediate),
        },
    }


def unfold_based(derivation: "Derivation") -> dict[str, str] | None:
    """The FLOPs of computing a KFAC factor from the unfolded input ``U`` (``(N, G, d, T)``, ``d = C_in/G *
    prod(K)``, ``T = prod(O)``), as unfold-based code does: the unfold writes ``U``; KFAC-expand multiplies
    ``U U^T`` over ``(n, t)`` (2 per multiply-add); KFAC-reduce sums ``U`` over ``t`` (one add per element)
    and multiplies the sums over ``n``. None for other routines."""
    if derivation.op not in ("kfac_expand", "kfac_reduce"):
        return None
    hyper = derivation.hyper
    groups = hyper.groups
    d = sympy.sympify(hyper.in_channels) / groups * math.prod(hyper.kernel_size)
    t = sympy.Mul(*hyper.output_size)
    unfolded = hyper.batch * groups * d * t
    if derivation.op == "kfac_expand":
        flops = unfolded + 2 * hyper.batch * groups * d**2 * t
    else:
        flops = 2 * unfolded + 2 * hyper.batch * groups * d**2
    return {"unfolded_elements": str(sympy.expand(unfolded)), "flops": str(sympy.expand(flops))}


def show_symbolic(data: dict[str, Any], out: TextIO) -> None:
    """The symbolic program's plan and its cost formulas (and the unfold-based cost, where there is one)."""
    plan = data["einsum_plan"]
    kernel = data["kernel"]
    print(f"strategy  symbolic: one plan for all sizes, chosen with every symbol = {data['representative_size']}",
          file=out)
    if kernel is not None:
        print(f"kernel    {kernel['name']} at those sizes; its flops = {kernel['flops']} (2 per multiply-add)",
              file=out)
        print("einsum plan (what the network costs as pairwise steps):", file=out)
    print(f"path      {plan['path']}", file=out)
    steps(plan["table"], "  ", out)
    print(f"flops     {plan['flops']}", file=out)
    print(f"largest intermediate  {plan['largest_intermediate']} elements", file=out)
    unfold = data.get("unfold_based")
    if unfold is not None:
        print(f"unfold-based flops  {unfold['flops']} (U = unfold(X) has {unfold['unfolded_elements']} elements)",
              file=out)
