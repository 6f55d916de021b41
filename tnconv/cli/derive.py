"""``tnconv derive``: build a routine's network, run the passes with their trace, compile it, and describe
what the compiled program runs and how a KFAC factor is scaled.

Everything here returns plain data (``Derivation``, dicts) so that the
command line can print it as text or JSON; printing lives in
``tnconv.cli.show``, checking and timing in ``tnconv.cli.measure``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from tnconv.cli import reference
from tnconv.cli.layers import Layer
from tnconv.cli.names import ROUTINES, routine_name
from tnconv.cli.show import EXACT_FLOAT_INTEGERS
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.networks import TRANSPOSED_OPS
from tnconv.conv.networks import build as build_routine
from tnconv.ir.network import Network
from tnconv.lower.compile import compile as compile_network
from tnconv.lower.kernels import KernelCost
from tnconv.lower.program import Program

__all__ = ["ROUTINES", "Derivation", "Stage", "derive", "kfac_scaling", "what_runs"]


@dataclass(frozen=True)
class Stage:
    """One step of the derivation: a title, the network after it, and the rewrites it made (if a pass)."""

    title: str
    network: Network
    rewrites: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Derivation:
    """A derived routine: its stages, the final network, its compiled program and M for ``diag_ggn``."""

    routine: str
    op: str
    layer: Layer
    hyper: ConvHyper
    stages: tuple[Stage, ...]
    program: Program
    columns: int = reference.GGN_COLUMNS

    @property
    def network(self) -> Network:
        return self.stages[-1].network


def resolve(routine: str, layer: Layer) -> tuple[str, Layer]:
    """The conv_network op of a command-line routine (either spelling), and the layer (made transposed where implied)."""
    op = ROUTINES[routine_name(routine)]
    if op in TRANSPOSED_OPS and not layer.transposed:
        layer = replace(layer, transposed=True)
    return op, layer


def hyper_of(layer: Layer) -> ConvHyper:
    """The validated hyper-parameters of ``layer`` (ValueError/TypeError name the bad flag value)."""
    return conv_hyper(
        layer.input_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed,
    )


def simplify_traced(net: Network) -> tuple[Network, tuple[str, ...]]:
    """``tnconv.simplify`` with the rewrites it made, one line each (``tnconv.passes.simplify.simplify_traced``)."""
    from tnconv.passes.simplify import simplify_traced as traced

    result, trace = traced(net)
    return result, tuple(str(record) for record in trace)


def derivation_stages(op: str, hyper: ConvHyper, columns: int) -> list[Stage]:
    """The networks on the way to routine ``op``: the plain routine it starts from, then one per pass.

    The plain routines are built directly (``tnconv.conv.networks``); the
    curvature routines follow ``tnconv.conv.derived``: fuse a small sketch
    network with a plain routine, differentiate, vmap. The last stage is
    ``conv_network(op, ..., simplify=False)`` itself.
    """
    from tnconv.conv import derived
    from tnconv.passes.vmap import vmap

    if op not in derived.OPS:
        base = TRANSPOSED_OPS.get(op, op)
        title = f"built: the {base} network" + (" of the transposed layer" if op in TRANSPOSED_OPS else "")
        return [Stage(title, build_routine(base, hyper))]
    final = derived.network(op, hyper, False, columns if op == "diag_ggn" else None)
    if op in ("kfac_expand", "kfac_reduce"):
        reduce = op == "kfac_reduce"
        stages = [Stage("built: the unfold network, patches U[n,g,c_in,k..,o..] = X Pi..", build_routine("unfold", hyper))]
        if reduce:
            stages.append(Stage("fuse: sum_o U[n,g,c_in,k..,o..] with U := unfold (patch sums)",
                                derived.patches_network(hyper, reduce=True)))
        tied = "n" if reduce else "n and the locations o.."
        stages.append(Stage(f"fuse: P[n,g,c_in,k..] P[n,g,c_in_2,k_2..] summed over {tied}, with P := the patches",
                            final))
        return stages
    forward = build_routine("forward", hyper)
    per_sample = derived.per_sample_network(hyper)
    stages = [
        Stage("built: the forward network Y = X Pi.. W", forward),
        Stage("fuse + differentiate: d/dW of sum V[n,..] Y[n,..] with Y := forward (n kept)", per_sample),
    ]
    if op == "diag_ggn":
        stages.append(Stage(f"vmap: leg m of size {columns} on V (columns of the GGN factor)",
                            vmap(per_sample, "m", columns, "V")))
        stages.append(Stage("fuse: J[m,n,w] J[m,n,w] -> w, with J := the vmapped per-sample gradient", final))
    return stages


def derive(
    routine: str, layer: Layer, optimize: str = "auto", simplify: bool = True, columns: int = reference.GGN_COLUMNS
) -> Derivation:
    """Build routine ``routine`` of ``layer`` pass by pass, simplify it (traced) and compile it.

    ``columns`` is M, the number of columns of the GGN factorisation for
    ``diag-ggn`` (the size of its leg ``m``).
    """
    routine = routine_name(routine)
    op, layer = resolve(routine, layer)
    hyper = hyper_of(layer)
    stages = derivation_stages(op, hyper, columns)
    if simplify:
        result, rewrites = simplify_traced(stages[-1].network)
        stages.append(Stage("pass: simplify", result, rewrites))
    program = compile_network(stages[-1].network, optimize)
    return Derivation(routine, op, layer, hyper, tuple(stages), program, columns)


def kernel_report(cost: KernelCost) -> dict[str, Any]:
    """A native kernel's cost as plain data: FLOPs, the tensors it creates and the largest of them."""
    created = [{"op": t.op, "shape": list(t.shape), "elements": t.elements} for t in cost.created]
    return {"flops": cost.flops, "created": created, "largest": cost.largest}


