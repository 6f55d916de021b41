"""Curvature of one conv layer: KFAC input factors, per-sample gradients, the GGN diagonal.

Each function checks its arguments (``tnconv.curvature.checks``) and runs its
routine of ``tnconv.routines.TABLE`` (``run_routine``: compile the derived
network once per layer, call it, scale, reshape). The KFAC factors run their
routines' shortcuts (the patches, or the patch sums, multiplied with themselves
by ``tnconv.routines.gram``: one triangle, mirrored) through ``accumulate_input_factor``,
which ``KFAC.update`` calls to add a batch to its running factors in place. KFAC factors
of float16 and bfloat16 inputs are summed in float32 (the sums overflow float16; the
table's ``widen_half``) and returned in the input's dtype.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterator

import torch

from tnconv.conv.hyper import ConvHyper
from tnconv.curvature.checks import gradient_layer, layer
from tnconv.routines.gram import HALF, accumulate_gram
from tnconv.routines.routine import Options
from tnconv.routines.run import finish, patch_rows, run_part, run_routine, sums_rows
from tnconv.routines.table import TABLE

PATCH_CHUNK = 1 << 22
"""Elements of patches KFAC-expand forms at once (16 MiB in float32): the samples are taken in chunks of about
this size, so that the patches of a whole batch (75 MiB for a ResNet-18 3x3 layer at batch 32) are never
allocated and their memory is reused from chunk to chunk."""


def accumulate_input_factor(
    x: torch.Tensor, hyper: ConvHyper, reduce: bool, out: torch.Tensor | None = None, alpha: float = 1.0,
    beta: float = 0.0,
) -> torch.Tensor:
    """``out = beta * out + alpha * A`` in place for KFAC's input factor ``A`` ``(G, d, d)`` of the layer ``hyper``.

    ``A`` is the KFAC-reduce factor when ``reduce``, else the KFAC-expand factor; ``out``
    (symmetric; any float dtype of the products, float32 for half ``x``) is created when
    None. The patch sums (reduce) or the patches of chunks of samples (expand, about
    ``PATCH_CHUNK`` elements each) come from the routine's shortcut part and are multiplied
    with themselves by upper panels (``tnconv.routines.gram``), scaled by ``alpha`` times the
    routine's scaling, straight into ``out``: no temporary of the factor's size. The arguments
    are not checked (the public functions check them).
    """
    routine = TABLE["kfac_reduce" if reduce else "kfac_expand"]
    scale = alpha * finish(routine, hyper).factor
    if out is None:
        d = hyper.in_channels // hyper.groups * hyper.kernel_elements
        out = x.new_empty((hyper.groups, d, d), dtype=torch.float32 if x.dtype in HALF else x.dtype)
        beta = 0.0
    for part, part_hyper in _sample_chunks(x, hyper, reduce):
        value = run_part(routine, part_hyper, {"X": part})
        rows = sums_rows(value, part_hyper) if reduce else patch_rows(value, part_hyper)
        accumulate_gram(rows, out, scale, beta)
        beta = 1.0
    return out


def _sample_chunks(x: torch.Tensor, hyper: ConvHyper, whole: bool) -> Iterator[tuple[torch.Tensor, ConvHyper]]:
    """``x`` in chunks of samples of equal size whose patches hold about ``PATCH_CHUNK`` elements (one chunk when
    ``whole``), each with its layer."""
    per_sample = hyper.in_channels * hyper.kernel_elements * math.prod(hyper.output_size)
    chunks = 1 if whole else min(hyper.batch, -(-hyper.batch * per_sample // PATCH_CHUNK))
    size = -(-hyper.batch // chunks)
    for start in range(0, hyper.batch, size):
        part = x[start : start + size]
        yield part, hyper if part.shape[0] == hyper.batch else replace(hyper, input_shape=tuple(part.shape))


def _input_factor(x: torch.Tensor, arguments: dict[str, object], reduce: bool) -> torch.Tensor:
    factor = accumulate_input_factor(x, layer(x, arguments), reduce)
    return factor.to(x.dtype) if factor.dtype != x.dtype else factor


def kfac_expand_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-expand input factor ``A_g = 1/(N*T) sum_{n,t} u_g[n,t] u_g[n,t]^T``: ``(G, d, d)``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        kernel_size, stride, padding, dilation, groups: the layer's, as in ``torch.nn.Conv*d``.
        transposed, output_padding: the layer is a ``ConvTranspose*d`` with this output padding.

    The patches of chunks of samples (the routine's shortcut part, the derived unfold
    network) are multiplied with themselves by upper panels and mirrored
    (``accumulate_input_factor``): about half the products of a dense Gram, exactly
    symmetric. float16 and bfloat16 inputs are summed in float32 (the sums overflow
    float16) and the factor is returned in the input's dtype.
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    return _input_factor(x, arguments, reduce=False)


def kfac_reduce_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-reduce input factor ``A_g = 1/(N*T^2) sum_n (sum_t u_g[n,t]) (sum_t u_g[n,t])^T``: ``(G, d, d)``.

    Arguments as ``kfac_expand_factor``. The patches are summed over locations
    through ``sum_o Pi`` (a ``(K, I)`` matrix per dim) before they meet ``x``,
    so the unfolded input is never formed; the sums ``(N, G, d)`` are computed
    once and multiplied with themselves by upper panels (the routine's shortcut).
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    return _input_factor(x, arguments, reduce=True)


def per_sample_weight_grad(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """Per-sample weight gradients ``(N, *weight.shape)``: sample n's weight VJP of ``grad_output[n]``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        grad_output: the gradient w.r.t. the layer output ``(N, C_out, *O)``.
        kernel_size, ...: the layer's hyper-parameters (see ``kfac_expand_factor``).
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    return run_routine(TABLE["per_sample_grad"], hyper, {"X": x, "V": grad_output})


def diag_ggn_weight(
    x: torch.Tensor, sqrt_ggn: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """The GGN diagonal of the weight, ``weight.shape``: ``sum_{m,n} (weight VJP of sqrt_ggn[m, n])^2``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        sqrt_ggn: ``(M, N, C_out, *O)``, M columns of a symmetric factorisation of
            the GGN w.r.t. the layer output (``sqrt_ggn`` + ``pullback`` build it).
        kernel_size, ...: the layer's hyper-parameters (see ``kfac_expand_factor``).

    The ``diag_ggn`` network multiplies two copies of the per-column weight
    VJPs ``J[m, n, w]``; here ``J`` is computed once and squared (the routine's shortcut).
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    sqrt_ggn, hyper = gradient_layer(x, sqrt_ggn, "sqrt_ggn", 1, arguments)
    return run_routine(TABLE["diag_ggn"], hyper, {"X": x, "V": sqrt_ggn}, Options(sqrt_ggn.shape[0]))
