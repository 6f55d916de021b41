"""Native dispatch: conv routines run on PyTorch kernels, matched on structure, equal to the dense network."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lower_reference import assert_close, dense, random_operands
from strategies import conv_layers

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern, Ones
from tnconv.ir.views import Unflatten
from tnconv.lower.compile import compile

MODES = ("zeros", "reflect", "replicate", "circular")


def network(op: str, layer, simplify: bool = False) -> Network:
    out_channels = None if op in ("unfold", "unfold_transpose", "fold") else layer.out_channels
    return tnconv.conv_network(
        op, layer.x_shape, layer.kernel_size, out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed, simplify=simplify,
    )


def check(net: Network, strategy: str | None) -> None:
    program = compile(net)
    if strategy is not None:
        assert program.strategy == strategy, program.strategy
    operands = random_operands(net)
    assert_close(program(*operands), dense(net, operands))


@settings(max_examples=40)
@given(conv_layers(max_dims=3, padding_modes=MODES), st.sampled_from(("forward", "weight_vjp", "unfold")))
def test_conv_routines_run_native_with_every_padding(layer, op):
    n = layer.dims
    name = {"forward": f"conv{n}d", "weight_vjp": f"conv{n}d_weight", "unfold": f"unfold{n}d"}[op]
    check(network(op, layer), "native:" + name)


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
    check(network(op, layer), None if name is None else "native:" + name)


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
    kernel = compile(net)._kernel
    assert kernel.x.views == () and kernel.x.permutation is None and kernel.x.shape is None
    assert kernel.w.views == () and kernel.w.permutation is None and kernel.w.shape is None
    assert net.entries[0].kind.views == (Unflatten(1, (2, 2)),)


def test_integer_operands_use_the_einsum_path():
    net = tnconv.conv_network("forward", (1, 2, 5), (2,), 3, simplify=False)
    x, w = torch.randint(-3, 3, (1, 2, 5)), torch.randint(-3, 3, (3, 2, 2))
    expected = dense(net, [x.double(), w.double()])
    assert torch.equal(compile(net)(x, w), expected.long())


def test_crops_reaching_past_the_padding():
    """A transposed conv whose left padding crops the whole full output: the pixels are zeros."""
    net = tnconv.conv_network("transpose_forward", (1, 1, 1), (1,), 1, stride=3, padding=((2, 0),),
                              output_padding=2, simplify=False)
    check(net, "native:conv_transpose1d")
    from tnconv.lower.structured import signed_pad

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
    """stride = kernel: simplify splits pixel axes into (o, k) views; native dispatch restores the patterns.

    (Legs of size 1 are squeezed away by simplify, which leaves a matrix product; sizes here are >= 2.)
    """
    channels = groups * per_group
    net = tnconv.conv_network(
        op, (batch, channels, kernel * blocks, 2 * blocks), (kernel, 2), channels, stride=(kernel, 2),
        groups=groups, transposed=transposed, simplify=True,
    )
    program = compile(net)
    assert program.strategy.startswith("native:conv"), (program.strategy, net.dump())
    operands = random_operands(net)
    assert_close(program(*operands), dense(net, operands))


def test_channel_splits_are_not_mistaken_for_patterns():
    from tnconv.lower.unsplit import restore_patterns

    net = Network(
        [Tensor("X", ("n", "g", "c"), Data((Unflatten(1, (2, 3)),))), Tensor("W", ("g", "c", "d"), Data())],
        ("n", "g", "d"), {"n": 2, "g": 2, "c": 3, "d": 4},
    )
    assert restore_patterns(net) is None
    check(net, "native:matmul")


def test_restored_patterns_keep_the_spatial_order():
    """The restored patterns follow the pixel axes, so the operands reach the kernel without a copy."""
    net = tnconv.conv_network("forward", (2, 3, 8, 12), (4, 4), 5, stride=4)
    kernel = compile(net)._kernel
    assert compile(net).strategy == "native:conv2d"
    assert kernel.x.permutation is None and kernel.w.permutation is None and kernel.out.permutation is None
    check(net, "native:conv2d")
