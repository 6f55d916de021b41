"""PyTorch implementations of the routines of ``TABLE``: the references of ``--check`` (float64) and ``--bench``.

They are written the way one does it without tnconv: the layer itself is
``torch.nn.functional.conv*d`` / ``conv_transpose*d``, VJPs are
``aten.convolution_backward`` (what autograd runs), patches come from a conv
with an identity kernel (``F.unfold`` for 2-d convs), and the curvature
routines are the usual unfold-then-einsum recipes (as in BackPACK and
curvlinops). Each ``build`` function (``Reference.build`` of its routine)
returns a function of the operands that gives the routine's value, scaled, with
the elements of its ``result_shape`` in order; each ``*_largest`` says how many
numbers the largest tensor it creates beyond operands and result holds.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from tnconv.conv.hyper import ConvHyper
from tnconv.conv.options import Options

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
REFERENCE_DIMS = len(CONV)  # PyTorch has conv1d, conv2d and conv3d

Operands = Mapping[str, torch.Tensor]
Implementation = Callable[[Operands], torch.Tensor]


def supported(hyper: ConvHyper) -> str | None:
    """Why PyTorch has no reference for this layer (None when it has one)."""
    if hyper.dims > REFERENCE_DIMS:
        return f"PyTorch has no {hyper.dims}-d convolution"
    return None


def _symmetric(hyper: ConvHyper) -> bool:
    return all(left == right for left, right in hyper.padding)


def layer(hyper: ConvHyper, x: torch.Tensor, weight: torch.Tensor, groups: int | None = None) -> torch.Tensor:
    """The layer's output with PyTorch's own functions (any padding mode, asymmetric padding)."""
    groups = hyper.groups if groups is None else groups
    if hyper.transposed:
        symmetric = _symmetric(hyper)
        y = CONV_TRANSPOSE[hyper.dims](
            x, weight, stride=hyper.stride, padding=[left for left, _ in hyper.padding] if symmetric else 0,
            output_padding=hyper.output_padding, groups=groups, dilation=hyper.dilation,
        )
        if symmetric:
            return y
        for dim, (left, right) in enumerate(hyper.padding, 2):  # padding crops (left, right) pixels off the full output
            y = y.narrow(dim, left, y.shape[dim] - left - right)
        return y
    if hyper.padding_mode == "zeros" and _symmetric(hyper):
        padding = [left for left, _ in hyper.padding]
        return CONV[hyper.dims](x, weight, stride=hyper.stride, padding=padding, dilation=hyper.dilation, groups=groups)
    flat = [side for pair in reversed(hyper.padding) for side in pair]
    mode = "constant" if hyper.padding_mode == "zeros" else hyper.padding_mode
    padded = F.pad(x, flat, mode=mode)
    return CONV[hyper.dims](padded, weight, stride=hyper.stride, dilation=hyper.dilation, groups=groups)


def patches(hyper: ConvHyper, x: torch.Tensor) -> torch.Tensor:
    """The unfolded input ``(N, C_in * prod(K), T)`` (im2col; for a transposed layer that of its conv)."""
    batch, channels = x.shape[:2]
    taps = hyper.kernel_elements
    if hyper.dims == 2 and not hyper.transposed and hyper.padding_mode == "zeros" and _symmetric(hyper):
        return F.unfold(
            x, hyper.kernel_size, dilation=hyper.dilation, padding=tuple(l for l, _ in hyper.padding), stride=hyper.stride
        )
    eye = torch.eye(taps, dtype=x.dtype, device=x.device).reshape(taps, 1, *hyper.kernel_size)
    eye = eye.repeat(channels, 1, *(1,) * hyper.dims)
    if hyper.transposed:  # conv_transpose weight (C_in, taps, *K): channel c, tap j reads kernel position j
        eye = eye.reshape(channels, taps, *hyper.kernel_size)
    return layer(hyper, x, eye, groups=channels).reshape(batch, channels * taps, -1)


def unfolded_size(hyper: ConvHyper, options: Options) -> int:
    """Numbers in the unfolded input ``(N, C_in * prod(K), T)`` that ``patches`` creates."""
    return hyper.batch * hyper.in_channels * hyper.kernel_elements * math.prod(hyper.output_size)


def _grouped(hyper: ConvHyper, columns: torch.Tensor) -> torch.Tensor:
    """``(N, C*prod(K), T)`` -> ``(N, G, d, T)``."""
    return columns.reshape(columns.shape[0], hyper.groups, -1, columns.shape[-1])


def _backward(hyper: ConvHyper, v: torch.Tensor, x: torch.Tensor, w: torch.Tensor, which: int) -> torch.Tensor:
    """Input (``which=0``) or weight (``which=1``) VJP of the layer."""
    if hyper.padding_mode == "zeros" and _symmetric(hyper):
        mask = [which == 0, which == 1, False]
        result = torch.ops.aten.convolution_backward(
            v, x, w, None, list(hyper.stride), [l for l, _ in hyper.padding], list(hyper.dilation),
            hyper.transposed, list(hyper.output_padding), hyper.groups, mask,
        )
        return result[which]
    x = x.detach().requires_grad_(which == 0)
    w = w.detach().requires_grad_(which == 1)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(layer(hyper, x, w), (x, w)[which], v)
    return grad


def _per_sample(hyper: ConvHyper, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients ``(..., N, *weight.shape)`` for ``v`` of shape ``(..., N, C_out, *O)``."""
    u = _grouped(hyper, patches(hyper, x))  # n g d t
    lead = v.shape[:-hyper.dims - 2]
    flat_v = v.reshape(*lead, v.shape[-hyper.dims - 2], hyper.groups, -1, u.shape[-1])  # ... n g o t
    grads = torch.einsum("...ngot,ngdt->...ngod", flat_v, u)
    c_in = x.shape[1] // hyper.groups
    c_out = flat_v.shape[-2]
    taps = hyper.kernel_elements
    grads = grads.reshape(*grads.shape[:-1], c_in, taps)  # ... n g o c k
    if hyper.transposed:  # weight (C_in, C_out/G, *K): (g, c_in) first, then c_out
        grads = grads.movedim(-3, -2)
        return grads.reshape(*lead, x.shape[0], hyper.groups * c_in, c_out, *hyper.kernel_size)
    return grads.reshape(*lead, x.shape[0], hyper.groups * c_out, c_in, *hyper.kernel_size)


