"""The pattern-pair rule: ``sum_o Pi[k, o, i] Pi[k', o, i']`` -> ``PatternPair[k, k', i, i']`` preserves the
KFAC-expand network's value (float64, against the unrewritten network) and says what it did in the trace."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import ConvLayer, conv_layers

import tnconv
from tnconv.ir.network import Tensor
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
