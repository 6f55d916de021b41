"""``tnconv derive``: derive a routine of the table for a layer (its stages with their rewrites), compile it, and
describe what the compiled program runs and how the network's value is scaled.

Everything here returns plain data (``Derivation``, dicts) so that the
command line can print it as text or JSON; printing lives in
``tnconv.cli.show``, checking and timing in ``tnconv.cli.measure``. The stages
are the routine's own (``tnconv.routines.derivation.derive``): nothing here
knows one routine from another.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from tnconv.cli.arguments import DEFAULT_COLUMNS
from tnconv.cli.layers import Layer
from tnconv.cli.show import EXACT_FLOAT_INTEGERS
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.options import Options
from tnconv.ir.network import Network
from tnconv.programs.compile import compile as compile_network
from tnconv.lower.kernels import KernelCost
from tnconv.lower.pair_gram import PairGram
from tnconv.programs.program import Program
from tnconv.routines.derivation import StageResult
from tnconv.routines.derivation import derive as derive_stages
from tnconv.routines.names import resolve
from tnconv.routines.routine import QUANTITIES, Routine
from tnconv.routines.run import finish
from tnconv.routines.scaling import expression, quantities, scale, shortcut_pays, substituted, used
from tnconv.routines.table import TABLE

__all__ = ["Derivation", "costs", "derive", "hyper_of", "scaling", "what_runs"]


@dataclass(frozen=True)
class Derivation:
    """A derived routine: its stages, the final network, its compiled program and M for routines that take columns.

    ``routine`` is the command-line name, ``op`` the table's; ``entry`` the routine itself.
    """

    routine: str
    op: str
    entry: Routine
    layer: Layer
    hyper: ConvHyper
    stages: tuple[StageResult, ...]
    program: Program
    options: Options

    @property
    def network(self) -> Network:
        return self.stages[-1].network

    @property
    def columns(self) -> int | None:
        """M, the columns of the GGN factorisation (None for routines that take none)."""
        return self.options.columns


def hyper_of(layer: Layer) -> ConvHyper:
    """The validated hyper-parameters of ``layer`` (ValueError/TypeError name the bad flag value)."""
    return conv_hyper(**layer.kwargs(), symbolic=not layer.concrete)


def routine_layer(routine: str, layer: Layer, routines: Mapping[str, Routine] = TABLE) -> tuple[Routine, Layer]:
    """The routine of a command-line name (either spelling), and the layer (made transposed where it implies it)."""
    entry = resolve(routine, routines, "ROUTINE", hyphens=True)
    if entry.transposed and not layer.transposed:
        layer = replace(layer, transposed=True)
    return entry, layer


def derive(
    routine: str, layer: Layer, optimize: str = "auto", simplify: bool = True, columns: int = DEFAULT_COLUMNS,
    *, routines: Mapping[str, Routine] = TABLE,
) -> Derivation:
    """Build routine ``routine`` of ``routines`` for ``layer`` stage by stage, simplify it (traced) and compile it.

    ``columns`` is M, the number of columns of the GGN factorisation for
    routines that take columns (``diag-ggn``: the size of its leg ``m``).
    """
    entry, layer = routine_layer(routine, layer, routines)
    hyper = hyper_of(layer)
    options = Options(columns if entry.takes_columns else None)
    stages = derive_stages(entry, hyper, options, simplify)
    program = compile_network(stages[-1].network, optimize)
    return Derivation(entry.hyphen_name, entry.name, entry, layer, hyper, stages, program, options)


def kernel_report(cost: KernelCost) -> dict[str, Any]:
    """A native kernel's cost as plain data: FLOPs, the tensors it creates and the largest of them."""
    created = [{"op": t.op, "shape": list(t.shape), "elements": t.elements} for t in cost.created]
    return {"flops": cost.flops, "created": created, "largest": cost.largest}


