"""weight_vjp_dropout: exact at keep=1, each draw the VJP of the kept units, unbiased, dropped units never read."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layer, curvature_layers
from support.references import kwargs, per_sample_reference, random

from tnconv import curvature
from tnconv.conv.hyper import conv_hyper
from tnconv.dropout import pixels as dropout_pixels
from tnconv.dropout import slices as dropout_slices
from tnconv.dropout.weight_vjp import kept_channels as kept_channels_of
from tnconv.dropout.slices import default_block_rows

TOL = dict(rtol=1e-10, atol=1e-12)
MODES = ("channel", "rows", "spatial")


def exact_vjp(layer: ConvLayer, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return per_sample_reference(layer, x, v).sum(0)


def estimate(layer: ConvLayer, x: torch.Tensor, v: torch.Tensor, keep: float, mode: str, seed: int, **extra):
    generator = torch.Generator().manual_seed(seed)
    return curvature.weight_vjp_dropout(
        x, v, layer.kernel_size, keep, mode, generator=generator, **kwargs(layer), **extra
    )


def blocks_of(layer: ConvLayer, block_rows: int | None) -> tuple[int, int]:
    """Rows per block (the given or the default one) and blocks per sample of ``mode="rows"``."""
    hyper = conv_hyper(layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding,
                       layer.dilation, layer.groups)
    rows = block_rows if block_rows is not None else default_block_rows(hyper)
    return rows, math.ceil(layer.output_shape[2] / rows)


def kept_rows(layer: ConvLayer, keep: float, seed: int, block_rows: int | None) -> torch.Tensor:
    """The documented draw of ``mode="rows"`` as a mask over ``(n, o_1)``: ``torch.rand(N, R) < keep``."""
    rows, blocks = blocks_of(layer, block_rows)
    mask = torch.rand(layer.x_shape[0], blocks, generator=torch.Generator().manual_seed(seed)) < keep
    return mask.repeat_interleave(rows, dim=1)[:, : layer.output_shape[2]]


def kept_channels(layer: ConvLayer, keep: float, seed: int) -> torch.Tensor:
    """The documented draw of ``mode="channel"``, flattened to ``(C_in,)``: ``scores = torch.rand(G, C)``,
    ``extra = torch.rand(G)``; group ``g`` keeps its ``floor(keep*C) + (extra[g] < frac(keep*C))`` channels of
    lowest score."""
    groups, generator = layer.groups, torch.Generator().manual_seed(seed)
    channels = layer.in_channels // groups
    scores = torch.rand(groups, channels, generator=generator)
    extra = torch.rand(groups, generator=generator)
    kept = torch.zeros(groups, channels, dtype=torch.bool)
    for group in range(groups):
        count = math.floor(keep * channels) + int(extra[group] < keep * channels - math.floor(keep * channels))
        kept[group, scores[group].sort().indices[:count]] = True
    return kept.flatten()


def kept_pixels(layer: ConvLayer, keep: float, seed: int) -> torch.Tensor:
    """The documented draw of ``mode="spatial"``: ``torch.rand(*I) < keep``."""
    return torch.rand(layer.x_shape[2:], generator=torch.Generator().manual_seed(seed)) < keep


def spread(mask: torch.Tensor, ndim: int, axes: tuple[int, ...]) -> torch.Tensor:
    """``mask`` as a float tensor of ``ndim`` dims with its axes at ``axes`` (size 1 elsewhere)."""
    shape = [1] * ndim
    for axis, size in zip(axes, mask.shape):
        shape[axis] = size
    return mask.to(torch.float64).reshape(shape)


@settings(max_examples=40, deadline=None)
@given(curvature_layers(transposed=False), st.sampled_from(MODES), st.integers(0, 2**16))
def test_keep_one_is_the_exact_weight_vjp(layer, mode, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    got = estimate(layer, x, v, 1.0, mode, seed)
    assert got.shape == layer.weight_shape
    torch.testing.assert_close(got, exact_vjp(layer, x, v), **TOL)


@settings(max_examples=40, deadline=None)
@given(curvature_layers(transposed=False), st.floats(0.2, 0.9), st.integers(0, 2**16))
def test_channel_draw_is_the_vjp_of_the_kept_channels(layer, keep, seed):
    """Grouped and depthwise layers included: each group keeps its own channels."""
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    masked = x * spread(kept_channels(layer, keep, seed), x.ndim, (1,))
    torch.testing.assert_close(estimate(layer, x, v, keep, "channel", seed), exact_vjp(layer, masked, v) / keep, **TOL)


@settings(max_examples=40, deadline=None)
@given(curvature_layers(transposed=False), st.floats(0.2, 0.9), st.sampled_from([None, 1, 2, 3]), st.integers(0, 2**16))
def test_rows_draw_is_the_vjp_of_the_kept_output_row_blocks(layer, keep, block_rows, seed):
    """The weight VJP is linear in grad_output: keeping blocks = zeroing grad_output at the dropped (n, o_1)."""
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    masked = v * spread(kept_rows(layer, keep, seed, block_rows), v.ndim, (0, 2))
    got = estimate(layer, x, v, keep, "rows", seed, block_rows=block_rows)
    torch.testing.assert_close(got, exact_vjp(layer, x, masked) / keep, **TOL)


@settings(max_examples=30, deadline=None)
@given(curvature_layers(transposed=False), st.floats(0.2, 0.9), st.integers(0, 2**16))
def test_spatial_draw_is_the_vjp_of_the_kept_pixels(layer, keep, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    masked = x * kept_pixels(layer, keep, seed).to(x.dtype)
    torch.testing.assert_close(estimate(layer, x, v, keep, "spatial", seed), exact_vjp(layer, masked, v) / keep, **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_more_than_three_dims(mode):
    """Beyond the native kernels (4-d): a trailing size-1 dim with a size-1 kernel changes nothing."""
    x, v = random((2, 4, 7, 6, 5), 0), random((2, 6, 4, 6, 2), 1)
    args = dict(stride=(2, 1, 2), padding=((1, 0), 1, 0), dilation=(1, 2, 1), groups=2)
    args4 = dict(stride=(2, 1, 2, 1), padding=((1, 0), 1, 0, 0), dilation=(1, 2, 1, 1), groups=2)
    draws = [torch.Generator().manual_seed(4) for _ in range(2)]
    expected = curvature.weight_vjp_dropout(x, v, (2, 2, 3), 0.5, mode, generator=draws[0], **args)
    got = curvature.weight_vjp_dropout(
        x.unsqueeze(-1), v.unsqueeze(-1), (2, 2, 3, 1), 0.5, mode, generator=draws[1], **args4
    )
    torch.testing.assert_close(got.squeeze(-1), expected, **TOL)
    assert expected.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_mean_of_many_draws_converges_to_the_exact_vjp(mode):
    """The mean of 400 draws lies within 5 measured standard errors of the exact VJP, entry by entry.

    The projection of the draws on the exact VJP (expectation 1) resolves a 10% bias: its 5 standard
    errors are below 0.1, so an estimator off by 10% (a wrong scaling) would fail this test.
    """
    layer = conv_layer((4, 12, 9, 6), 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
    exact = exact_vjp(layer, x, v)
    generator = torch.Generator().manual_seed(3)
    count = 400
    draws = torch.stack([
        curvature.weight_vjp_dropout(x, v, layer.kernel_size, 0.5, mode, generator=generator, **kwargs(layer))
        for _ in range(count)
    ])
    mean, error = draws.mean(0), draws.std(0) / count**0.5
    assert (error > 0).all() and (draws[0] - exact).norm() > 0.1 * exact.norm()  # each draw is random
    assert ((mean - exact).abs() <= 5 * error).all()
    projection = (draws * exact).flatten(1).sum(1) / exact.square().sum()
    projection_error = projection.std() / count**0.5
    assert 5 * projection_error < 0.1
    assert abs(projection.mean() - 1) <= 5 * projection_error


@pytest.mark.parametrize("groups, channels, keep", [(2, 10, 0.35), (1, 64, 0.5), (3, 5, 0.9), (4, 1, 0.25)])
def test_channels_are_kept_with_probability_keep_in_sets_of_fixed_size(groups, channels, keep):
    """Each group keeps floor(keep*C) or ceil(keep*C) channels (a fixed count when keep*C is whole, so the kernel's
    work is the same on every call), their mean count is keep*C, and every channel's frequency over 3,000 draws lies
    within 5 standard errors of keep: the marginals of independent draws."""
    generator, draws = torch.Generator().manual_seed(7), 3000
    masks = torch.stack([kept_channels_of(groups, channels, keep, generator, torch.device("cpu")) for _ in range(draws)]).double()
    counts = masks.sum(2)  # (draws, G)
    target = keep * channels
    assert set(counts.unique().tolist()) <= {math.floor(target), math.ceil(target)}
    error = (keep * (1 - keep) / draws) ** 0.5
    assert ((masks.mean(0) - keep).abs() <= 5 * error).all()
    assert abs(counts.mean() - target) <= 5 * counts.std() / (draws * groups) ** 0.5 + 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_dropped_units_are_never_read(mode):
    """NaN in the dropped part cannot reach the result: dropped units are cut out, not multiplied by 0."""
    layer = conv_layer((3, 6, 9, 8), 6, (3, 3), padding=1, groups=3)
    x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
    if mode == "channel":
        kept = kept_channels(layer, 0.5, 5)
        x[:, ~kept] = float("nan")
    elif mode == "rows":
        kept = kept_rows(layer, 0.5, 5, 2)
        v.permute(0, 2, 1, 3)[~kept] = float("nan")
    else:
        kept = kept_pixels(layer, 0.5, 5)
        x[:, :, ~kept] = float("nan")
    assert kept.any() and not kept.all()
    extra = {"block_rows": 2} if mode == "rows" else {}
    got = estimate(layer, x, v, 0.5, mode, 5, **extra)
    assert torch.isfinite(got).all() and got.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_reproducible_with_a_generator(mode):
    x, v = random((2, 3, 8, 8), 0), random((2, 4, 6, 6), 1)
    first, second = (
        curvature.weight_vjp_dropout(x, v, 3, 0.3, mode, generator=torch.Generator().manual_seed(9))
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
    with pytest.raises(ValueError, match="block_rows"):
        curvature.weight_vjp_dropout(x, v, 3, 0.5, "rows", block_rows=0)
    with pytest.raises(TypeError, match="block_rows"):
        curvature.weight_vjp_dropout(x, v, 3, 0.5, "rows", block_rows=2.0)
    with pytest.raises(ValueError, match="block_rows"):
        curvature.weight_vjp_dropout(x, v, 3, 0.5, "channel", block_rows=2)


def test_default_block_rows_keeps_the_halo_small_and_2_to_8_blocks():
    def rows(input_size: int, kernel: int, stride: int = 1, dilation: int = 1) -> int:
        return default_block_rows(conv_hyper((1, 1, input_size, 5), kernel, 1, stride, kernel // 2, dilation))

    assert rows(56, 3) == 8  # window 10 rows for 8: 2 extra = 1/4
    assert rows(112, 3) == 14 and rows(400, 3) == 50  # at most 8 blocks
    assert rows(8, 3) == 4 and rows(3, 3) == 2  # at least 2 blocks
    assert rows(56, 1) == 7  # no overlap: 8 blocks
    assert rows(448, 7, stride=2) == 28  # window 2*27 + 7 = 61 rows for 28 of stride 2: 5 extra
    assert rows(224, 7, stride=2) == 14  # output 112: at most 8 blocks


@pytest.mark.parametrize("mode", ["channel", "rows"])
def test_work_falls_with_keep(mode, monkeypatch):
    """The native kernel runs on the kept slices only: its FLOPs (output entries x taps x channels) scale with keep."""
    calls = []
    slice_vjp = dropout_slices.weight_vjp_slice

    def recording(x, v, kernel_size, stride, padding, dilation, groups):
        calls.append(v.numel() * x.shape[1] // groups * math.prod(kernel_size))
        return slice_vjp(x, v, kernel_size, stride, padding, dilation, groups)

    monkeypatch.setattr(dropout_slices, "weight_vjp_slice", recording)
    x, v = random((4, 32, 16, 16), 0), random((4, 8, 16, 16), 1)
    flops = {}
    for keep in (1.0, 0.25):
        calls.clear()
        curvature.weight_vjp_dropout(x, v, 3, keep, mode, padding=1, generator=torch.Generator().manual_seed(2))
        flops[keep] = sum(calls)
    assert flops[1.0] == 4 * 8 * 16 * 16 * 32 * 9
    assert 0 < flops[0.25] < 0.4 * flops[1.0]


def test_channel_kernel_calls_take_whole_channel_blocks_on_the_cpu(monkeypatch):
    """On the CPU the kept channels of a group are gathered into a multiple of CHANNEL_BLOCK slots (at most the
    group's channels; spare slots repeat a kept channel), so that oneDNN's blocked kernel does no extra work and the
    gathered sizes repeat between draws; the estimate is still that of the kept channels."""
    widths = []
    slice_vjp = dropout_slices.weight_vjp_slice

    def recording(x, v, kernel_size, stride, padding, dilation, groups):
        widths.append(x.shape[1] // groups)
        return slice_vjp(x, v, kernel_size, stride, padding, dilation, groups)

    monkeypatch.setattr(dropout_slices, "weight_vjp_slice", recording)
    block = dropout_slices.CHANNEL_BLOCK
    for in_channels, groups in ((20, 1), (24, 2), (6, 1)):
        layer = conv_layer((2, in_channels, 6, 6), 2 * groups, (3, 3), padding=1, groups=groups)
        x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
        per_group = in_channels // groups
        for seed in range(4):
            widths.clear()
            kept = kept_channels(layer, 0.4, seed)
            most = int(kept.view(groups, per_group).sum(1).max())
            got = estimate(layer, x, v, 0.4, "channel", seed)
            assert widths == ([min(per_group, -(-most // block) * block)] if most else []), (in_channels, seed)
            masked = x * spread(kept, x.ndim, (1,))
            torch.testing.assert_close(got, exact_vjp(layer, masked, v) / 0.4, **TOL)


def test_row_kernel_calls_read_at_most_chunk_bytes(monkeypatch):
    """Each kernel call of mode="rows" reads at most CHUNK_BYTES of stacked windows and of output-gradient blocks
    (small, reused buffers instead of fresh pages for all kept units); the parts add up to the same estimate as one
    call on every kept unit."""
    layer = conv_layer((6, 8, 12, 10), 4, (3, 3), padding=1, groups=2)
    x, v = random(layer.x_shape, 0), random(layer.output_shape, 1)
    whole = estimate(layer, x, v, 0.6, "rows", 3, block_rows=3)
    reads = []
    slice_vjp = dropout_slices.weight_vjp_slice

    def recording(x, v, *args):
        reads.append((x.nbytes, v.nbytes))
        return slice_vjp(x, v, *args)

    monkeypatch.setattr(dropout_slices, "weight_vjp_slice", recording)
    monkeypatch.setattr(dropout_slices, "CHUNK_BYTES", 2 * 8 * 8 * 5 * 10)  # two windows of 5 rows in float64
    got = estimate(layer, x, v, 0.6, "rows", 3, block_rows=3)
    assert len(reads) >= 3 and all(max(pair) <= dropout_slices.CHUNK_BYTES for pair in reads)
    torch.testing.assert_close(got, whole, **TOL)
    masked = v * spread(kept_rows(layer, 0.6, 3, 3), v.ndim, (0, 2))
    torch.testing.assert_close(got, exact_vjp(layer, x, masked) / 0.6, **TOL)


def test_spatial_work_falls_with_keep(monkeypatch):
    """The contraction planned for the kept pixels has FLOPs that scale with keep."""
    planned = []
    compile_network = dropout_pixels.compile_network

    def recording(net):
        program = compile_network(net)
        planned.append(program.flops)
        return program

    monkeypatch.setattr(dropout_pixels, "compile_network", recording)
    x, v = random((2, 32, 16, 16), 0), random((2, 8, 16, 16), 1)
    flops = {}
    for keep in (1.0, 0.25):
        planned.clear()
        curvature.weight_vjp_dropout(x, v, 3, keep, "spatial", padding=1, generator=torch.Generator().manual_seed(2))
        flops[keep] = sum(planned)
    assert 0 < flops[0.25] < 0.4 * flops[1.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_results_equal_cpu_results(mode):
    x, v = random((2, 4, 7, 6), 0), random((2, 6, 3, 6), 1)
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, groups=2, keep=0.5, mode=mode)
    got = curvature.weight_vjp_dropout(x.cuda(), v.cuda(), generator=torch.Generator().manual_seed(1), **args)
    assert got.device.type == "cuda"
    expected = curvature.weight_vjp_dropout(x, v, generator=torch.Generator().manual_seed(1), **args)
    torch.testing.assert_close(got.cpu(), expected, **TOL)
