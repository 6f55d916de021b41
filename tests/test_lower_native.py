"""Native dispatch: conv routines run on PyTorch kernels, matched on structure, equal to the dense network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers
from support.networks import assert_close, dense_value, random_operands
from support.references import reference_conv, reference_conv_transpose

import tnconv
from tnconv.conv.hyper import conv_hyper
from tnconv.curvature import per_sample_weight_grad
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern, Ones
from tnconv.ir.views import Squeeze, Taps, Unflatten
from tnconv.programs.compile import compile
from tnconv.lower.reading import read
from tnconv.routines.derivation import routine_network
from tnconv.routines.table import TABLE

MODES = ("zeros", "reflect", "replicate", "circular")


def network(op: str, layer, simplify: bool = False) -> Network:
    out_channels = None if op in ("unfold", "unfold_transpose", "fold") else layer.out_channels
    return tnconv.conv_network(
        op, layer.x_shape, layer.kernel_size, out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed, simplify=simplify,
    )


def check(net: Network, strategy: str | set[str] | None) -> None:
    program = compile(net)
    if strategy is not None:
        assert program.strategy in ({strategy} if isinstance(strategy, str) else strategy), program.strategy
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


@settings(max_examples=40)
@given(conv_layers(max_dims=3, padding_modes=MODES), st.sampled_from(("forward", "weight_vjp", "unfold")))
def test_conv_routines_run_native_with_every_padding(layer, op):
    n = layer.dims
    name = {"forward": f"conv{n}d", "weight_vjp": f"conv{n}d_weight", "unfold": f"unfold{n}d"}[op]
    check(network(op, layer), weight_kernels(layer, "native:" + name) if op == "weight_vjp" else "native:" + name)


def weight_kernels(layer, conv: str) -> set[str]:
    """A weight VJP runs a conv kernel, or a matrix product where the kernel is 1x1 (``native._one_by_one``)."""
    return {conv, "native:matmul"} if all(k == 1 for k in layer.kernel_size) else {conv}


@settings(max_examples=30)
@given(conv_layers(max_dims=3))
def test_input_vjp_runs_a_transposed_conv(layer):
    check(network("input_vjp", layer), f"native:conv_transpose{layer.dims}d")


@settings(max_examples=30)
@given(conv_layers(max_dims=3, transposed=True), st.sampled_from(("forward", "input_vjp", "weight_vjp", "unfold")))
def test_transposed_layer_routines(layer, op):
    n = layer.dims
    name = {
        "forward": f"conv_transpose{n}d", "input_vjp": f"conv{n}d", "weight_vjp": f"conv{n}d_weight",
        "unfold": None,
    }[op]
    expected = None if name is None else "native:" + name
    check(network(op, layer), weight_kernels(layer, expected) if op == "weight_vjp" else expected)


@settings(max_examples=20)
@given(conv_layers(min_dims=2, max_dims=2))
def test_fold_runs_f_fold(layer):
    check(network("fold", layer), "native:fold2d")


@settings(max_examples=10)
@given(conv_layers(min_dims=4, max_dims=4, max_groups=2, max_batch=1))
def test_four_dims_fall_back_to_einsum_except_unfold(layer):
    check(network("forward", layer), "einsum")
    check(network("unfold", layer), "native:unfold4d")


def test_result_matches_pytorch_conv2d_float32():
    x, w = torch.randn(2, 6, 11, 9), torch.randn(4, 3, 3, 3)
    net = tnconv.conv_network("forward", x.shape, w.shape[2:], 4, stride=2, padding=1, groups=2, simplify=False)
    program = compile(net)
    result = program(X=x, W=w).flatten(1, 2)
    torch.testing.assert_close(result, torch.nn.functional.conv2d(x, w, None, 2, 1, 1, 2), rtol=1e-4, atol=1e-5)


def test_matching_ignores_names_and_follows_leg_order():
    """Renamed tensors and legs, permuted legs and output still dispatch natively with the right value."""
    base = tnconv.conv_network("forward", (2, 4, 7, 6), (3, 2), 6, stride=(2, 1), padding=1, groups=2, simplify=False)
    renamed = base.rename_tensors({"X": "input", "W": "kernel"}).rename({"n": "batch", "c_in": "a", "o1": "y"})
    check(renamed, "native:conv2d")
    entries = [
        Tensor(e.name, tuple(reversed(e.legs)), e.kind) if e.name == "W" else e for e in base.entries
    ]
    w = next(e for e in entries if e.name == "W")
    entries = [Tensor("W", w.legs, Data()) if e.name == "W" else e for e in entries]
    permuted = base.replace(tensors=entries, output=("o2", "c_out", "n", "g", "o1"))
    check(permuted, "native:conv2d")


def test_non_conv_structures_use_the_einsum_path():
    base = tnconv.conv_network("forward", (2, 3, 6), (3,), 4, padding=1, simplify=False)
    extra = base.replace(tensors=[*base.entries, Tensor("one", ("n",), Ones())])
    check(extra, "einsum")
    summed = base.replace(output=("g", "c_out", "o1"))
    check(summed, "einsum")
    p = Tensor("P", ("k", "o", "i"), IndexPattern(6, 3, 1, 1, 1, 1, "reflect"))
    q = Tensor("Q", ("k2", "o2", "j"), IndexPattern(5, 2, 1, 0, 0, 1, "zeros"))
    sizes = {"n": 2, "c": 3, "d": 2, "i": 6, "j": 5, "k": 3, "o": 6, "k2": 2, "o2": 4}
    mixed = Network(
        [Tensor("X", ("n", "c", "i", "j"), Data()), p, q, Tensor("W", ("d", "c", "k", "k2"), Data())],
        ("n", "d", "o", "o2"), sizes,
    )
    check(mixed, "einsum")


@settings(max_examples=25)
@given(
    st.lists(st.sampled_from("bfgc"), min_size=1, max_size=5),
    st.integers(0, 2**31),
)
def test_matmul_dispatch(roles, seed):
    """Two operands with batch (b), free (f, g) and contracted (c) legs, in shuffled orders."""
    legs = {role: [f"{role}{n}" for n, r in enumerate(roles) if r == role] for role in "bfgc"}
    a = legs["b"] + legs["f"] + legs["c"]
    b = legs["c"] + legs["g"] + legs["b"]
    out = legs["f"] + legs["b"] + legs["g"]
    rng = torch.Generator().manual_seed(seed)
    a = [a[i] for i in torch.randperm(len(a), generator=rng).tolist()]
    sizes = {leg: 1 + n % 3 for n, leg in enumerate(a + b)}
    net = Network([Tensor("A", tuple(a), Data()), Tensor("B", tuple(b), Data())], tuple(out), sizes)
    check(net, "native:matmul")


def test_grouped_channels_in_one_operand_pass_without_copy():
    x = torch.randn(2, 4, 8)
    net = tnconv.conv_network("forward", x.shape, (3,), 6, groups=2, simplify=False)
    kernel = compile(net).plan.kernel
    assert kernel.x.views == () and kernel.x.permutation is None and kernel.x.shape is None
    assert kernel.w.views == () and kernel.w.permutation is None and kernel.w.shape is None
    assert net.entries[0].kind.views == (Unflatten(1, (2, 2)),)


def test_integer_operands_use_the_einsum_path():
    net = tnconv.conv_network("forward", (1, 2, 5), (2,), 3, simplify=False)
    x, w = torch.randint(-3, 3, (1, 2, 5)), torch.randint(-3, 3, (3, 2, 2))
    expected = dense_value(net, [x.double(), w.double()])
    assert torch.equal(compile(net)(x, w), expected.long())


def test_crops_reaching_past_the_padding():
    """A transposed conv whose left padding crops the whole full output: the pixels are zeros."""
    net = tnconv.conv_network("transpose_forward", (1, 1, 1), (1,), 1, stride=3, padding=((2, 0),),
                              output_padding=2, simplify=False)
    check(net, "native:conv_transpose1d")
    from tnconv.backends.torch.views import signed_pad

    x = torch.arange(1.0, 4.0).reshape(1, 3)
    torch.testing.assert_close(signed_pad(x, (-4, 2)), torch.zeros(1, 1))
    torch.testing.assert_close(signed_pad(x, (-1, 1)), torch.tensor([[2.0, 3.0, 0.0]]))
    torch.testing.assert_close(signed_pad(x, (1, -2)), torch.tensor([[0.0, 1.0]]))


@settings(max_examples=15)
@given(
    st.integers(1, 2), st.integers(2, 3), st.integers(2, 3), st.integers(2, 3), st.integers(2, 3),
    st.sampled_from(("forward", "input_vjp", "weight_vjp")), st.booleans(),
)
def test_simplified_patchify_layers_run_conv_kernels(groups, kernel, blocks, per_group, batch, op, transposed):
    """stride = kernel: simplify reads pixel axes as taps ``(o, k)``; native dispatch lifts them back to patterns."""
    channels = groups * per_group
    net = tnconv.conv_network(
        op, (batch, channels, kernel * blocks, 2 * blocks), (kernel, 2), channels, stride=(kernel, 2),
        groups=groups, transposed=transposed, simplify=True,
    )
    program = compile(net)
    assert program.strategy.startswith("native:conv"), (program.strategy, net.dump())
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_channel_splits_are_not_mistaken_for_patterns():
    net = Network(
        [Tensor("X", ("n", "g", "c"), Data((Unflatten(1, (2, 3)),))), Tensor("W", ("g", "c", "d"), Data())],
        ("n", "g", "d"), {"n": 2, "g": 2, "c": 3, "d": 4},
    )
    reading = read(net)
    assert reading is not None and reading.patterns == () and reading.operands[0] is net.entries[0]
    check(net, "native:matmul")


def test_read_patterns_keep_the_spatial_order():
    """The read patterns follow the pixel axes, so the operands reach the kernel without a copy."""
    net = tnconv.conv_network("forward", (2, 3, 8, 12), (4, 4), 5, stride=4)
    kernel = compile(net).plan.kernel
    assert compile(net).strategy == "native:conv2d"
    assert kernel.x.permutation is None and kernel.w.permutation is None and kernel.out.permutation is None
    check(net, "native:conv2d")


def test_taps_after_other_views_are_read():
    """A squeeze after the taps view moves before it; the conv is found again."""
    views = (Taps(1, IndexPattern(8, 4, 4)), Squeeze(0))
    net = Network(
        [Tensor("X", ("o", "k", "c"), Data(views)), Tensor("W", ("d", "c", "k"), Data())],
        ("d", "o"), {"o": 2, "k": 4, "c": 3, "d": 5},
    )
    reading = read(net)
    assert reading is not None and reading.operands[0].kind == Data((Squeeze(0),))
    (pattern,) = reading.patterns
    assert pattern.pattern == IndexPattern(8, 4, 4) and pattern.reader == 0 and pattern.tensor is None
    assert pattern.legs[:2] == ("k", "o") and reading.operands[0].legs == (pattern.legs[2], "c")
    check(net, "native:conv1d")


def test_chained_taps_views_are_not_read_as_kernel_patterns():
    """A taps view on the taps of another (pixels read twice) is no conv kernel's pattern: einsum runs it."""
    views = (Taps(0, IndexPattern(8, 2, stride=2)), Taps(1, IndexPattern(2, 2)))
    net = Network(
        [Tensor("X", ("o", "q", "p"), Data(views)), Tensor("W", ("q", "p"), Data())],
        ("o",), {"o": 4, "q": 1, "p": 2},
    )
    assert read(net) is None
    check(net, None)


