"""PyTorch and autograd references for the tests (nothing here uses tnconv).

- Layer functions for any N: ``reference_conv`` (``F.pad`` + ``F.conv{1,2,3}d``),
  ``reference_conv_transpose`` (``conv_transpose`` + crop), ``reference_unfold``
  (a grouped conv with one-hot weights); for N > 3 a sum of lower-dim convs over
  the first spatial dim. They read the layer's padding as the pairs that
  ``support.layers`` computed, independently of tnconv's parser.
- Curvature references: patches from ``reference_unfold`` or from autograd (a
  layer is linear in its weight, so its Jacobian w.r.t. the weight *is* the im2col
  matrix, also for transposed convolutions with ``output_padding``), KFAC factors,
  per-sample gradients (``vmap(grad)``), GGN diagonals, flat Jacobians.

``tests/test_curvature_reference.py`` checks these references against torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from support.layers import ConvLayer, Pairs

def flat_pad(pairs: Pairs) -> tuple[int, ...]:
    """``F.pad``'s argument for per-dim pairs (last dim first)."""
    return tuple(v for pair in reversed(pairs) for v in pair)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def reference_conv(
    x: torch.Tensor, w: torch.Tensor, stride: Sequence[int], pairs: Pairs, dilation: Sequence[int], groups: int,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """PyTorch's conv of ``x`` padded by ``pairs`` (``F.pad`` with ``padding_mode``), any N."""
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(x, flat_pad(pairs), mode=mode) if any(v for p in pairs for v in p) else x
    return _unpadded_conv(padded, w, tuple(stride), tuple(dilation), groups)


def _unpadded_conv(x: torch.Tensor, w: torch.Tensor, stride: tuple, dilation: tuple, groups: int) -> torch.Tensor:
    dims = x.ndim - 2
    if dims <= 3:
        return _CONV[dims](x, w, stride=stride, dilation=dilation, groups=groups)
    s, d, k = stride[0], dilation[0], w.shape[2]
    outputs = (x.shape[2] - d * (k - 1) - 1) // s + 1
    slices = []
    for o in range(outputs):
        terms = [_unpadded_conv(x[:, :, s * o + d * t], w[:, :, t], stride[1:], dilation[1:], groups) for t in range(k)]
        slices.append(torch.stack(terms).sum(0))
    return torch.stack(slices, dim=2)


def reference_conv_transpose(
    x: torch.Tensor, w: torch.Tensor, stride: Sequence[int], pairs: Pairs, output_padding: Sequence[int],
    dilation: Sequence[int], groups: int,
) -> torch.Tensor:
    """PyTorch's transposed conv without padding, cropped by ``pairs``, any N."""
    full = _full_conv_transpose(x, w, tuple(stride), tuple(output_padding), tuple(dilation), groups)
    index = (slice(None), slice(None)) + tuple(slice(l, full.shape[2 + n] - r) for n, (l, r) in enumerate(pairs))
    return full[index]


def _full_conv_transpose(x, w, stride, output_padding, dilation, groups) -> torch.Tensor:
    dims = x.ndim - 2
    if dims <= 3:
        return _CONV_T[dims](x, w, stride=stride, output_padding=output_padding, dilation=dilation, groups=groups)
    s, d, k, op = stride[0], dilation[0], w.shape[2], output_padding[0]
    size = (x.shape[2] - 1) * s + d * (k - 1) + 1 + op
    result = None
    for o in range(x.shape[2]):
        for t in range(k):
            part = _full_conv_transpose(x[:, :, o], w[:, :, t], stride[1:], output_padding[1:], dilation[1:], groups)
            if result is None:
                result = part.new_zeros((part.shape[0], part.shape[1], size, *part.shape[2:]))
            result[:, :, s * o + d * t] += part
    return result


def reference_unfold(
    x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int], pairs: Pairs, dilation: Sequence[int]
) -> torch.Tensor:
    """im2col in F.unfold's layout ``(N, C*prod(K), L)`` for any N: a grouped conv with one-hot weights."""
    channels, taps = x.shape[1], math.prod(kernel_size)
    eye = torch.eye(taps, dtype=x.dtype).reshape(taps, 1, *kernel_size).repeat(channels, 1, *(1,) * len(kernel_size))
    columns = reference_conv(x, eye, stride, pairs, dilation, channels)
    return columns.flatten(2)


