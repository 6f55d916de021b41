"""Structured lowering: index patterns as strided views / gathers / scatters, equal to the dense network.

``memory_limit`` (here far above any size) turns native kernels off, so these
programs run the einsum path; ``"dense"`` in the strategy would mean a pattern
was built as a dense tensor.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import conv_layers
from support.networks import assert_close, dense_value, random_operands

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern, PatternSum
from tnconv.programs.compile import compile

MODES = ("zeros", "reflect", "replicate", "circular")
NO_NATIVE = 10**12


def network(op: str, layer) -> Network:
    out_channels = None if op in ("unfold", "fold") else layer.out_channels
    return tnconv.conv_network(
        op, layer.x_shape, layer.kernel_size, out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed, simplify=False,
    )


def check(net: Network, strategy: str = "einsum") -> None:
    program = compile(net, memory_limit=NO_NATIVE)
    assert program.strategy == strategy, program.strategy
    operands = random_operands(net, seed=1)
    assert_close(program(*operands), dense_value(net, operands))


@settings(max_examples=40)
@given(
    conv_layers(max_dims=4, padding_modes=MODES, max_groups=2, max_batch=2),
    st.sampled_from(("forward", "input_vjp", "weight_vjp", "unfold")),
)
def test_conv_routines_without_dense_patterns(layer, op):
    check(network(op, layer))


@settings(max_examples=25)
@given(
    conv_layers(max_dims=3, transposed=True, max_groups=2),
    st.sampled_from(("forward", "input_vjp", "weight_vjp", "unfold")),
)
def test_transposed_routines_without_dense_patterns(layer, op):
    check(network(op, layer))


@settings(max_examples=15)
@given(conv_layers(max_dims=3, max_groups=2))
def test_fold_without_dense_patterns(layer):
    check(network("fold", layer))


def pattern(size: int, kernel: int, stride: int = 1, left: int = 0, right: int = 0, dilation: int = 1,
            mode: str = "zeros") -> IndexPattern:
    return IndexPattern(size, kernel, stride, left, right, dilation, mode)


def sized(tensors: list[Tensor], output: tuple[str, ...], extra: dict[str, int]) -> Network:
    """A network whose pattern legs get the patterns' sizes and other legs ``extra``."""
    sizes = dict(extra)
    for t in tensors:
        implied = t.kind.implied_sizes()
        if implied is not None:
            sizes.update({leg: int(s) for leg, s in zip(t.legs, implied)})
    return Network(tensors, output, sizes)


@st.composite
def patterns(draw: st.DrawFn, crop: bool) -> IndexPattern:
    """Index patterns of any padding mode with at least one output (``crop``: negative zero-padding too)."""
    mode = draw(st.sampled_from(MODES))
    lowest = -1 if crop and mode == "zeros" else 0
    kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    left, right = draw(st.integers(lowest, 3)), draw(st.integers(lowest, 3))
    smallest = max(1, dilation * (kernel - 1) + 1 - left - right)  # the input the kernel just covers
    return pattern(smallest + draw(st.integers(0, 8)), kernel, stride, left, right, dilation, mode)


@settings(max_examples=30)
@given(patterns(crop=True), st.sampled_from(("o", "k", "ko", "")))
def test_one_pattern_on_one_tensor(p, keep):
    """X[c, i] Pi[k, o, i] with o and/or k summed or kept: a gather, then a sum."""
    assert p.output_size >= 1
    net = sized([Tensor("X", ("c", "i"), Data()), Tensor("P", ("k", "o", "i"), p)],
                ("c", *[leg for leg in ("k", "o") if leg in keep]), {"c": 2})
    check(net)


