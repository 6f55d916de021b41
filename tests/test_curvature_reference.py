"""Independent float64 references for the curvature tests, and tests that the references are right.

Nothing here uses tnconv. Layers and the layer functions come from the shared
test strategies (``strategies.conv_layers``, ``reference_conv``,
``reference_conv_transpose``, ``reference_unfold``: PyTorch convolutions, any
N). Patches come from an identity-kernel conv (``reference_unfold``) or from
autograd: a layer is linear in its weight, so its Jacobian w.r.t. the weight
*is* the im2col matrix, also for transposed convolutions with
``output_padding``. The other curvature test files import these helpers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import ConvLayer, conv_layers, reference_conv, reference_conv_transpose, reference_unfold


@st.composite
def layers(draw: st.DrawFn, transposed: bool | None = None, max_dims: int = 3) -> ConvLayer:
    """Small conv or ConvTranspose layers (zeros padding, every accepted padding form), any N <= max_dims."""
    is_transposed = draw(st.booleans()) if transposed is None else transposed
    return draw(conv_layers(max_dims=max_dims, transposed=is_transposed, max_batch=3))


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


def conv_layer(
    x_shape: tuple[int, ...], out_channels: int, kernel_size: tuple[int, ...], stride: int = 1, padding: int = 0,
    dilation: int = 1, groups: int = 1,
) -> ConvLayer:
    """A hand-written (non-transposed, zeros-padded) layer for example-based tests."""
    dims = len(kernel_size)
    return ConvLayer(
        x_shape, (out_channels, x_shape[1] // groups, *kernel_size), stride, padding, dilation, groups, "zeros", 0,
        False, ((padding, padding),) * dims,
    )


# --- the references are right ---------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(layers(transposed=False, max_dims=2), st.integers(0, 2**16))
def test_unfold_reference_equals_torch_unfold(layer, seed):
    x = random(layer.x_shape, seed)
    kernel, stride, dilation, pairs = layer.kernel_size, layer.strides, layer.dilations, layer.pairs
    if layer.dims == 1:  # as a 2-d layer with a trailing size-1 dim
        x2, pairs2 = x.unsqueeze(-1), (*pairs, (0, 0))
        kernel2, stride2, dilation2 = (*kernel, 1), (*stride, 1), (*dilation, 1)
    else:
        x2, kernel2, stride2, dilation2, pairs2 = x, kernel, stride, dilation, pairs
    flat = [side for pair in reversed(pairs2) for side in pair]
    expected = F.unfold(F.pad(x2, flat), kernel2, dilation=dilation2, stride=stride2)
    got = reference_unfold(x, kernel, stride, pairs, dilation)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(layers(transposed=False), st.integers(0, 2**16))
def test_autograd_im2col_equals_unfold_for_convolutions(layer, seed):
    x = random(layer.x_shape, seed)
    u = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    expected = u.reshape(x.shape[0], layer.groups, -1, u.shape[-1])
    torch.testing.assert_close(im2col_autograd(layer, x), expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(layers(), st.integers(0, 2**16))
def test_patches_reproduce_the_layer(layer, seed):
    """``Y[n, g, c_out, t] = sum_a W_g[c_out, a] u[n, g, a, t]``, for convs and transposed convs with groups."""
    x, weight = random(layer.x_shape, seed), random(layer.weight_shape, seed + 1)
    u = grouped_patches(layer, x)
    groups = layer.groups
    if layer.transposed:  # (C_in, C_out/G, K) -> per group (C_out/G, C_in/G * K)
        w = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1).transpose(1, 2)
        w = w.reshape(groups, weight.shape[1], -1)
    else:
        w = weight.reshape(groups, weight.shape[0] // groups, -1)
    y = torch.einsum("gca,ngat->ngct", w, u)
    expected = apply(layer, x, weight)
    torch.testing.assert_close(y.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)
    if layer.transposed and layer.groups == 1:  # API.md: conv_transpose == w.transpose(0, 1).flatten(1) @ im2col
        direct = weight.transpose(0, 1).flatten(1) @ u[:, 0]
        torch.testing.assert_close(direct.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)


def test_layer_strategy_reaches_transposed_output_padding():
    """The strategy draws transposed layers with output_padding > 0 (the case the autograd im2col is for)."""
    seen: list[ConvLayer] = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(layers(transposed=True))
    def collect(layer):
        seen.append(layer)

    collect()
    assert any(any(layer.output_paddings) for layer in seen)
    assert any(layer.groups > 1 for layer in seen)