def what_runs(program: Program) -> dict[str, Any]:
    """The statistics of what a call of ``program`` runs, and of its einsum plan (labelled whether it runs).

    ``flops`` and ``largest_intermediate`` are those of what runs: for a native
    kernel its FLOPs (2 per multiply-add, exact) and its largest created tensor; for
    the einsum plan, opt_einsum's estimates (``flops_exact`` False when the figure
    is beyond what a float holds exactly); for a pattern-pair Gram (``pair_gram``) its exact
    count, the einsum plan then being the gather/Gram path it replaces (not run), with its weight-VJP ``calls``
    and the im2col Gram's FLOPs (``gram_flops``).
    """
    if not program.concrete:
        from tnconv.cli.symbolic import symbolic_runs

        return symbolic_runs(program)
    cost = program.kernel_cost()
    flops, largest = program.flops, program.largest_intermediate
    if program.strategy == "pair_gram":
        reference = program.einsum_plan
        plan = {
            "runs": False, "path": [list(step) for step in program.path], "steps": list(program.steps),
            "table": step_table(program), "flops": reference.flops, "flops_exact": reference.flops < EXACT_FLOAT_INTEGERS,
            "largest_intermediate": reference.largest_intermediate,
            "largest_intermediate_exact": reference.largest_intermediate < EXACT_FLOAT_INTEGERS,
        }
        pair = program.plan
        assert isinstance(pair, PairGram)
        return {"strategy": program.strategy, "kernel": None, "flops": flops, "flops_exact": True,
                "largest_intermediate": largest, "einsum_plan": plan, "calls": pair.calls, "gram_flops": pair.gram_flops}
    plan = {
        "runs": cost is None, "path": [list(step) for step in program.path], "steps": list(program.steps),
        "table": step_table(program),
        "flops": flops, "flops_exact": flops < EXACT_FLOAT_INTEGERS,
        "largest_intermediate": largest, "largest_intermediate_exact": largest < EXACT_FLOAT_INTEGERS,
    }
    if cost is None:
        return {"strategy": program.strategy, "kernel": None, "flops": flops, "flops_exact": plan["flops_exact"],
                "largest_intermediate": largest, "einsum_plan": plan}
    kernel = {"name": program.strategy.removeprefix("native:"), **kernel_report(cost)}
    return {"strategy": program.strategy, "kernel": kernel, "flops": cost.flops, "flops_exact": True,
            "largest_intermediate": cost.largest, "einsum_plan": plan}


def step_table(program: Program) -> list[dict[str, Any]]:
    """The einsum plan's steps with leg names, FLOPs and result sizes (``Program.path_info``; formulas as strings)."""
    def plain(value: Any) -> Any:
        return value if isinstance(value, int) else str(value)

    return [{"equation": row.equation, "flops": plain(row.flops), "size": plain(row.size)}
            for row in program.path_info]


def scaling(derivation: Derivation) -> dict[str, Any] | None:
    """How the network's unnormalised sum becomes the routine's value (None for a routine without scaling).

    The network computes ``computes`` with the legs of its output; the value is
    that times ``formula`` (with this layer's ``quantities``: ``1/(N*T)`` of a
    KFAC-expand factor), reshaped to ``shape``, as the routine's public
    ``function`` returns it.
    """
    entry, hyper = derivation.entry, derivation.hyper
    if entry.scaling is None:
        return None
    rule = entry.scaling
    if not derivation.layer.concrete:  # a formula in the layer's symbols
        parsed, values = expression(rule.formula), quantities(hyper)
        value = parsed.subs({symbol: values[str(symbol)] for symbol in parsed.free_symbols})
        return {
            "title": rule.title, "computes": rule.computes, "formula": rule.formula, "symbolic": True,
            "value": str(value), "network_output": list(derivation.network.output), "layout": rule.layout,
            "where": rule.where, "function": entry.function,
        }
    factor = scale(rule.formula, hyper)
    values = quantities(hyper)
    return {
        "title": rule.title, "computes": rule.computes, "formula": rule.formula,
        "substituted": substituted(rule.formula, hyper),
        "quantities": {name: {"value": values[name], "counts": QUANTITIES[name]} for name in used(rule.formula)},
        "numerator": int(factor.p), "divisor": int(factor.q), "network_output": list(derivation.network.output),
        "layout": rule.layout, "where": rule.where, "shape": list(finish(entry, hyper, derivation.options).shape),
        "function": entry.function,
    }


def costs(derivation: Derivation) -> dict[str, Any] | None:
    """Which evaluation of the routine runs on this layer, by its shortcut's ``Costs`` formulas (multiply-adds):
    the shortcut (``why`` says what it is) or the whole network (``network_form``). None for a routine whose
    shortcut, if it has one, always runs. A symbolic layer gets the formulas in its symbols and no choice."""
    shortcut = derivation.entry.shortcut
    if shortcut is None or shortcut.costs is None:
        return None
    rule, hyper = shortcut.costs, derivation.hyper
    forms = {"shortcut": (rule.shortcut, shortcut.why), "network": (rule.network, rule.network_form)}
    if not derivation.layer.concrete:
        values = quantities(hyper)
        return {"symbolic": True, "runs": None, **{
            name: {"formula": formula, "form": form,
                   "value": str(expression(formula).subs({s: values[str(s)] for s in expression(formula).free_symbols}))}
            for name, (formula, form) in forms.items()
        }}
    return {"symbolic": False, "runs": "shortcut" if shortcut_pays(rule, quantities(hyper)) else "network", **{
        name: {"formula": formula, "form": form, "value": int(scale(formula, hyper))}
        for name, (formula, form) in forms.items()
    }}
