"""The references of ``support.references`` are right: unfold, autograd im2col and patches against torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from support.layers import ConvLayer, curvature_layers
from support.references import apply, grouped_patches, im2col_autograd, random, reference_unfold


@settings(max_examples=25, deadline=None)
@given(curvature_layers(transposed=False, max_dims=2), st.integers(0, 2**16))
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
@given(curvature_layers(transposed=False), st.integers(0, 2**16))
def test_autograd_im2col_equals_unfold_for_convolutions(layer, seed):
    x = random(layer.x_shape, seed)
    u = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    expected = u.reshape(x.shape[0], layer.groups, -1, u.shape[-1])
    torch.testing.assert_close(im2col_autograd(layer, x), expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16))
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
    @given(curvature_layers(transposed=True))
    def collect(layer):
        seen.append(layer)

    collect()
    assert any(any(layer.output_paddings) for layer in seen)
    assert any(layer.groups > 1 for layer in seen)
