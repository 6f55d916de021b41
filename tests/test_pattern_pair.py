"""The pattern-pair rule: ``sum_o Pi[k, o, i] Pi[k', o, i']`` -> ``PatternPair[k, k', i, i']`` preserves the
KFAC-expand network's value (float64, against the unrewritten network) and says what it did in the trace."""

from __future__ import annotations

import torch
from cli_run import run
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers

import tnconv
from tnconv.backends.torch.pair_gram import pair_gram as pair_gram_call
from tnconv.ir.network import Tensor
from tnconv.lower import pair_gram
from tnconv.ir.tensors import Data, IndexPattern, PatternPair
from tnconv.passes.core import fixpoint
from tnconv.passes.pattern_rules import pattern_pair
from tnconv.passes.sweep import sweep

PAIR = fixpoint(sweep("pair", [(pattern_pair,)]))


def expand_network(layer: ConvLayer) -> tnconv.Network:
    return tnconv.conv_network(
        "kfac_expand", layer.x_shape, layer.weight_shape[2:], stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode, simplify=False,
    )


@settings(max_examples=40, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=("zeros", "reflect", "circular"), max_batch=3), st.integers(0, 2**31 - 1))
def test_pairing_preserves_the_expand_network(layer: ConvLayer, seed: int) -> None:
    net = expand_network(layer)
    paired, trace = PAIR.traced(net)
    patterns = sum(isinstance(e.kind, IndexPattern) for e in net.entries)
    assert sum(isinstance(e.kind, PatternPair) for e in paired.entries) == patterns // 2 > 0
    assert not any(isinstance(e.kind, IndexPattern) for e in paired.entries)
    assert [record.rule for record in trace] == ["pattern pair"] * (patterns // 2)
    x = torch.randn(layer.x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    expected = tnconv.compile(net)(X=x)
    torch.testing.assert_close(tnconv.compile(paired)(X=x), expected, rtol=1e-10, atol=1e-10)


def test_trace_says_which_taps_read_which_pixels() -> None:
    net = tnconv.conv_network("kfac_expand", (2, 3, 9, 8), (3, 2), padding=(1, 0), dilation=(2, 1), stride=(1, 2),
                              simplify=False)
    paired, trace = PAIR.traced(net)
    lines = str(trace).splitlines()
    assert lines[0] == (
        "1. pattern pair: Pi1, Pi1 [o1 on Pi1, Pi1 only, not an output leg; equal patterns I=9, K=3, S=1, P=(1,1), "
        "D=2, O=7] -> PatternPair[k1, k1_2, i1, i1_2] (taps k1, k1_2 read i1_2 - i1 = 2*(k1_2 - k1)); sum over o1"
    )
    assert lines[1] == (
        "2. pattern pair: Pi2, Pi2 [o2 on Pi2, Pi2 only, not an output leg; equal patterns I=8, K=2, S=2, P=(0,0), "
        "D=1, O=4] -> PatternPair[k2, k2_2, i2, i2_2] (taps k2, k2_2 read i2 = 2*o2 + 1*k2 - 0, i2_2 likewise "
        "with k2_2); sum over o2"
    )
    assert paired.entries[1] == Tensor("Pi1", ("k1", "k1_2", "i1", "i1_2"), PatternPair(IndexPattern(9, 3, 1, 1, 1, 2)))


def test_no_pair_where_o_is_an_output_leg_or_the_patterns_differ() -> None:
    first, other = IndexPattern(6, 3, 1, 1, 1), IndexPattern(6, 2, 1, 1, 1)
    x = Data()
    tensors = [Tensor("X", ("c", "i"), x), Tensor("Pi", ("k", "o", "i"), first),
               Tensor("Pi", ("l", "o", "j"), first), Tensor("X", ("d", "j"), x)]
    kept = tnconv.Network(tensors, output=("c", "k", "o", "d", "l"))
    assert pattern_pair(kept) is None
    unequal = tnconv.Network([*tensors[:2], Tensor("Pi", ("l", "o", "j"), other), tensors[3]], output=("c", "k", "d", "l"))
    assert pattern_pair(unequal) is None
    paired = tnconv.Network(tensors, output=("c", "k", "d", "l"))
    assert pattern_pair(paired) is not None


# --- the lowering: weight-VJP calls per segment product (stride 1, zeros padding) ------------------


def stride_one(layer: ConvLayer) -> bool:
    return all(s == 1 for s in (layer.stride if isinstance(layer.stride, tuple) else (layer.stride,)))


@settings(max_examples=40, deadline=None)
@given(conv_layers(max_dims=3, max_batch=3).filter(stride_one), st.integers(0, 2**31 - 1))
def test_pair_gram_equals_the_unrewritten_network(layer: ConvLayer, seed: int) -> None:
    """Forced (whatever its FLOPs), the pair lowering computes the KFAC-expand network exactly."""
    reference = expand_network(layer)
    paired = PAIR(reference)
    plan = pair_gram.match(paired)
    assert plan is not None
    x = torch.randn(layer.x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    result = pair_gram_call(plan)([x])
    torch.testing.assert_close(result, tnconv.compile(reference)(X=x), rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(conv_layers(max_dims=2, max_batch=2).filter(lambda layer: not stride_one(layer)))
def test_strided_pairs_run_on_the_gram_path(layer: ConvLayer) -> None:
    """Stride > 1 has no pair lowering yet: the planner splits the pairs back into patterns."""
    paired = PAIR(expand_network(layer))
    assert pair_gram.match(paired) is None
    program = tnconv.compile(paired)
    assert program.strategy.startswith("einsum")
    x = torch.randn(layer.x_shape, dtype=torch.float64)
    torch.testing.assert_close(program(X=x), tnconv.compile(expand_network(layer))(X=x), rtol=1e-10, atol=1e-10)


def test_two_different_operands_and_no_batch_leg() -> None:
    """``sum_o A[c, i] Pi Pi' B[d, i']``: two operands, nothing summed but the pixels."""
    pattern = IndexPattern(7, 3, 1, 2, 0, 2)
    net = tnconv.Network(
        [Tensor("A", ("c", "i"), Data()), Tensor("P", ("k", "l", "i", "j"), PatternPair(pattern)),
         Tensor("B", ("d", "j"), Data())], output=("l", "d", "k", "c"), sizes={"c": 2, "d": 3, "i": 7, "j": 7, "k": 3, "l": 3},
    )
    plan = pair_gram.match(net)
    assert plan is not None and plan.groups == 1
    a, b = torch.randn(2, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    taps = torch.zeros(3, 5, 7, dtype=torch.float64)  # Pi[k, o, i] = [i == o + 2k - 2]
    for k in range(3):
        for o in range(5):
            if 0 <= o + 2 * k - 2 < 7:
                taps[k, o, o + 2 * k - 2] = 1
    dense = torch.einsum("koi,loj->klij", taps, taps)
    expected = torch.einsum("ci,klij,dj->ldkc", a, dense, b)
    torch.testing.assert_close(pair_gram_call(plan)([a, b]), expected, rtol=1e-12, atol=1e-12)


def im2col_gram_flops(kernel: int) -> tuple[int, int]:
    """The compiled KFAC-expand network's FLOPs, and the im2col Gram's ``2 N T (C K^2)^2``, 56x56 'same'."""
    program = tnconv.compile(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), kernel, padding="same"))
    assert program.strategy == "pair_gram"
    return program.flops, 2 * 8 * 56 * 56 * (64 * kernel * kernel) ** 2


def test_flops_below_the_im2col_gram() -> None:
    """The issue's targets: 3x3 stride 1 at 56x56 <= 0.45x the im2col Gram, 7x7 <= 0.15x."""
    for kernel, target in ((3, 0.45), (7, 0.15)):
        flops, gram = im2col_gram_flops(kernel)
        assert flops <= target * gram, (kernel, flops / gram)


def test_program_counts_the_pair_gram_exactly() -> None:
    """3x3 'same' at 6x6, N=2, C=4: the weight-VJP calls read 8x8 pixels for 5x5 shifts; segments
    [0,1), [1,2), [2,6), [6,7), [7,8) lie in 1, 2, 3, 2, 1 windows, so (9 * 9) adds of C^2 * 3x3 elements."""
    plan = pair_gram.match(tnconv.conv_network("kfac_expand", (2, 4, 6, 6), 3, padding="same"))
    calls = 2 * 2 * 16 * 25 * 8 * 8
    adds = 9 * 9 * 16 * 9
    assert plan is not None and plan.flops == calls + adds  # a plan too small to pay (see test_pair_choice.py)
    assert plan.largest_intermediate == 16 * 81


def test_cli_prints_the_pair_gram_and_the_path_it_replaces() -> None:
    status, out, err = run("derive", "kfac-expand", "--input", "8,64,56,56", "--padding", "same", "--no-diagram")
    assert status == 0, err
    flops, gram = im2col_gram_flops(3)
    assert "strategy  pair_gram: windowed cross-correlations" in out
    assert f"flops     {flops:,} ({flops:.3g}; 2 per multiply-add, exact)" in out
    assert "einsum plan (not run; the gather/Gram path it replaces):" in out
    replaced = tnconv.compile(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), 3, padding="same")).einsum_plan.flops
    assert replaced >= gram and f"  flops     {replaced:,}" in out
