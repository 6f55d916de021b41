"""weight_vjp_dropout: exact at keep=1, each draw the VJP of the kept slices, unbiased, dropped slices never read."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import ConvLayer
from test_curvature_reference import conv_layer, kwargs, layers, per_sample_reference, random

from tnconv import curvature

TOL = dict(rtol=1e-10, atol=1e-12)


def exact_vjp(layer: ConvLayer, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return per_sample_reference(layer, x, v).sum(0)


def spatial_mask(layer: ConvLayer, keep: float, seed: int) -> torch.Tensor:
    """The documented draw of ``mode="spatial"``: ``torch.rand(*I, generator) < keep``."""
    return torch.rand(layer.x_shape[2:], generator=torch.Generator().manual_seed(seed)) < keep


@settings(max_examples=30, deadline=None)
@given(layers(transposed=False), st.sampled_from(["channel", "spatial"]), st.integers(0, 2**16))
def test_keep_one_is_the_exact_weight_vjp(layer, mode, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    got = curvature.weight_vjp_dropout(x, v, layer.kernel_size, 1.0, mode, **kwargs(layer))
    assert got.shape == layer.weight_shape
    torch.testing.assert_close(got, exact_vjp(layer, x, v), **TOL)


@settings(max_examples=30, deadline=None)
@given(layers(transposed=False), st.floats(0.2, 0.9), st.integers(0, 2**16))
def test_channel_draw_keeps_whole_channels_scaled(layer, keep, seed):
    """Each input channel's slice of the estimate is either 0 or the exact one times 1/keep."""
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    generator = torch.Generator().manual_seed(seed)
    got = curvature.weight_vjp_dropout(x, v, layer.kernel_size, keep, "channel", generator=generator, **kwargs(layer))
    exact = exact_vjp(layer, x, v)
    groups, c_in = layer.groups, layer.x_shape[1] // layer.groups
    got_g = got.reshape(groups, -1, c_in, *layer.kernel_size).transpose(1, 2)  # (G, C_in/G, C_out/G, K)
    exact_g = exact.reshape(groups, -1, c_in, *layer.kernel_size).transpose(1, 2)
    for g in range(groups):
        for c in range(c_in):
            piece = got_g[g, c]
            if piece.abs().max() > 0:
                torch.testing.assert_close(piece, exact_g[g, c] / keep, **TOL)


@settings(max_examples=30, deadline=None)
@given(layers(transposed=False), st.floats(0.2, 0.9), st.integers(0, 2**16))
def test_spatial_draw_is_the_vjp_of_the_kept_pixels(layer, keep, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    generator = torch.Generator().manual_seed(seed)
    got = curvature.weight_vjp_dropout(x, v, layer.kernel_size, keep, "spatial", generator=generator, **kwargs(layer))
    masked = x * spatial_mask(layer, keep, seed).to(x.dtype)
    torch.testing.assert_close(got, exact_vjp(layer, masked, v) / keep, **TOL)


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_mean_of_many_draws_converges_to_the_exact_vjp(mode):
    layer = conv_layer((2, 6, 7, 6), 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
    exact = exact_vjp(layer, x, v)
    generator = torch.Generator().manual_seed(3)
    draws = torch.stack([
        curvature.weight_vjp_dropout(x, v, layer.kernel_size, 0.5, mode, generator=generator, **kwargs(layer))
        for _ in range(500)
    ])
    mean, spread = draws.mean(0), draws.std(0) / 500**0.5
    assert ((mean - exact).abs() <= 5 * spread + 1e-12).all()
    assert (mean - exact).norm() < 0.1 * exact.norm()
    assert (draws[0] - exact).norm() > 0.1 * exact.norm()  # a single draw is noisy


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_dropped_slices_are_never_read(mode):
    """NaN in the dropped part of x cannot reach the result: dropped slices are cut out, not multiplied by 0."""
    layer = conv_layer((2, 4, 9), 2, (3,), padding=1)
    x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
    if mode == "spatial":
        dropped = ~spatial_mask(layer, 0.5, 5)
        x[:, :, dropped] = float("nan")
    else:
        reference = curvature.weight_vjp_dropout(
            x, v, 3, 0.5, mode, padding=1, generator=torch.Generator().manual_seed(5)
        )
        dropped = reference.flatten(2).abs().amax((0, 2)) == 0
        x[:, dropped] = float("nan")
    assert dropped.any() and not dropped.all()
    got = curvature.weight_vjp_dropout(x, v, 3, 0.5, mode, padding=1, generator=torch.Generator().manual_seed(5))
    assert torch.isfinite(got).all()


def test_reproducible_with_a_generator():
    x, v = random((2, 3, 8, 8), 0), random((2, 4, 6, 6), 1)
    first, second = (
        curvature.weight_vjp_dropout(x, v, 3, 0.3, "spatial", generator=torch.Generator().manual_seed(9))
        for _ in range(2)
    )
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_bad_arguments_name_themselves():
    x, v = random((2, 3, 8, 8), 0), random((2, 4, 6, 6), 1)
    for keep in (0, 1.5, -0.1, True, "half"):
        with pytest.raises(ValueError, match="keep"):
            curvature.weight_vjp_dropout(x, v, 3, keep, "channel")
    with pytest.raises(ValueError, match="mode"):
        curvature.weight_vjp_dropout(x, v, 3, 0.5, "pixel")
    with pytest.raises(TypeError, match="generator"):
        curvature.weight_vjp_dropout(x, v, 3, 0.5, "channel", generator=1)
    with pytest.raises(ValueError, match="grad_output"):
        curvature.weight_vjp_dropout(x, v[:, :, :5], 3, 0.5, "channel")


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_work_falls_with_keep(mode, monkeypatch):
    """The contraction that runs is planned for the kept slices only: its FLOPs scale with keep."""
    planned = []
    from tnconv.curvature import dropout

    compile_network = dropout.compile_network

    def recording(net):
        program = compile_network(net)
        planned.append(program.flops)
        return program

    monkeypatch.setattr(dropout, "compile_network", recording)
    x, v = random((2, 32, 16, 16), 0), random((2, 8, 16, 16), 1)
    flops = {}
    for keep in (1.0, 0.25):
        planned.clear()
        curvature.weight_vjp_dropout(x, v, 3, keep, mode, padding=1, generator=torch.Generator().manual_seed(2))
        flops[keep] = sum(planned)
    assert 0 < flops[0.25] < 0.4 * flops[1.0]
