"""Conv hyper-parameters: every accepted form normalises to per-dim tuples; every bad input names itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from support.layers import ConvLayer, conv_layers

from tnconv.conv.hyper import ConvHyper, conv_hyper


def test_forms_normalise_to_per_dim_tuples() -> None:
    hyper = conv_hyper((2, 4, 9, 8), torch.Size([3, 2]), 6, stride=[2, 1], padding=(1, (0, 2)), dilation=(1, 2), groups=2)
    assert hyper == ConvHyper((2, 4, 9, 8), (3, 2), 6, (2, 1), ((1, 1), (0, 2)), (1, 2), 2, "zeros", (0, 0), False)
    assert hyper.dims == 2 and hyper.batch == 2 and hyper.in_channels == 4 and hyper.input_size == (9, 8)
    assert hyper.output_size == (5, 8)
    assert hyper.weight_shape == (6, 2, 3, 2) and hyper.output_shape == (2, 6, 5, 8)
    assert hash(hyper) == hash(conv_hyper((2, 4, 9, 8), (3, 2), 6, (2, 1), ((1, 1), (0, 2)), (1, 2), 2))
    assert conv_hyper((1, 1, 5), 3, padding=np.int64(1)).padding == ((1, 1),)
    assert conv_hyper((1, 1, 5, 5), 3, padding=2).padding == ((2, 2), (2, 2))
    assert conv_hyper((1, 1, 5, 5), 3, padding=[1, 2]).padding == ((1, 1), (2, 2))
    assert conv_hyper((1, 1, 5), 3, padding=((0, 2),)).padding == ((0, 2),)
    assert conv_hyper((1, 1, 5, 5), 3, padding="valid").padding == ((0, 0), (0, 0))
    with pytest.raises(AttributeError):
        hyper.groups = 1  # type: ignore[misc]


def test_same_padding_extra_pixel_on_the_right() -> None:
    hyper = conv_hyper((1, 1, 6, 6, 6), (4, 3, 2), padding="same", dilation=(1, 2, 3))
    assert hyper.padding == ((1, 2), (2, 2), (1, 2))
    assert hyper.output_size == (6, 6, 6)


def test_transposed_output_size_and_patterns() -> None:
    hyper = conv_hyper((2, 4, 3), 3, 6, stride=2, padding=1, output_padding=1, groups=2, transposed=True)
    assert hyper.output_size == (6,)  # (3-1)*2 - 2 + 2 + 1 + 1
    assert hyper.weight_shape == (4, 3, 3)
    (pattern,) = hyper.patterns
    assert (pattern.input_size, pattern.output_size, pattern.pad_right) == (6, 3, 0)
    # output_padding >= stride is allowed when dilation is larger (as in torch): the pattern still maps onto I
    wide = conv_hyper((1, 1, 3), 2, 1, stride=1, dilation=3, output_padding=2, transposed=True)
    assert wide.output_size == (8,) and wide.patterns[0].output_size == 3


@settings(max_examples=60, deadline=None)
@given(conv_layers(max_dims=3))
def test_output_size_matches_torch_shapes(layer: ConvLayer) -> None:
    hyper = conv_hyper(
        layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode,
    )
    assert hyper.padding == layer.pairs
    assert hyper.output_shape == layer.output_shape
    assert hyper.weight_shape == layer.weight_shape
    assert tuple(p.output_size for p in hyper.patterns) == layer.output_size


@settings(max_examples=60, deadline=None)
@given(conv_layers(max_dims=3, transposed=True))
def test_transposed_output_size_matches_strategy(layer: ConvLayer) -> None:
    hyper = conv_hyper(
        layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, "zeros", layer.output_padding, True,
    )
    assert hyper.output_shape == layer.output_shape
    assert hyper.weight_shape == layer.weight_shape
    assert tuple(p.output_size for p in hyper.patterns) == layer.x_shape[2:]
    assert tuple(p.input_size for p in hyper.patterns) == layer.output_size


GOOD = dict(input_shape=(2, 4, 5, 5), kernel_size=3, out_channels=6)
BAD = [
    # (overrides, error, words the message must contain)
    (dict(input_shape=(2, 4)), ValueError, ["input_shape", "(2, 4)"]),
    (dict(input_shape=5), TypeError, ["input_shape", "5"]),
    (dict(input_shape=(2, 4, 5.0, 5)), TypeError, ["input_shape", "5.0"]),
    (dict(input_shape=(2, 0, 5, 5)), ValueError, ["input_shape", "(2, 0, 5, 5)"]),
    (dict(kernel_size=(3, 3, 3)), ValueError, ["kernel_size", "(3, 3, 3)"]),
    (dict(kernel_size=0), ValueError, ["kernel_size", "0"]),
    (dict(kernel_size=True), TypeError, ["kernel_size", "True"]),
    (dict(kernel_size=2.5), TypeError, ["kernel_size", "2.5"]),
    (dict(kernel_size=6), ValueError, ["kernel_size=(6, 6)", "padded input"]),
    (dict(kernel_size=4, dilation=2), ValueError, ["kernel_size=(4, 4)", "dilation=(2, 2)"]),
    (dict(stride=0), ValueError, ["stride", "0"]),
    (dict(stride=(1, -1)), ValueError, ["stride", "(1, -1)"]),
    (dict(stride=(1, 2, 3)), ValueError, ["stride", "(1, 2, 3)"]),
    (dict(stride="1"), TypeError, ["stride", "'1'"]),
    (dict(dilation=0), ValueError, ["dilation", "0"]),
    (dict(dilation=(1.0, 1)), TypeError, ["dilation", "1.0"]),
    (dict(padding=-1), ValueError, ["padding", "-1"]),
    (dict(padding=((1, -1), 0)), ValueError, ["padding", "((1, -1), 0)"]),
    (dict(padding="full"), ValueError, ["padding", "'full'"]),
    (dict(padding=(1, 2, 3)), ValueError, ["padding", "(1, 2, 3)"]),
    (dict(padding=((1, 2, 3), 0)), ValueError, ["padding", "(1, 2, 3)"]),
    (dict(padding=True), TypeError, ["padding", "True"]),
    (dict(padding=1.5), TypeError, ["padding", "1.5"]),
    (dict(padding="same", stride=2), ValueError, ["same", "stride=(2, 2)"]),
    (dict(groups=3), ValueError, ["in_channels=4", "groups=3"]),
    (dict(groups=2, out_channels=5), ValueError, ["out_channels=5", "groups=2"]),
    (dict(groups=0), ValueError, ["groups", "0"]),
    (dict(groups=2.0), TypeError, ["groups", "2.0"]),
    (dict(out_channels=0), ValueError, ["out_channels", "0"]),
    (dict(out_channels="6"), TypeError, ["out_channels", "'6'"]),
    (dict(padding_mode="mirror"), ValueError, ["padding_mode", "'mirror'"]),
    (dict(padding_mode=0), TypeError, ["padding_mode", "0"]),
    (dict(padding_mode="reflect", padding=5), ValueError, ["reflect", "padding=5"]),
    (dict(padding_mode="circular", padding=6, kernel_size=1), ValueError, ["circular", "padding=6"]),
    (dict(output_padding=1), ValueError, ["output_padding", "1"]),
    (dict(output_padding=2, stride=2, transposed=True), ValueError, ["output_padding=2", "stride=(2, 2)"]),
    (dict(output_padding=-1, transposed=True), ValueError, ["output_padding", "-1"]),
    (dict(padding_mode="reflect", transposed=True), ValueError, ["padding_mode", "'reflect'", "transposed"]),
    (dict(input_shape=(1, 4, 1, 1), padding=2, transposed=True), ValueError, ["output size", "padding=2"]),
    (dict(transposed=1), TypeError, ["transposed", "1"]),
    (dict(padding="same", transposed=True), ValueError, ["padding='same'", "transposed"]),
    (dict(padding=10**12), ValueError, ["padding=1000000000000", "padded input", "MAX_ELEMENTS"]),
    (dict(out_channels=2**40), ValueError, ["output (N, C, *O)", "MAX_ELEMENTS"]),
    (dict(stride=10**12, transposed=True), ValueError, ["stride=1000000000000", "MAX_ELEMENTS"]),
    (dict(stride=2**63), ValueError, ["stride", "int64", str(2**63)]),
    (dict(input_shape=(2, 4, 5, -(2**70))), ValueError, ["input_shape", "int64"]),
]


@pytest.mark.parametrize("overrides, error, words", BAD)
def test_bad_input_names_argument_and_value(overrides: dict, error: type, words: list[str]) -> None:
    with pytest.raises(error) as raised:
        conv_hyper(**{**GOOD, **overrides})
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_kernel_as_large_as_padded_input_is_fine() -> None:
    assert conv_hyper((1, 1, 3, 4), (5, 4), padding=(1, 0)).output_size == (1, 1)
    assert conv_hyper((1, 1, 3), 3, dilation=2, padding=1).output_size == (1,)
    assert conv_hyper((1, 2, 5), 2, 2, padding_mode="circular", padding=5).output_size == (14,)
    assert conv_hyper((1, 2, 5), 2, 2, padding_mode="reflect", padding=4).output_size == (12,)


def test_patch_size_is_a_groups_patch_entries() -> None:
    """``d = C_in // G * prod(K)``, the rows of KFAC's ``A`` per group (also for a transposed layer's input)."""
    assert conv_hyper((2, 12, 9, 9), (3, 5), groups=4).patch_size == 3 * 15
    assert conv_hyper((2, 6, 7), 4, groups=6).patch_size == 4
    assert conv_hyper((1, 8, 5, 5), 2, stride=2, transposed=True).patch_size == 8 * 4
