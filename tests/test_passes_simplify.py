"""simplify: value preserved on random conv layers and networks, idempotence, per-case FLOP bounds, traces."""

from __future__ import annotations

import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_cases, conv_layer, conv_net
from support.networks import dense_value, networks, operands

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, Identity, IndexPattern, Ones, PatternSum
from tnconv.ir.views import Taps
from tnconv.passes.simplify import simplify, simplify_traced

OPS = ("forward", "input_vjp", "weight_vjp", "unfold")


def _check(net: Network, seed: int = 0) -> Network:
    """Simplify ``net``; check verify, idempotence (same object) and the value (compiled vs dense reference)."""
    simple, trace = simplify_traced(net)
    tnconv.verify(simple)
    assert simplify(simple) is simple
    if not trace.changed:
        assert simple is net
    values = operands(net, seed)
    expected = dense_value(net, values)
    got = tnconv.compile(simple)(**{name: values[name] for name in simple.operands})
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense_value(simple, values), expected, rtol=1e-10, atol=1e-10)
    return simple


@settings(max_examples=60, deadline=None)
@given(conv_cases(), st.sampled_from(OPS), st.integers(0, 100))
def test_simplify_preserves_conv_routines(case: ConvLayer, op: str, seed: int) -> None:
    simple = _check(conv_net(case, op), seed)
    for entry in simple.entries:  # a pattern survives only where no exact rule applies: overlapping taps
        if isinstance(entry.kind, IndexPattern) and op == "forward":
            p, outputs = entry.kind, simple.size(entry.legs[1])
            assert p.dilation * (p.kernel_size - 1) >= p.stride and outputs > 1 and p.kernel_size > 1, simple.dump()

@settings(max_examples=60, deadline=None)
@given(networks(), st.integers(0, 100))
def test_simplify_preserves_random_networks(net: Network, seed: int) -> None:
    _check(net, seed)


@settings(max_examples=30, deadline=None)
@given(conv_cases(), st.integers(0, 100))
def test_simplify_nonoverlapping_has_no_pattern(case: ConvLayer, seed: int) -> None:
    """Every conv whose taps of neighbouring outputs do not overlap loses all its patterns (padded or not)."""
    simple = _check(conv_net(case), seed)
    dims = zip(case.kernel_size, case.stride, case.dilation, case.output_size)
    if all(d * (k - 1) < s or o == 1 or k == 1 for k, s, d, o in dims):
        assert not any(isinstance(e.kind, IndexPattern) for e in simple.entries), simple.dump()
        assert tnconv.compile(simple).flops <= case.direct_flops()

def _case(n, c_in, size, c_out, kernel, stride, groups=1) -> ConvLayer:
    dims = len(size)
    return conv_layer((n, c_in, *size), c_out, (kernel,) * dims, (stride,) * dims, ((0, 0),) * dims, (1,) * dims, groups)


def _no_pattern_and_cheap(case: ConvLayer, rule: str) -> str:
    net = conv_net(case)
    simple, trace = simplify_traced(net)
    assert rule in trace.rules()
    assert not any(isinstance(e.kind, (IndexPattern, PatternSum)) for e in simple.entries), simple.dump()
    assert tnconv.compile(simple).flops <= case.direct_flops()
    _check(net)
    return str(trace)


def test_dense_vit_patchify_16x16_stride_16() -> None:
    text = _no_pattern_and_cheap(_case(2, 3, (64, 48), 8, 16, 16), "dense")
    assert "dense: Pi1 [K=S=16, P=0, D=1, I%K==0 (I=64=S*O)] -> read i1 as taps (o1, k1) of X; drop Pi1" in text


def test_dense_convnext_stem_4x4_stride_4() -> None:
    _no_pattern_and_cheap(_case(2, 3, (32, 32), 6, 4, 4), "dense")


def test_dense_with_trailing_pixels_sliced_first() -> None:
    text = _no_pattern_and_cheap(_case(1, 2, (30,), 3, 4, 4), "dense")
    assert text.splitlines()[0].startswith("1. unused pixels: Pi1")
    assert "slice i1 to pixels [0, 28) on X" in text


def test_downsampling_1x1_stride_2() -> None:
    _no_pattern_and_cheap(_case(2, 4, (9, 8), 5, 1, 2), "downsampling")


