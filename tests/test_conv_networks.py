"""Conv routine networks: the leg/tensor conventions, and every routine's value against PyTorch, any N."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers
from support.references import reference_conv, reference_conv_transpose, reference_unfold

import tnconv
from tnconv.ir.tensors import IndexPattern

TOL = dict(rtol=1e-10, atol=1e-10)
MODES = ("zeros", "reflect", "replicate", "circular")


def network(op: str, layer: ConvLayer) -> tnconv.Network:
    net = tnconv.conv_network(
        op, layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed, simplify=False,
    )
    return tnconv.verify(net)


def run(op: str, layer: ConvLayer, **operands: torch.Tensor) -> torch.Tensor:
    return tnconv.compile(network(op, layer))(**operands)


def torch_forward(layer: ConvLayer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if layer.transposed:
        return reference_conv_transpose(
            x, w, layer.strides, layer.pairs, layer.output_paddings, layer.dilations, layer.groups
        )
    return reference_conv(x, w, layer.strides, layer.pairs, layer.dilations, layer.groups, layer.padding_mode)


def check_layer(layer: ConvLayer, seed: int) -> None:
    """forward, input VJP, weight VJP and unfold of ``layer`` equal PyTorch (VJPs by autograd)."""
    x, w = layer.tensors(seed=seed)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = torch_forward(layer, x, w)
    v = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed + 1))
    grad_x, grad_w = torch.autograd.grad(y, (x, w), v)
    x, w = x.detach(), w.detach()
    batch, groups = x.shape[0], layer.groups

    ours = run("forward", layer, X=x, W=w)
    assert ours.shape == (batch, groups, layer.out_channels // groups, *layer.output_size)
    torch.testing.assert_close(ours.flatten(1, 2), y.detach(), **TOL)

    ours = run("input_vjp", layer, V=v, W=w)
    torch.testing.assert_close(ours.flatten(1, 2), grad_x, **TOL)

    ours = run("weight_vjp", layer, X=x, V=v)
    torch.testing.assert_close(ours.flatten(0, 1), grad_w, **TOL)


@settings(max_examples=60, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=MODES), st.integers(0, 2**16))
def test_conv_routines_match_torch(layer: ConvLayer, seed: int) -> None:
    check_layer(layer, seed)


@settings(max_examples=50, deadline=None)
@given(conv_layers(max_dims=3, transposed=True), st.integers(0, 2**16))
def test_transposed_conv_routines_match_torch(layer: ConvLayer, seed: int) -> None:
    check_layer(layer, seed)
    net = network("forward", layer)
    assert net == tnconv.conv_network(
        "transpose_forward", layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding,
        layer.dilation, layer.groups, output_padding=layer.output_padding, simplify=False,
    )


@settings(max_examples=40, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=MODES), st.integers(0, 2**16))
def test_unfold_and_fold_match_torch(layer: ConvLayer, seed: int) -> None:
    x, _ = layer.tensors(seed=seed)
    x.requires_grad_(True)
    columns = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    if layer.padding_mode != "zeros":  # unfold of the mode-padded input
        from support.references import flat_pad

        padded = torch.nn.functional.pad(x, flat_pad(layer.pairs), mode=layer.padding_mode)
        columns = reference_unfold(padded, layer.kernel_size, layer.strides, ((0, 0),) * layer.dims, layer.dilations)
    ours = run("unfold", layer, X=x.detach())
    groups, channels = layer.groups, layer.in_channels
    assert ours.shape == (x.shape[0], groups, channels // groups, *layer.kernel_size, *layer.output_size)
    torch.testing.assert_close(ours.flatten(1, 2 + layer.dims).flatten(2), columns.detach(), **TOL)
    if layer.padding_mode == "zeros":  # fold is unfold's adjoint
        u = torch.randn(columns.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(seed))
        (expected,) = torch.autograd.grad(columns, x, u)
        folded = run("fold", layer, X=u)
        torch.testing.assert_close(folded.flatten(1, 2), expected, **TOL)


@settings(max_examples=40, deadline=None)
@given(conv_layers(max_dims=3, transposed=True), st.integers(0, 2**16))
def test_unfold_transpose_is_the_im2col_of_conv_transpose(layer: ConvLayer, seed: int) -> None:
    x, w = layer.tensors(seed=seed)
    columns = run("unfold_transpose", layer, X=x)  # (n, g, c_in, k.., i..)
    groups = layer.groups
    assert columns.shape == (x.shape[0], groups, layer.in_channels // groups, *layer.kernel_size, *layer.output_size)
    flat = columns.flatten(2, 2 + layer.dims).flatten(3)  # (n, g, c_in*K, L)
    weight = w.unflatten(0, (groups, -1)).transpose(1, 2).flatten(2)  # (g, c_out, c_in*K)
    result = torch.einsum("gor,ngrl->ngol", weight, flat).flatten(1, 2).reshape(layer.output_shape)
    torch.testing.assert_close(result, torch_forward(layer, x, w), **TOL)


@pytest.mark.parametrize("dims", [4, 5])
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_high_dim_conv_matches_lower_dim_reference(dims: int, data: st.DataObject) -> None:
    layer = data.draw(conv_layers(min_dims=dims, max_dims=dims, max_groups=2, max_batch=1))
    check_layer(layer, data.draw(st.integers(0, 2**16)))


@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_4d_transposed_conv_matches_lower_dim_reference(data: st.DataObject) -> None:
    layer = data.draw(conv_layers(min_dims=4, max_dims=4, transposed=True, max_groups=2, max_batch=1))
    check_layer(layer, data.draw(st.integers(0, 2**16)))


@settings(max_examples=25, deadline=None)
@given(conv_layers(max_dims=2, padding_modes=MODES), st.booleans(), st.integers(0, 2**16))
def test_simplified_networks_keep_their_values(layer: ConvLayer, transposed: bool, seed: int) -> None:
    x, w = layer.tensors(seed=seed)
    v = torch.randn(layer.output_shape, dtype=x.dtype, generator=torch.Generator().manual_seed(seed))
    operands = {"forward": dict(X=x, W=w), "input_vjp": dict(V=v, W=w), "weight_vjp": dict(X=x, V=v), "unfold": dict(X=x)}
    for op, given_operands in operands.items():
        args = (op, layer.x_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
                layer.groups, layer.padding_mode)
        simplified = tnconv.verify(tnconv.conv_network(*args, simplify=True))
        expected = tnconv.compile(tnconv.conv_network(*args, simplify=False))(**given_operands)
        torch.testing.assert_close(tnconv.compile(simplified)(**given_operands), expected, **TOL)


def test_conventions_of_a_grouped_2d_conv() -> None:
    net = tnconv.conv_network("forward", (2, 6, 7, 5), (3, 2), 4, stride=(2, 1), padding=((1, 0), 1), groups=2,
                              simplify=False)
    assert net.tensors == ("X", "Pi1", "Pi2", "W")
    assert net.legs("X") == ("n", "g", "c_in", "i1", "i2")
    assert net.legs("W") == ("g", "c_out", "c_in", "k1", "k2")
    assert net.legs("Pi1") == ("k1", "o1", "i1") and net.legs("Pi2") == ("k2", "o2", "i2")
    assert net.output == ("n", "g", "c_out", "o1", "o2")
    assert {leg: net.size(leg) for leg in ("n", "g", "c_in", "c_out", "i1", "o1", "k1", "i2", "o2", "k2")} == dict(
        n=2, g=2, c_in=3, c_out=2, i1=7, o1=3, k1=3, i2=5, o2=6, k2=2
    )
    kinds = [e.kind for e in net.entries if e.name.startswith("Pi")]
    assert kinds == [IndexPattern(7, 3, 2, 1, 0, 1), IndexPattern(5, 2, 1, 1, 1, 1)]
    assert tnconv.compile(net).operands == ("X", "W")

    single = tnconv.conv_network("forward", (1, 3, 5), 3, 2, simplify=False)
    assert single.size("g") == 1 and single.legs("X") == ("n", "g", "c_in", "i1")

    assert tnconv.conv_network("input_vjp", (2, 6, 7, 5), 3, 4, groups=2, simplify=False).output == (
        "n", "g", "c_in", "i1", "i2"
    )
    assert tnconv.conv_network("weight_vjp", (2, 6, 7, 5), 3, 4, groups=2, simplify=False).output == (
        "g", "c_out", "c_in", "k1", "k2"
    )
    assert tnconv.conv_network("unfold", (2, 6, 7, 5), 3, simplify=False).output == (
        "n", "g", "c_in", "k1", "k2", "o1", "o2"
    )
    transposed = tnconv.conv_network("transpose_forward", (2, 6, 4), 3, 4, stride=2, groups=2, simplify=False)
    assert transposed.legs("X") == ("n", "g", "c_in", "o1") and transposed.output == ("n", "g", "c_out", "i1")
    assert transposed.legs("W") == ("g", "c_in", "c_out", "k1")
    assert transposed.size("i1") == 9


def test_padding_modes_are_pattern_variants() -> None:
    net = tnconv.conv_network("forward", (1, 1, 5, 5), 3, 1, padding=1, padding_mode="reflect", simplify=False)
    assert [e.kind.mode for e in net.entries if e.name.startswith("Pi")] == ["reflect", "reflect"]
    assert net.size("i1") == 5  # no padded copy of the input


def test_networks_are_cached_values() -> None:
    first = tnconv.conv_network("forward", (2, 4, 6), 3, 4, padding=1, simplify=False)
    assert first is tnconv.conv_network("forward", [2, 4, 6], (3,), 4, padding=(1,), simplify=False)


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        (("backward", (1, 1, 5), 3, 1), {}, ValueError, ["op", "'backward'"]),
        ((3, (1, 1, 5), 3, 1), {}, TypeError, ["op", "3"]),
        (("forward", (1, 1, 5), 3), {}, ValueError, ["out_channels", "None"]),
        (("input_vjp", (1, 1, 5), 3), {}, ValueError, ["out_channels", "None"]),
        (("fold", (1, 1, 5), 3), dict(transposed=True), ValueError, ["fold", "transposed"]),
        (("forward", (1, 1, 5), 3, 1), dict(simplify=1), TypeError, ["simplify", "1"]),
        (("forward", (1, 1, 5), 7, 1), {}, ValueError, ["kernel_size=(7,)"]),
        (("forward", (1, 3, 5), 3, 2), dict(groups=2), ValueError, ["groups=2"]),
    ],
)
def test_bad_conv_network_arguments(args: tuple, kwargs: dict, error: type, words: list[str]) -> None:
    with pytest.raises(error) as raised:
        tnconv.conv_network(*args, **{"simplify": False, **kwargs})
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))