@settings(max_examples=30)
@given(patterns(crop=False), st.booleans(), st.booleans())
def test_fold_of_a_pattern_onto_its_pixels(p, keep_k, k_on_x):
    """X[c, (k,) o] Pi[k, o, i] -> (c, (k,) i): a scatter-add, every padding mode."""
    assert p.output_size >= 1
    x_legs = ("c", "k", "o") if k_on_x else ("c", "o")
    net = sized([Tensor("X", x_legs, Data()), Tensor("P", ("k", "o", "i"), p)],
                ("c", "k", "i") if keep_k else ("c", "i"), {"c": 3})
    check(net)


def test_chained_patterns_and_pattern_sums():
    """Pi2's input is Pi1's output (a pattern of a pattern); a PatternSum as a small (K, I) matrix."""
    p1, p2 = pattern(11, 3, 2, 1, 1), pattern(6, 2, 1, 0, 1, 2, "reflect")
    net = sized(
        [Tensor("X", ("n", "i"), Data()), Tensor("A", ("k", "o", "i"), p1), Tensor("B", ("q", "r", "o"), p2),
         Tensor("W", ("k", "q"), Data())],
        ("n", "r"), {"n": 2},
    )
    check(net)
    s = sized([Tensor("X", ("n", "c", "i"), Data()), Tensor("S", ("k", "i"), PatternSum(pattern(7, 3, 2, 1, 2))),
               Tensor("X", ("n", "d", "j"), Data()), Tensor("T", ("l", "j"), PatternSum(pattern(7, 3, 2, 1, 2)))],
              ("c", "k", "d", "l"), {"n": 2, "c": 2, "d": 2})
    s = s.replace(sizes={**s.sizes, "j": 7})
    check(s)


def test_shared_input_leg_is_built_densely_and_said_so():
    """Two tensors on a pattern's input leg: no gather applies, the pattern is built (and named)."""
    net = sized(
        [Tensor("X", ("c", "i"), Data()), Tensor("Y", ("i",), Data()), Tensor("P", ("k", "o", "i"), pattern(6, 2))],
        ("c", "k", "o"), {"c": 2},
    )
    check(net, "einsum+dense(P)")


def test_explicit_path_builds_patterns_densely_and_follows_it():
    net = tnconv.conv_network("forward", (1, 2, 6), (3,), 2, padding=1, simplify=False)
    program = compile(net, optimize=((0, 1), (0, 1)))
    assert program.path == ((0, 1), (0, 1)) and program.strategy == "einsum+dense(Pi1)"
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_cost_model_counts_the_gather_not_a_dense_product():
    """The unfolded input costs its size (N*C*K*O), far below a dense pattern's N*C*K*O*I."""
    net = tnconv.conv_network("unfold", (2, 3, 32, 32), (3, 3), padding=1, simplify=False)
    program = compile(net, memory_limit=NO_NATIVE)
    unfolded = 2 * 3 * 9 * 32 * 32
    assert program.largest_intermediate == unfolded
    assert program.flops < 10 * unfolded


@settings(max_examples=10)
@given(conv_layers(max_dims=2, max_groups=2))
def test_float32_matches_float64(layer):
    net = network("forward", layer)
    program = compile(net, memory_limit=NO_NATIVE)
    operands = random_operands(net, seed=2)
    single = program(*[t.float() for t in operands])
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), dense_value(net, operands), rtol=1e-4, atol=1e-4)


@settings(max_examples=15)
@given(conv_layers(max_dims=2, transposed=True, max_groups=2), st.sampled_from(("kfac_expand", "kfac_reduce")))
def test_transposed_kfac_scatters_instead_of_building_patterns(layer, op):
    """KFAC of a transposed layer meets two patterns on one leg i: each is scattered onto its input."""
    net = tnconv.conv_network(
        op, layer.x_shape, layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
        groups=layer.groups, output_padding=layer.output_padding, transposed=True, simplify=False,
    )
    program = compile(net)
    scatters = [fold for preparation in program.einsum_plan.preparations for fold in preparation.scatters]
    assert "dense" not in program.strategy and scatters, program.strategy
    operands = random_operands(net, seed=3)
    assert_close(program(*operands), dense_value(net, operands))