def test_downsampling_kernel_smaller_than_stride() -> None:
    _no_pattern_and_cheap(_case(2, 3, (11, 12), 4, 2, 3), "downsampling")


def test_1x1_conv_grouped_3d() -> None:
    case = conv_layer((2, 4, 3, 5, 2), 6, (1, 1, 1), (1, 1, 1), ((0, 0),) * 3, (1, 1, 1), 2)
    _no_pattern_and_cheap(case, "1x1")


def test_kernel_covering_the_input() -> None:
    _no_pattern_and_cheap(_case(2, 3, (5, 5), 4, 5, 1), "kernel covers input")


def test_padded_nonoverlapping_conv_reads_padded_taps() -> None:
    case = conv_layer((2, 3, 6, 9), 4, (2, 3), (2, 4), ((1, 1), (1, 0)), (1, 1), 1)
    text = _no_pattern_and_cheap(case, "padding")
    assert "1. padding: Pi1 [I=6, K=2, S=2, P=(1,1), D=1, O=4: reads zero padding" in text
    assert "read i1 as taps (o1, k1) of X, zero-padded by (1, 1) (a copy); drop Pi1" in text
    assert len(text.splitlines()) == 2  # one record per pattern: the padded taps are one view


def test_padded_overlapping_conv_keeps_its_patterns() -> None:
    net = tnconv.conv_network("forward", (1, 2, 7, 7), 3, out_channels=2, padding=1, simplify=False)
    assert simplify(net) is net


def test_trace_reads_like_a_derivation() -> None:
    net = conv_net(_case(1, 2, (8,), 3, 1, 1))
    _, trace = simplify_traced(net)
    assert trace.rules() == ("1x1", "squeeze")
    lines = str(trace).splitlines()
    assert lines[0] == "1. 1x1: Pi1 [K=S=1, P=0, I=O=8] -> reshape i1 into (o1, k1) on X + identities; drop Pi1"
    assert lines[1] == "2. squeeze: X, W [k1 has size 1, summed] -> drop k1 from X, W"


def test_pattern_sum_for_kfac_reduce_like_network() -> None:
    pattern = IndexPattern(7, 3, 1, 1, 1)
    net = Network(
        [Tensor("X", ("n", "c", "i")), Tensor("Pi", ("k", "o", "i"), pattern)],
        ("n", "c", "k"),
        {"n": 2, "c": 3, "i": 7, "k": 3, "o": 7},
    )
    simple, trace = simplify_traced(net)
    assert trace.rules() == ("pattern sum",)
    assert simple.entries[1].kind == PatternSum(pattern) and simple.entries[1].legs == ("k", "i")
    _check(net)


def test_dense_on_symbolic_sizes_when_divisibility_is_known() -> None:
    m = sympy.Symbol("m", integer=True, positive=True)
    pattern = IndexPattern(4 * m, 4, 4)
    net = Network(
        [Tensor("X", ("n", "i")), Tensor("Pi", ("k", "o", "i"), pattern), Tensor("W", ("c", "k"))],
        ("n", "c", "o"),
        {"i": 4 * m, "k": 4, "o": pattern.output_size},
    )
    simple, trace = simplify_traced(net)
    assert trace.rules() == ("dense",)
    assert simple.entries[0].kind == Data((Taps(1, pattern),))
    _check(simple.substitute({"m": 3, "n": 2, "c": 2}))
    i = sympy.Symbol("i", integer=True, positive=True)
    unproven = Network(
        [Tensor("X", ("n", "i")), Tensor("Pi", ("k", "o", "i"), IndexPattern(i, 4, 4)), Tensor("W", ("c", "k"))],
        ("n", "c", "o"),
        {"k": 4, "o": IndexPattern(i, 4, 4).output_size},
    )
    simple, trace = simplify_traced(unproven)  # I % 4 == 0 cannot be proven: no dense rule, taps instead
    assert trace.rules() == ("downsampling",) and "dense" not in trace.rules()
    assert [str(r) for r in trace.unproven()] == ["dense: Pi not applied [not proven for all sizes: i % 4 == 0]"]
    assert simple.entries[0].kind.views[0] == Taps(1, IndexPattern(i, 4, 4))
    for size in (8, 10, 11):
        values = {"i": size, "n": 2, "c": 2}
        specialised = unproven.substitute(values)
        inputs = operands(specialised, size)
        got = tnconv.compile(simple.substitute(values))(**{name: inputs[name] for name in simple.operands})
        torch.testing.assert_close(got, dense_value(specialised, inputs), rtol=1e-10, atol=1e-10)