def what_runs(program: Program) -> dict[str, Any]:
    """The statistics of what a call of ``program`` runs, and of its einsum plan (labelled whether it runs).

    ``flops`` and ``largest_intermediate`` are those of what runs: for a native
    kernel its FLOPs (2 per multiply-add, exact) and its largest created tensor; for
    the einsum plan, opt_einsum's estimates (``flops_exact`` False when the figure
    is beyond what a float holds exactly).
    """
    cost = program.kernel_cost()
    flops, largest = program.flops, program.largest_intermediate
    plan = {
        "runs": cost is None, "path": [list(step) for step in program.path], "steps": list(program.steps),
        "flops": flops, "flops_exact": flops < EXACT_FLOAT_INTEGERS,
        "largest_intermediate": largest, "largest_intermediate_exact": largest < EXACT_FLOAT_INTEGERS,
    }
    if cost is None:
        return {"strategy": program.strategy, "kernel": None, "flops": flops, "flops_exact": plan["flops_exact"],
                "largest_intermediate": largest, "einsum_plan": plan}
    kernel = {"name": program.strategy.removeprefix("native:"), **kernel_report(cost)}
    return {"strategy": program.strategy, "kernel": kernel, "flops": cost.flops, "flops_exact": True,
            "largest_intermediate": cost.largest, "einsum_plan": plan}


KFAC_SCALING = {"kfac_expand": ("1/(N*T)", 1), "kfac_reduce": ("1/(N*T^2)", 2)}  # op -> (formula, power of T)


def kfac_scaling(op: str, hyper: ConvHyper, output: tuple[str, ...]) -> dict[str, Any] | None:
    """How the unnormalised sum of a KFAC network becomes the factor (None for other routines).

    The network computes ``sum_{n,t} u u^T`` (expand) or ``sum_n (sum_t u)(sum_t u)^T``
    (reduce) with the legs ``output``; the factor ``A`` is that times ``1/(N*T)``
    or ``1/(N*T^2)`` (``T`` output locations), reshaped to ``(G, d, d)`` with
    ``d = C_in/G * prod(K)``, as ``tnconv.curvature.kfac_expand_factor`` /
    ``kfac_reduce_factor`` return it.
    """
    if op not in KFAC_SCALING:
        return None
    formula, power = KFAC_SCALING[op]
    batch, locations = int(hyper.batch), math.prod(int(size) for size in hyper.output_size)
    channels, taps = int(hyper.in_channels) // int(hyper.groups), math.prod(int(k) for k in hyper.kernel_size)
    d = channels * taps
    return {
        "formula": formula, "N": batch, "T": locations, "divisor": batch * locations**power,
        "network_output": list(output), "shape": [int(hyper.groups), d, d], "d": d,
        "channels_per_group": channels, "kernel_taps": taps,
        "function": f"tnconv.curvature.{op}_factor",
    }
