"""Deriving a routine's network: its start network, then its stages' passes, then (optionally) ``simplify``.

``derive`` runs the stages with their traces (what ``tnconv derive`` prints);
``routine_network`` gives the result alone, cached; ``conv_network`` is the
public entry: a routine by name, from a table, for a layer's hyper-parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.networks import build
from tnconv.conv.options import DEFAULT_OPTIONS, Options
from tnconv.ir.network import Network
from tnconv.passes.simplify import simplify_traced
from tnconv.routines.names import resolve
from tnconv.routines.routine import STARTS, Routine
from tnconv.routines.table import TABLE


@dataclass(frozen=True)
class StageResult:
    """One stage of a derivation as run: its title, the network after it, and the rewrites its pass made.

    ``rewrites`` is None for the start network (built, not rewritten).
    """

    title: str
    network: Network
    rewrites: tuple[str, ...] | None = None


def start_title(routine: Routine) -> str:
    """``built: the unfold network, patches ...`` (``of the transposed layer`` where the routine implies it)."""
    return f"built: {STARTS[routine.start]}" + (" of the transposed layer" if routine.transposed else "")


def check_layer(routine: Routine, hyper: ConvHyper) -> None:
    """ValueError when ``hyper`` lacks what ``routine`` needs: ``out_channels``, a transposed layer."""
    if routine.needs_out_channels and hyper.out_channels is None:
        raise ValueError(f"op={routine.name!r} needs out_channels, got None")
    if routine.transposed and not hyper.transposed:
        raise ValueError(f"op={routine.name!r} is a routine of a transposed layer, got transposed=False")


def derive(routine: Routine, hyper: ConvHyper, options: Options = DEFAULT_OPTIONS, simplify: bool = True) -> tuple[StageResult, ...]:
    """The stages of ``routine``'s derivation for the layer ``hyper``: the start network, one per stage of the
    derivation (with the rewrites of its pass), and ``pass: simplify`` when ``simplify``."""
    check_layer(routine, hyper)
    net = build(routine.start, hyper)
    stages = [StageResult(start_title(routine), net)]
    columns = "m" if options.columns is None else options.columns
    for stage in routine.derivation:
        result, trace = stage.make_pass(hyper, options).traced(net)
        assert isinstance(result, Network)  # the derivation passes take and give a network
        net = result
        stages.append(StageResult(stage.title.format(columns=columns), net, tuple(map(str, trace))))
    if simplify:
        result, trace = simplify_traced(net)
        assert isinstance(result, Network)  # simplify takes and gives a network
        stages.append(StageResult("pass: simplify", result, tuple(map(str, trace))))
    return tuple(stages)


@cached(maxsize=512)
def routine_network(
    routine: Routine, hyper: ConvHyper, options: Options = DEFAULT_OPTIONS, simplify: bool = True, stages: int | None = None
) -> Network:
    """The network of ``routine`` for the layer ``hyper`` (cached): after its first ``stages`` derivation stages
    (all when None), simplified when ``simplify``."""
    check_layer(routine, hyper)
    net = build(routine.start, hyper)
    for stage in routine.derivation[:stages]:
        result = stage.make_pass(hyper, options)(net)
        assert isinstance(result, Network)  # the derivation passes take and give a network
        net = result
    if simplify:
        result = simplify_traced(net)[0]
        assert isinstance(result, Network)  # simplify takes and gives a network
        net = result
    return net


def conv_network(
    op: str,
    input_shape: object,
    kernel_size: object,
    out_channels: object = None,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
    padding_mode: object = "zeros",
    output_padding: object = 0,
    transposed: object = False,
    simplify: bool = True,
    *,
    routines: Mapping[str, Routine] = TABLE,
) -> Network:
    """The tensor network of a named conv routine, to inspect, transform or compile.

    Args:
        op: a routine of ``routines``: forward, input_vjp, weight_vjp, unfold,
            unfold_transpose, transpose_forward, fold, kfac_expand, kfac_reduce,
            per_sample_grad, diag_ggn in ``tnconv.routines.TABLE``
            (``-`` may stand for ``_``: ``kfac-reduce`` is ``kfac_reduce``).
            ``unfold_transpose``/``transpose_forward`` are ``unfold``/``forward`` of a
            transposed layer (``transposed`` is implied).
        input_shape: ``(N, C_in, *I)`` of the layer input (for ``fold``: of the folded image); each size an
            int, a symbol name (``"N"``) or a sympy expression (a positive integer symbol stands for any size).
        kernel_size: int or N ints (``weight.shape[2:]`` works).
        out_channels: C_out (an int, a symbol name or a sympy expression); needed where a weight or output
            gradient appears.
        stride, padding, dilation, groups, padding_mode, output_padding, transposed:
            as in ``torch.nn.Conv*d`` / ``ConvTranspose*d`` (see ``tnconv.conv.hyper``).
        simplify: run ``tnconv.simplify`` on the result.
        routines: the routine table to read ``op`` from (``tnconv.routines.TABLE``, or
            a copy with more routines: ``tnconv.routines.routine_table``).

    Returns:
        The network (concrete when every size is an int, else with sympy sizes: output
        sizes such as ``floor((H - 3)/2) + 1``; rewrites fire only where proven for all
        values of the symbols, see ``tnconv.simplify``); operands ``X`` (layer input), ``W`` (torch weight),
        ``V`` (gradient of the layer output; for ``diag_ggn`` its ``M`` columns on a
        leg ``m`` of symbolic size) as each routine needs them.
    """
    routine = resolve(op, routines)
    if not isinstance(simplify, bool):
        raise TypeError(f"simplify must be a bool, got {simplify!r}")
    hyper = conv_hyper(
        input_shape, kernel_size, out_channels=out_channels, stride=stride, padding=padding, dilation=dilation,
        groups=groups, padding_mode=padding_mode, output_padding=output_padding,
        transposed=True if routine.transposed else transposed, symbolic=True,
    )
    return routine_network(routine, hyper, DEFAULT_OPTIONS, simplify)
