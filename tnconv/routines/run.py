"""Running a routine of the table: compile its network, call it, scale, reshape (``run_routine``).

Every routine runs the same way: the compiled program of its network (or of
the part its ``Shortcut`` names, combined with itself), times its scaling, in
the torch layout of ``result_shape``. ``tnconv.curvature``'s per-layer functions
are this after their argument checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper
from tnconv.conv.options import DEFAULT_OPTIONS, Options
from tnconv.ir.network import Network
from tnconv.programs.compile import compile as compile_network
from tnconv.programs.program import Program
from tnconv.routines.derivation import routine_network
from tnconv.routines.gram import gram
from tnconv.routines.routine import Routine
from tnconv.routines.scaling import quantities, scale, shortcut_pays

HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Finish:
    """How a routine's network value becomes its value: times ``numerator / denominator``, reshaped to ``shape``."""

    shape: tuple[int, ...]
    numerator: int = 1
    denominator: int = 1

    def __call__(self, value: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        """``value`` scaled and in the routine's layout: a new contiguous tensor when scaled, or ``value`` itself
        scaled in place when it is ``fresh`` (a new tensor nothing else holds: a shortcut's result)."""
        result = value.reshape(self.shape).contiguous()
        if self.numerator != 1:
            result = result.mul_(float(self.numerator)) if fresh else result * float(self.numerator)
        if self.denominator != 1:  # N*T^2 may exceed int64: a float rounds, an int would not fit
            result = result.div_(float(self.denominator)) if fresh else result / float(self.denominator)
        return result

    @property
    def factor(self) -> float:
        """The scaling as one number: ``numerator / denominator``."""
        return float(self.numerator) / float(self.denominator)


@cached(maxsize=512)
def finish(routine: Routine, hyper: ConvHyper, options: Options = DEFAULT_OPTIONS) -> Finish:
    """The ``Finish`` of ``routine`` on the layer ``hyper``: its ``result_shape`` and the value of its scaling
    (cached: evaluating the scaling's formula costs sympy substitutions, more than a small layer's whole call)."""
    shape = routine.result_shape(hyper, options)
    if routine.scaling is None:
        return Finish(shape)
    factor = scale(routine.scaling.formula, hyper)
    return Finish(shape, int(factor.p), int(factor.q))


@dataclass(frozen=True)
class Setup:
    """What a call of a routine on one layer needs, worked out once (``setup``).

    ``network`` is evaluated (its ``operands`` by name) and combined (``combine``) with
    itself when the routine has a shortcut; ``finish`` scales and reshapes it.
    """

    network: Network
    operands: tuple[str, ...]
    combine: Callable[[torch.Tensor, ConvHyper], torch.Tensor] | None
    finish: Finish


@cached(maxsize=512)
def setup(routine: Routine, hyper: ConvHyper, options: Options = DEFAULT_OPTIONS) -> Setup:
    """The ``Setup`` of ``routine`` for the layer ``hyper`` (cached; the compiled program is cached by
    ``tnconv.compile``, whose cache bounds the memory programs hold). The shortcut, where the routine has one
    and its ``costs`` (if any) say it pays on this layer, else the whole network."""
    shortcut = routine.shortcut
    if shortcut is not None and shortcut.costs is not None and not shortcut_pays(shortcut.costs, quantities(hyper)):
        shortcut = None
    stages = None if shortcut is None else shortcut.stages
    network = routine_network(routine, hyper, options, True, stages)
    combine = None if shortcut is None else shortcut.combine
    return Setup(network, network.operands, combine, finish(routine, hyper, options))


def run_routine(
    routine: Routine, hyper: ConvHyper, operands: Mapping[str, torch.Tensor], options: Options = DEFAULT_OPTIONS
) -> torch.Tensor:
    """``routine`` on the layer ``hyper`` for ``operands`` (by name): compile (cached), call, scale, reshape.

    With ``routine.widen_half``, float16/bfloat16 operands run in float32 and the
    value returns in their dtype. The operands are not checked here (the public
    functions check them first).
    """
    prepared = setup(routine, hyper, options)
    dtype = next(iter(operands.values())).dtype
    result = run_part(routine, hyper, operands, options)
    if prepared.combine is not None:
        result = prepared.combine(result, hyper)
    result = prepared.finish(result, fresh=prepared.combine is not None)
    return result.to(dtype) if result.dtype != dtype else result


def run_part(
    routine: Routine, hyper: ConvHyper, operands: Mapping[str, torch.Tensor], options: Options = DEFAULT_OPTIONS
) -> torch.Tensor:
    """The value of ``routine``'s network on the layer ``hyper``, or of its shortcut's part where it has one:
    unscaled, in the network's layout, in float32 for float16/bfloat16 operands when ``routine.widen_half``."""
    return part_program(routine, hyper, options)(*part_operands(routine, hyper, operands, options))


def part_program(routine: Routine, hyper: ConvHyper, options: Options = DEFAULT_OPTIONS) -> Program:
    """The compiled program that ``run_part`` calls: ``routine``'s network on the layer, or its shortcut's part."""
    return compile_network(setup(routine, hyper, options).network)


def part_operands(
    routine: Routine, hyper: ConvHyper, operands: Mapping[str, torch.Tensor], options: Options = DEFAULT_OPTIONS
) -> list[torch.Tensor]:
    """``operands`` in the order of ``part_program``'s operands, in float32 for float16/bfloat16 ones when
    ``routine.widen_half``."""
    names = setup(routine, hyper, options).operands
    wide = routine.widen_half and next(iter(operands.values())).dtype in HALF
    return [operands[name].to(torch.float32) if wide else operands[name] for name in names]


# --- the shortcuts of TABLE's routines ---------------------------------------------------------


def sums_rows(sums: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """The patch sums ``(n, g, c_in, k..)`` as the rows of their Gram ``(1, G, d, N)`` (a view)."""
    return sums.reshape(hyper.batch, hyper.groups, -1).permute(1, 2, 0)[None]


def patch_rows(patches: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """The patches ``(n, g, c_in, k.., o..)`` as the rows of their Gram ``(N, G, d, T)``.

    A view of contiguous patches (as the unfold network's native kernel and gathers leave them).
    Otherwise (strided views of the input: the einsum plan's patches, e.g. a strided 1x1 layer's
    ``x[..., ::S, ::S]``) one copy into the layout ``(G, d, N, T)``, returned as an ``(N, G, d, T)``
    view of it: the layout that ``tnconv.routines.gram``'s one deep product over ``N*T`` columns
    reads without a second copy.
    """
    d = hyper.patch_size
    if patches.is_contiguous():
        return patches.view(hyper.batch, hyper.groups, d, -1)
    samples_last = (*range(1, 3 + hyper.dims), 0, *range(3 + hyper.dims, patches.ndim))
    laid_out = patches.permute(samples_last).reshape(hyper.groups, d, hyper.batch, -1)
    return laid_out.permute(2, 0, 1, 3)


def gram_of_sums(sums: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_n s s^T`` per group from the patch sums ``s`` ``(n, g, c_in, k..)``: ``(G, d, d)``, by upper panels."""
    return gram(sums_rows(sums, hyper))


def gram_of_patches(patches: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_{n,o} u u^T`` per group from the patches ``u`` ``(n, g, c_in, k.., o..)``: ``(G, d, d)``, by upper
    panels (about half the products of the network's one dense ``(d, N*T) x (N*T, d)`` product)."""
    return gram(patch_rows(patches, hyper))


def sum_of_squares(grads: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_{m,n} J[m,n,w]^2`` from the per-column weight gradients ``J`` ``(m, n, *W legs)``."""
    return grads.square().sum((0, 1))


def squared_norms(grads: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_w J[n,w]^2`` from the per-sample weight gradients ``J`` ``(n, *W legs)``: ``(N,)``."""
    flat = grads.reshape(grads.shape[0], -1)
    return torch.linalg.vecdot(flat, flat)


def squares_over_samples(grads: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """``sum_n J[n,w]^2`` from the per-sample weight gradients ``J`` ``(n, *W legs)``: the weight legs."""
    return grads.square().sum(0)
