"""Window sums: ``sum_o Pi`` contracted with a tensor as a selection ``E`` and small weights ``W``.

``split_columns`` must factor every pattern sum exactly (``P = W E``), the
selection must compute ``E`` on any axis, joined or not, and the lowered
networks (KFAC-reduce of any layer) must equal the dense contraction.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import conv_layers
from support.networks import assert_close, dense_value, random_operands

import tnconv
from tnconv.ir.tensors import IndexPattern, PatternSum
from tnconv.backends.torch.constants import dense as build
from tnconv.backends.torch.einsum import apply_window_sums, executor, window_sum
from tnconv.lower import einsum
from tnconv.programs.compile import compile
from tnconv.lower.optimize import AUTO
from tnconv.lower.window_sum import ColumnSplit, WindowSum, split_columns

MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def pattern_sums(draw: st.DrawFn, long: bool = False) -> PatternSum:
    """Pattern sums of any padding mode, with up to as much padding as the mode allows.

    ``long``: inputs at least four times as long as the borders where columns differ
    (``4 * (D*(K-1) + max padding + 2*S)``), with padding up to 4 in every mode.
    """
    mode = draw(st.sampled_from(MODES))
    kernel, stride, dilation = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    if long:
        left, right = draw(st.integers(0, 4)), draw(st.integers(0, 4))
        border = dilation * (kernel - 1) + max(left, right) + 2 * stride
        size = draw(st.integers(4 * border, 4 * border + 20))
        return PatternSum(IndexPattern(size, kernel, stride, left, right, dilation, mode))
    size = draw(st.integers(1, 40))
    limit = {"zeros": 4, "reflect": size - 1, "replicate": 4, "circular": size}[mode]
    left, right = draw(st.integers(0, min(limit, 4))), draw(st.integers(0, min(limit, 4)))
    if size + left + right < dilation * (kernel - 1) + 1:
        left += dilation * (kernel - 1) + 1 - size - left - right
        if mode != "zeros" and left > limit:
            mode = "zeros"
    return PatternSum(IndexPattern(size, kernel, stride, left, right, dilation, mode))


def pattern_matrix(kind: PatternSum) -> torch.Tensor:
    """``P`` ``(K, I)`` in float64."""
    shape = (kind.pattern.kernel_size, kind.pattern.input_size)
    return build(kind, shape, torch.float64, torch.device("cpu"))


def selection_matrix(split: ColumnSplit, pixels: int) -> torch.Tensor:
    """``E`` ``(R, I)``: the split's selection applied to the identity."""
    return window_sum(torch.eye(pixels, dtype=torch.float64), split.selection(1))


def weights(split: ColumnSplit) -> torch.Tensor:
    """``W`` ``(K, R)`` in float64."""
    return torch.tensor(split.weights, dtype=torch.float64)


def split_of(kind: PatternSum) -> ColumnSplit | None:
    return split_columns(kind.counts(), kind.pattern.stride)


# pattern sums that split_columns splits (the others keep the product; see the tests below)
split_pattern_sums = pattern_sums().filter(lambda kind: split_of(kind) is not None)


@settings(max_examples=300)
@given(split_pattern_sums)
def test_split_factors_the_pattern_sum_exactly(kind):
    matrix = pattern_matrix(kind)
    split = split_of(kind)
    assert 0 < split.kept <= matrix.shape[1] // 2
    assert torch.equal(weights(split) @ selection_matrix(split, matrix.shape[1]), matrix)


@settings(max_examples=60)
@given(pattern_sums(long=True))
def test_long_inputs_always_split(kind):
    """Away from the borders the columns repeat with period S, so an input four times longer than
    the borders (window span, padding and two strides) always splits, keeping under half the columns."""
    split = split_of(kind)
    assert split is not None
    assert torch.equal(weights(split) @ selection_matrix(split, kind.pattern.input_size), pattern_matrix(kind))


@pytest.mark.parametrize(
    ("pattern", "kept"),
    [
        (IndexPattern(56, 7, 1, 3, 3), 7),  # ConvNeXt 7x7: one block sum, 3 + 3 border pixels
        (IndexPattern(56, 3, 2, 1, 1), 4),  # MobileNet stride 2: a block of 2 and the last two pixels
        (IndexPattern(16000, 10, 5), 15),  # wav2vec2: a block of 5 (both taps of a phase) and 10 border pixels
        (IndexPattern(56, 1, 2), 2),  # 1x1 stride 2: every other pixel, one block
    ],
)
def test_benchmark_layers_keep_few_rows(pattern, kept):
    split = split_columns(PatternSum(pattern).counts(), pattern.stride)
    assert split is not None and split.kept == kept


def test_a_pattern_sum_with_no_repeated_columns_stays_dense():
    """Kernel 5 on 6 pixels without padding: every column differs, so the product is kept."""
    assert split_columns(PatternSum(IndexPattern(6, 5)).counts(), 1) is None


@settings(max_examples=60)
@given(split_pattern_sums, split_pattern_sums, st.integers(0, 2), st.booleans())
def test_selections_on_any_axis_joined_or_not(first_kind, second_kind, extra, split_first):
    first, second = pattern_matrix(first_kind), pattern_matrix(second_kind)
    splits = [split_of(first_kind), split_of(second_kind)]
    torch.manual_seed(0)
    x = torch.randn(2, first.shape[1], 3, second.shape[1], *([2] * extra), dtype=torch.float64)
    sums = [splits[0].selection(1), splits[1].selection(3)]  # the second's i is axis 3 of (r1, a, c, j, ..)
    result = apply_window_sums(x, sums, split_first)  # (r2, r1, a, c, ..)
    expected = torch.einsum("aicj...,ri,sj->srac...", x, selection_matrix(splits[0], first.shape[1]),
                            selection_matrix(splits[1], second.shape[1]))
    assert_close(result, expected)


@settings(max_examples=40)
@given(conv_layers(max_dims=3, padding_modes=MODES, max_groups=2), st.booleans())
def test_kfac_reduce_networks_equal_the_dense_contraction(layer, split_first):
    """Planned with the first window sum's pieces joined or not (``einsum.SPLIT_SUMS_ABOVE``)."""
    net = tnconv.conv_network(
        "kfac_reduce", layer.x_shape, layer.kernel_size, stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(einsum, "SPLIT_SUMS_ABOVE", 0 if split_first else 1 << 62)
        plan = einsum.plan_einsum(net, AUTO)
    assert all(p.split_sums == split_first for p in plan.preparations if len(p.sums) > 1)
    operands = random_operands(net, seed=2)
    run, constants = executor(plan)
    result = run(operands, constants.make(torch.float64, torch.device("cpu")))
    assert_close(result, dense_value(net, operands))


def test_standard_layers_run_window_sums():
    """KFAC-reduce of a 'same' 3x3 layer: both pattern sums are window sums; the second copy of X
    is the first one, prepared once."""
    net = tnconv.conv_network("kfac_reduce", (2, 4, 9, 8), 3, padding=1)
    program = compile(net)
    first, second = program.einsum_plan.preparations
    assert [type(s) for s in first.sums] == [WindowSum, WindowSum] and second.alias == first.slot
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))