def _empty(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device)


# --- one reference per routine -----------------------------------------------------------------


def forward(hyper: ConvHyper) -> Implementation:
    """The layer: ``conv*d`` / ``conv_transpose*d`` of ``X`` and ``W``."""
    return lambda t: layer(hyper, t["X"], t["W"])


def input_vjp(hyper: ConvHyper) -> Implementation:
    """The input gradient of the layer for output gradient ``V`` (``convolution_backward``)."""
    return lambda t: _backward(hyper, t["V"], _empty(hyper.input_shape, t["V"]), t["W"], 0)


def weight_vjp(hyper: ConvHyper) -> Implementation:
    """The weight gradient of the layer for output gradient ``V`` (``convolution_backward``)."""
    return lambda t: _backward(hyper, t["V"], t["X"], _empty(hyper.weight_shape, t["X"]), 1)


def unfold(hyper: ConvHyper) -> Implementation:
    """The patches of ``X`` (``F.unfold``, or a conv with an identity kernel)."""
    return lambda t: patches(hyper, t["X"])


def fold(hyper: ConvHyper) -> Implementation:
    """col2im: ``F.fold`` for 2-d layers, else the adjoint of ``patches`` by autograd."""
    if hyper.dims == 2 and hyper.padding_mode == "zeros" and _symmetric(hyper):
        size, padding = hyper.input_size, tuple(left for left, _ in hyper.padding)
        return lambda t: F.fold(t["X"], size, hyper.kernel_size, hyper.dilation, padding, hyper.stride)

    def adjoint(t: Operands) -> torch.Tensor:
        image = _empty(hyper.input_shape, t["X"]).zero_().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(patches(hyper, image), image, t["X"])
        return grad

    return adjoint


def patch_sums(hyper: ConvHyper) -> Implementation:
    """The patches of ``X`` summed over the output locations: ``(N, C_in * prod(K))``."""
    return lambda t: patches(hyper, t["X"]).sum(-1)


def kfac_expand(hyper: ConvHyper) -> Implementation:
    """``1/(N*T) sum_{n,t} u u^T`` per group from the patches ``u``: ``(G, d, d)``."""
    scale = hyper.batch * math.prod(hyper.output_size)

    def factor(t: Operands) -> torch.Tensor:
        u = _grouped(hyper, patches(hyper, t["X"]))
        return torch.einsum("ngat,ngbt->gab", u, u) / scale

    return factor


def kfac_expand_diag(hyper: ConvHyper) -> Implementation:
    """``1/(N*T) sum_{n,t} u * u`` per group from the patches ``u``: ``(G, d)``, the KFAC-expand factor's diagonal."""
    scale = hyper.batch * math.prod(hyper.output_size)
    return lambda t: _grouped(hyper, patches(hyper, t["X"])).square().sum((0, 3)) / scale


def kfac_reduce(hyper: ConvHyper) -> Implementation:
    """``1/(N*T^2) sum_n (sum_t u)(sum_t u)^T`` per group from the patches ``u``: ``(G, d, d)``."""
    scale = hyper.batch * math.prod(hyper.output_size) ** 2

    def factor(t: Operands) -> torch.Tensor:
        sums = _grouped(hyper, patches(hyper, t["X"])).sum(-1)
        return torch.einsum("nga,ngb->gab", sums, sums) / scale

    return factor


def per_sample_grad(hyper: ConvHyper) -> Implementation:
    """Each sample's weight gradient from the patches: ``(N, *weight.shape)``."""
    return lambda t: _per_sample(hyper, t["X"], t["V"])


def diag_ggn(hyper: ConvHyper) -> Implementation:
    """``sum_{m,n}`` of the squared per-sample weight gradients of the columns ``V[m]``: ``weight.shape``."""
    return lambda t: _per_sample(hyper, t["X"], t["V"]).square().sum(dim=(0, 1))


def diag_ggn_largest(hyper: ConvHyper, options: Options) -> int:
    """The patches, and the per-sample gradients of every column ``(M, N, *weight.shape)``."""
    columns = 1 if options.columns is None else options.columns
    return max(unfolded_size(hyper, options), columns * hyper.batch * math.prod(hyper.weight_shape))


def per_sample_grad_norm(hyper: ConvHyper) -> Implementation:
    """Each sample's squared weight-gradient norm from its per-sample gradient: ``(N,)``."""
    return lambda t: _per_sample(hyper, t["X"], t["V"]).flatten(1).square().sum(1)


def sum_grad_squared(hyper: ConvHyper) -> Implementation:
    """The squared per-sample weight gradients summed over samples: ``weight.shape``."""
    return lambda t: _per_sample(hyper, t["X"], t["V"]).square().sum(0)


def per_sample_largest(hyper: ConvHyper, options: Options) -> int:
    """The patches, and the per-sample gradients ``(N, *weight.shape)``."""
    return max(unfolded_size(hyper, options), hyper.batch * math.prod(hyper.weight_shape))