# --- curvature ------------------------------------------------------------------------------------
def kwargs(layer: ConvLayer) -> dict[str, object]:
    """Keyword arguments of the tnconv.curvature routines (after x, [grad_output,] kernel_size) for a layer."""
    extra: dict[str, object] = {}
    if layer.transposed:
        extra = {"transposed": True, "output_padding": layer.output_padding}
    return dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups, **extra)


def apply(layer: ConvLayer, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's output with PyTorch's own functions."""
    if layer.transposed:
        return reference_conv_transpose(
            x, weight, layer.strides, layer.pairs, layer.output_paddings, layer.dilations, layer.groups
        )
    return reference_conv(x, weight, layer.strides, layer.pairs, layer.dilations, layer.groups)


def random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- patches ------------------------------------------------------------------------------------
def im2col_autograd(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """Per-group patches ``u[n, g, a, t]`` (``a`` over ``(c_in, k..)``) as the Jacobian of the layer w.r.t. W.

    With one output channel per group the output ``Y[n, g, t] = sum_a W_g[a] u[n, g, a, t]``
    is linear in the weight, so ``dY/dW`` holds the patches; this works alike for
    convolutions and transposed convolutions (with ``output_padding``).
    """
    groups, c_in, kernel = layer.groups, layer.in_channels, layer.kernel_size
    shape = (c_in, 1, *kernel) if layer.transposed else (groups, c_in // groups, *kernel)
    probe = dataclasses.replace(layer, weight_shape=shape)
    jacobian = torch.func.jacfwd(lambda w: apply(probe, x, w))(torch.zeros(shape, dtype=x.dtype))  # (N, G, *O, *W)
    d = c_in // groups * math.prod(kernel)
    blocks = jacobian.reshape(x.shape[0], groups, -1, groups, d)
    index = torch.arange(groups)
    return blocks[:, index, :, index, :].permute(1, 0, 3, 2)  # (G, N, T, d) -> (N, G, d, T)


def grouped_patches(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """``u[n, g, a, t]``: unfold-based for convolutions, autograd-based for transposed ones."""
    if layer.transposed:
        return im2col_autograd(layer, x)
    u = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    return u.reshape(x.shape[0], layer.groups, -1, u.shape[-1])


def kfac_references(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KFAC-expand and KFAC-reduce input factors ``(G, d, d)`` from patches ``u[n, g, a, t]``."""
    batch, locations = u.shape[0], u.shape[-1]
    expand = torch.einsum("ngat,ngbt->gab", u, u) / (batch * locations)
    summed = u.sum(-1)
    reduce = torch.einsum("nga,ngb->gab", summed, summed) / (batch * locations**2)
    return expand, reduce


# --- gradients ----------------------------------------------------------------------------------
def per_sample_reference(layer: ConvLayer, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients of ``<layer(x_n, W), v_n>`` by ``torch.func.vmap(grad)``: ``(N, *W)``."""
    weight = random(layer.weight_shape, 0)

    def term(w: torch.Tensor, xn: torch.Tensor, vn: torch.Tensor) -> torch.Tensor:
        return (apply(layer, xn[None], w) * vn[None]).sum()

    return torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))(weight, x, v)


def diag_ggn_reference(layer: ConvLayer, x: torch.Tensor, sqrt_ggn: torch.Tensor) -> torch.Tensor:
    """``sum_{m,n} (per-sample weight gradient of sqrt_ggn[m, n])^2``."""
    return sum(per_sample_reference(layer, x, column).square().sum(0) for column in sqrt_ggn)


def flat_jacobian(function: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor) -> torch.Tensor:
    """The Jacobian of ``function`` at ``point`` as an ``(outputs, inputs)`` matrix."""
    jacobian = torch.func.jacrev(function)(point)
    return jacobian.reshape(-1, point.numel())