def test_identity_removal_and_squeeze_and_merge() -> None:
    net = Network(
        [
            Tensor("A", ("a", "b", "c")),
            Tensor("delta", ("c", "d"), Identity()),
            Tensor("B", ("a", "b", "d", "e")),
            Tensor("one", ("e",), Ones()),
        ],
        ("d",),
        {"a": 2, "b": 3, "c": 4, "d": 4, "e": 1},
    )
    simple, trace = simplify_traced(net)
    assert trace.rules() == ("identity", "squeeze", "merge parallel legs")
    assert [e.name for e in simple.entries] == ["A", "B"]
    assert simple.legs("A") == ("a*b", "d")
    _check(net)


def test_identity_between_two_output_legs_stays() -> None:
    net = Network([Tensor("delta", ("a", "b"), Identity()), Tensor("X", ("c",))], ("a", "b", "c"), {"a": 3, "b": 3, "c": 2})
    assert simplify(net) is net


def test_simplify_rejects_non_networks() -> None:
    import pytest

    with pytest.raises(TypeError, match="net must be"):
        simplify("ij->i")


def test_1x1_input_vjp_pattern_becomes_an_identity() -> None:
    case = _case(2, 4, (6, 5), 3, 1, 1)
    net = conv_net(case, "input_vjp")
    simple, trace = simplify_traced(net)
    assert trace.rules()[:2] == ("1x1", "1x1") and "identity" in trace.rules()
    assert "1x1: Pi1 [K=S=1, P=0: Pi1[0, o, i] = delta[o, i]] -> Pi1 becomes the identity on (o1, i1)" in str(trace)
    assert not any(e.structured for e in simple.entries)
    assert tnconv.compile(simple).flops <= case.direct_flops()
    _check(net)


@settings(max_examples=25, deadline=None)
@given(conv_cases(), st.sampled_from(OPS))
def test_verify_holds_after_every_single_rewrite(case: ConvLayer, op: str) -> None:
    from tnconv.passes.core import fixpoint
    from tnconv.passes.simplify import RULES
    from tnconv.passes.sweep import Rule, sweep

    def verified(rule: Rule) -> Rule:
        return Rule(rule.name, rule.looks_at, rule.match, lambda net, match: _verified(rule.rewrite(net, match)))

    def _verified(rewrite):
        tnconv.verify(rewrite[0])
        return rewrite

    stepwise = fixpoint(sweep("simplify", [tuple(map(verified, phase)) for phase in RULES]))
    net = conv_net(case, op)
    assert stepwise(net) == simplify(net)


def test_all_ones_factor_on_carried_legs_is_dropped() -> None:
    net = Network(
        [Tensor("A", ("a", "b")), Tensor("one", ("a",), Ones()), Tensor("sum", ("c",), Ones())],
        ("b", "c"),
        {"a": 3, "b": 2, "c": 2},
    )
    simple, trace = simplify_traced(net)
    assert trace.rules() == ("ones",) and simple.tensors == ("A", "sum")
    assert str(trace) == "1. ones: one [legs ('a',) on other tensors too] -> drop one"
    _check(net)


def test_symbolic_batch_does_not_block_the_rules() -> None:
    concrete = conv_net(_case(2, 3, (8, 12), 4, 4, 4))
    net = concrete.replace(sizes={**concrete.sizes, "n": sympy.Symbol("n", integer=True, positive=True)})
    simple, trace = simplify_traced(net)
    assert trace.rules() == ("dense", "dense") and not simple.is_concrete
    x, w = torch.randn(5, 3, 8, 12, dtype=torch.float64), torch.randn(4, 3, 4, 4, dtype=torch.float64)
    got = tnconv.compile(simple)(X=x, W=w)
    expected = torch.nn.functional.conv2d(x, w, stride=4).unflatten(1, (1, 4))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
