"""Curvature of one conv layer: KFAC input factors, per-sample gradients, the GGN diagonal.

Each routine validates its arguments (``tnconv.curvature.checks``), takes the
network of ``tnconv.conv_network`` for the layer (``tnconv.conv.derived``),
compiles it once per layer and calls it; only scaling and reshaping happen here.
"""

from __future__ import annotations

import math

import torch

from tnconv.conv.derived import network
from tnconv.conv.hyper import ConvHyper
from tnconv.curvature.checks import gradient_layer, layer
from tnconv.lower.compile import compile as compile_network


def run(op: str, hyper: ConvHyper, columns: int | None = None, **operands: torch.Tensor) -> torch.Tensor:
    """Compile (cached) and call the derived network ``op`` of the layer."""
    return compile_network(network(op, hyper, True, columns))(**operands)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the factors are summed in: float32 for float16 and bfloat16, else ``dtype`` itself.

    A KFAC factor sums ``N*T`` (expand) or ``N*T^2`` (reduce) products before
    it is scaled: in float16 the sums overflow (a ResNet layer's ``sum_t u`` of
    3136 locations squared is ~1e8, float16 ends at 65504) and in bfloat16 they
    lose all but ~3 digits. float32 and float64 run as they are.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def scaled_factor(x: torch.Tensor, hyper: ConvHyper, reduce: bool, scale: int) -> torch.Tensor:
    """``kfac_factor(...) / scale``, accumulated in ``accumulation_dtype`` and returned in ``x.dtype``."""
    wide = accumulation_dtype(x.dtype)
    divisor = float(scale)  # N*T^2 may exceed int64 (a large padding); a float scalar rounds, torch cannot take it
    if wide == x.dtype:
        return kfac_factor(x, hyper, reduce).div_(divisor)
    return kfac_factor(x.to(wide), hyper, reduce).div_(divisor).to(x.dtype)


def kfac_factor(x: torch.Tensor, hyper: ConvHyper, reduce: bool) -> torch.Tensor:
    """``sum_{n,t} u u^T`` per group from the patches (expand) or their location sums (reduce), unscaled.

    KFAC-expand runs its whole derived network: the planner contracts the
    two copies of ``x`` through the gathered patterns without laying the
    unfolded input out for a matmul (measured faster than patches @ patches^T
    on the benchmark layers). KFAC-reduce computes the tiny location sums
    ``(N, G, d)`` (``patch_sums``) and one batched product of them with
    themselves: as fast as its whole network (which also prepares its copy
    of ``x`` once) and faster on depthwise layers, whose network result needs a
    reordering copy. The result is a new tensor (scaled in place by the callers).
    """
    d = hyper.in_channels // hyper.groups * hyper.kernel_elements
    if not reduce:
        return run("kfac_expand", hyper, X=x).reshape(hyper.groups, d, d).contiguous()
    sums = run("patch_sums", hyper, X=x).reshape(hyper.batch, hyper.groups, d)
    return torch.einsum("nga,ngb->gab", sums, sums).contiguous()


def kfac_expand_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-expand input factor ``A_g = 1/(N*T) sum_{n,t} u_g[n,t] u_g[n,t]^T``: ``(G, d, d)``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        kernel_size, stride, padding, dilation, groups: the layer's, as in ``torch.nn.Conv*d``.
        transposed, output_padding: the layer is a ``ConvTranspose*d`` with this output padding.

    float16 and bfloat16 inputs are summed in float32 (the sums overflow float16) and the
    factor is returned in the input's dtype.
    """
    hyper = layer(x, kernel_size, None, stride, padding, dilation, groups, transposed, output_padding)
    return scaled_factor(x, hyper, False, hyper.batch * math.prod(hyper.output_size))


def kfac_reduce_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-reduce input factor ``A_g = 1/(N*T^2) sum_n (sum_t u_g[n,t]) (sum_t u_g[n,t])^T``: ``(G, d, d)``.

    Arguments as ``kfac_expand_factor``. The patches are summed over locations
    through ``sum_o Pi`` (a ``(K, I)`` matrix per dim) before they meet ``x``,
    so the unfolded input is never formed.
    """
    hyper = layer(x, kernel_size, None, stride, padding, dilation, groups, transposed, output_padding)
    return scaled_factor(x, hyper, True, hyper.batch * math.prod(hyper.output_size) ** 2)


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
    grad_output, hyper = gradient_layer(
        x, grad_output, "grad_output", 0, kernel_size, stride, padding, dilation, groups, transposed, output_padding
    )
    result = run("per_sample_grad", hyper, X=x, V=grad_output).contiguous()
    return result.reshape(hyper.batch, *hyper.weight_shape)


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
    VJPs ``J[m, n, w]``; here ``J`` is computed once and squared.
    """
    sqrt_ggn, hyper = gradient_layer(
        x, sqrt_ggn, "sqrt_ggn", 1, kernel_size, stride, padding, dilation, groups, transposed, output_padding
    )
    grads = run("column_grads", hyper, sqrt_ggn.shape[0], X=x, V=sqrt_ggn)  # (m, n, *W legs)
    return grads.square().sum((0, 1)).reshape(hyper.weight_shape)
