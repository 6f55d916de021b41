"""Curvature of one conv layer: KFAC input factors, per-sample gradients, the GGN diagonal.

Each function checks its arguments (``tnconv.conv.checks``) and runs its
routine of ``tnconv.routines.TABLE`` (``run_routine``: compile the derived
network once per layer, call it, scale, reshape). The KFAC factors run their
routines' shortcuts (the patches, or the patch sums, multiplied with themselves
by ``tnconv.routines.gram``: one triangle, mirrored, or one dense product where shallow) through
``tnconv.curvature.patches.accumulate_input_factor``, which ``KFAC.update`` calls to add a
batch to its running factors in place. KFAC factors
of float16 and bfloat16 inputs are summed in float32 (the sums overflow float16; the
table's ``widen_half``) and returned in the input's dtype.
"""

from __future__ import annotations

import torch

from tnconv.conv.options import Options
from tnconv.conv.checks import gradient_layer, layer
from tnconv.curvature.patches import accumulate_input_factor
from tnconv.routines.run import run_routine
from tnconv.routines.table import TABLE

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