@pytest.mark.parametrize("op", ["forward", "weight_vjp", "unfold"])
def test_simplified_and_unsimplified_layers_make_the_same_kernel_call(op: str):
    """The reading sees a pattern tensor and its ``Taps`` view alike: one layer, one call (1x1 weight VJPs as the
    matrix product of strided views, either way)."""
    for kernel, stride in ((3, 3), (1, 2)):
        layer = ((2, 4, 6, 6), (kernel, kernel), 3, stride)
        nets = [tnconv.conv_network(op, *layer, simplify=simplify) for simplify in (False, True)]
        plans = [compile(net).plan for net in nets]
        assert plans[0].name == plans[1].name, [plan.name for plan in plans]
        expected = "matmul" if op == "weight_vjp" and kernel == 1 else "unfold2d" if op == "unfold" else None
        assert expected is None or plans[0].name == expected
        for net in nets:
            check(net, "native:" + plans[0].name)


LAYERS = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "layers.json").read_text())["layers"]
CASES = [
    *LAYERS,
    {"name": "1x1 stride 2", "x": [4, 9, 8], "w": [5, 4, 1, 1], "stride": 2, "padding": 0},
    {"name": "2x2 stride 2 pad 1", "x": [3, 7, 6], "w": [4, 3, 2, 2], "stride": 2, "padding": 1},
    {"name": "3x3 stride 3 pad 1", "x": [3, 10, 8], "w": [4, 3, 3, 3], "stride": 3, "padding": 1},
]


def _layer(spec: dict, batch: int, small: bool) -> ConvLayer:
    """The layer of a ``layers.json`` entry; ``small``: at most 2 groups of at most 2 channels each way."""
    (c_in, *size), weight = spec["x"], list(spec["w"])
    groups, transposed = spec.get("groups", 1), spec.get("transposed", False)
    if small:
        per_group_in, per_group_out = c_in // groups, weight[1] if transposed else weight[0] // groups
        groups = min(groups, 2)
        c_in = groups * min(per_group_in, 2)
        out = min(per_group_out, 2)
        weight[:2] = [c_in, out] if transposed else [groups * out, c_in // groups]
    pairs = ((spec["padding"], spec["padding"]),) * len(size)
    return ConvLayer((batch, c_in, *size), tuple(weight), spec["stride"], spec["padding"], 1, groups, "zeros", 0,
                     transposed, pairs)


def _kernel(spec: dict, op: str) -> str:
    """The strategy prefix expected: a conv kernel, but a matrix product for the weight VJP of a 1x1 kernel
    (``tnconv.lower.native._one_by_one``)."""
    one_by_one = all(k == 1 for k in spec["w"][2:]) and spec["padding"] == 0
    return "native:matmul" if op == "weight_vjp" and one_by_one else "native:conv"


@pytest.mark.parametrize("simplify", (False, True))
@pytest.mark.parametrize("spec", CASES, ids=[spec["name"] for spec in CASES])
def test_benchmark_layers_run_native_conv_kernels(spec: dict, simplify: bool):
    """Issue 12 item 2: every benchmark layer and the three cases that ran a matmul after simplify run a native
    conv kernel for forward, input VJP and weight VJP, simplified or not, equal to PyTorch in float64."""
    for op in ("forward", "input_vjp", "weight_vjp"):
        assert compile(network(op, _layer(spec, 8, False), simplify)).strategy.startswith(_kernel(spec, op)), op
    layer = _layer(spec, 2, True)
    x, w = layer.tensors()
    x.requires_grad_(True)
    w.requires_grad_(True)
    if layer.transposed:
        y = reference_conv_transpose(x, w, layer.strides, layer.pairs, layer.output_paddings, layer.dilations, layer.groups)
    else:
        y = reference_conv(x, w, layer.strides, layer.pairs, layer.dilations, layer.groups)
    v = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    grad_x, grad_w = torch.autograd.grad(y, (x, w), v)
    x, w = x.detach(), w.detach()
    runs = {"forward": ((x, w), y.detach(), 1), "input_vjp": ((v, w), grad_x, 1), "weight_vjp": ((x, v), grad_w, 0)}
    for op, (operands, expected, groups_axis) in runs.items():
        program = compile(network(op, layer, simplify))
        assert program.strategy.startswith(_kernel(spec, op)), (op, program.strategy)
        torch.testing.assert_close(program(*operands).flatten(groups_axis, groups_axis + 1), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size, native", [(4, False), (8, False), (16, True)])
def test_per_sample_gradients_of_wide_layers_leave_the_kernel_where_locations_are_few(size, native):
    """Per-sample gradients are a weight VJP grouped by the batch: with 64 x 64 channels per group, 16x16 output
    locations keep ``convolution_backward`` (T^2 >= 4 c_in c_out), 4x4 and 8x8 run as einsum (the kernel took
    1.5x and 1.0x its time there, 29x at 2x2 with 512 channels); ``per_sample_weight_grad``, which runs this
    program, agrees with autograd per sample."""
    hyper = conv_hyper((2, 64, size, size), 3, 64, padding=1)
    program = compile(routine_network(TABLE["per_sample_grad"], hyper))
    assert (program.strategy == "native:conv2d_weight") is native, program.strategy
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(2, 64, size, size, generator=generator, dtype=torch.float64)
    v = torch.randn(2, 64, size, size, generator=generator, dtype=torch.float64)
    weight = torch.zeros(64, 64, 3, 3, dtype=torch.float64, requires_grad=True)
    expected = torch.stack([torch.autograd.grad((F.conv2d(x[n : n + 1], weight, padding=1) * v[n : n + 1]).sum(),
                                                weight)[0] for n in range(2)])  # fmt: skip
    assert_close(per_sample_weight_grad(x, v, 3, padding=1), expected)


def test_narrow_and_single_groups_keep_the_weight_kernel_on_few_locations():
    """Depthwise and ResNeXt-like groups (< 64 x 64 channel pairs), and ungrouped layers, run the kernel at 2x2."""
    for channels, groups in [(64, 64), (128, 4), (512, 1)]:
        net = tnconv.conv_network("weight_vjp", (2, channels, 2, 2), 3, channels, padding=1, groups=groups)
        assert compile(net).strategy == "native:conv2d_weight", (channels, groups)
