"""tnconv.functional against PyTorch: values (float64, rtol 1e-10), dtypes, autograd, torch.compile, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers
from support.references import reference_conv, reference_conv_transpose, reference_unfold

import tnconv
import tnconv.functional as TF

TOL = dict(rtol=1e-10, atol=1e-10)
MODES = ("zeros", "reflect", "replicate", "circular")
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TORCH_GRAD_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
TORCH_GRAD_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
TORCH_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


def torch_accepts(layer: ConvLayer) -> bool:
    """Whether PyTorch's functional takes this padding as it is (no per-side pairs; strings only for conv)."""
    if isinstance(layer.padding, str):
        return not layer.transposed
    return not isinstance(layer.padding, tuple) or all(isinstance(p, int) for p in layer.padding)


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=MODES), st.integers(0, 2**16), st.booleans())
def test_conv_matches_torch(layer: ConvLayer, seed: int, with_bias: bool) -> None:
    x, w = layer.tensors(seed=seed)
    bias = randn((layer.out_channels,), seed + 1) if with_bias else None
    ours = TF.conv(x, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode)
    if layer.padding_mode != "zeros":
        module = TORCH_MODULE[layer.dims](
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.groups, with_bias, layer.padding_mode, dtype=torch.float64,
        )
        with torch.no_grad():
            module.weight.copy_(w)
            if bias is not None:
                module.bias.copy_(bias)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notice about padding='same' with even kernels
                expected = module(x)
    elif torch_accepts(layer):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = TORCH_CONV[layer.dims](x, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        expected = reference_conv(x, w, layer.strides, layer.pairs, layer.dilations, layer.groups)
        expected = expected if bias is None else expected + bias.reshape(-1, *(1,) * layer.dims)
    assert ours.dtype == x.dtype
    torch.testing.assert_close(ours, expected, **TOL)


@settings(max_examples=50, deadline=None)
@given(conv_layers(max_dims=3, transposed=True), st.integers(0, 2**16), st.booleans())
def test_conv_transpose_matches_torch(layer: ConvLayer, seed: int, with_bias: bool) -> None:
    x, w = layer.tensors(seed=seed)
    bias = randn((layer.out_channels,), seed + 1) if with_bias else None
    ours = TF.conv_transpose(x, w, bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    if torch_accepts(layer):
        expected = TORCH_CONV_T[layer.dims](
            x, w, bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
        )
    else:
        expected = reference_conv_transpose(
            x, w, layer.strides, layer.pairs, layer.output_paddings, layer.dilations, layer.groups
        )
        expected = expected if bias is None else expected + bias.reshape(-1, *(1,) * layer.dims)
    torch.testing.assert_close(ours, expected, **TOL)


@settings(max_examples=50, deadline=None)
@given(conv_layers(max_dims=3), st.integers(0, 2**16))
def test_vjps_match_torch_nn_grad(layer: ConvLayer, seed: int) -> None:
    x, w = layer.tensors(seed=seed)
    v = randn(layer.output_shape, seed + 1)
    grad_input = TF.conv_input_vjp(v, w, x.shape, layer.stride, layer.padding, layer.dilation, layer.groups)
    grad_weight = TF.conv_weight_vjp(x, v, w.shape[2:], layer.stride, layer.padding, layer.dilation, layer.groups)
    if torch_accepts(layer) and not isinstance(layer.padding, str):
        args = (layer.stride, layer.padding, layer.dilation, layer.groups)
        expected_input = TORCH_GRAD_INPUT[layer.dims](x.shape, w, v, *args)
        expected_weight = TORCH_GRAD_WEIGHT[layer.dims](x, w.shape, v, *args)
    else:
        x.requires_grad_(True)
        w.requires_grad_(True)
        y = reference_conv(x, w, layer.strides, layer.pairs, layer.dilations, layer.groups)
        expected_input, expected_weight = torch.autograd.grad(y, (x, w), v)
    torch.testing.assert_close(grad_input, expected_input, **TOL)
    torch.testing.assert_close(grad_weight, expected_weight, **TOL)
    # the spatial size alone and the full weight shape work too
    spatial = TF.conv_input_vjp(v, w, x.shape[2:], layer.stride, layer.padding, layer.dilation, layer.groups)
    torch.testing.assert_close(spatial, grad_input, rtol=0, atol=0)
    full = TF.conv_weight_vjp(x, v, w.shape, layer.stride, layer.padding, layer.dilation, layer.groups)
    torch.testing.assert_close(full, grad_weight, rtol=0, atol=0)


@settings(max_examples=50, deadline=None)
@given(conv_layers(max_dims=3, max_groups=1), st.integers(0, 2**16))
def test_unfold_and_fold_match_torch(layer: ConvLayer, seed: int) -> None:
    x, _ = layer.tensors(seed=seed)
    columns = TF.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    if layer.dims == 2 and torch_accepts(layer) and not isinstance(layer.padding, str):
        expected = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    else:
        expected = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    torch.testing.assert_close(columns, expected, **TOL)
    u = randn(tuple(columns.shape), seed + 1)
    folded = TF.fold(u, x.shape[2:], layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    if layer.dims == 2 and torch_accepts(layer) and not isinstance(layer.padding, str):
        expected = F.fold(u, x.shape[2:], layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    else:
        probe = x.clone().requires_grad_(True)
        columns = reference_unfold(probe, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
        (expected,) = torch.autograd.grad(columns, probe, u)
    torch.testing.assert_close(folded, expected, **TOL)


@settings(max_examples=40, deadline=None)
@given(conv_layers(max_dims=3, transposed=True, max_groups=1), st.integers(0, 2**16))
def test_unfold_transpose_contracts_to_conv_transpose(layer: ConvLayer, seed: int) -> None:
    x, w = layer.tensors(seed=seed)
    columns = TF.unfold_transpose(x, layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation)
    result = (w.transpose(0, 1).flatten(1) @ columns).reshape(layer.output_shape)
    expected = TF.conv_transpose(x, w, None, layer.stride, layer.padding, layer.output_padding, 1, layer.dilation)
    torch.testing.assert_close(result, expected, **TOL)


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_4d_routines_match_lower_dim_references(data: st.DataObject) -> None:
    layer = data.draw(conv_layers(min_dims=4, max_dims=4, max_groups=2, max_batch=1))
    x, w = layer.tensors(seed=data.draw(st.integers(0, 99)))
    ours = TF.conv(x, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    torch.testing.assert_close(ours, reference_conv(x, w, layer.strides, layer.pairs, layer.dilations, layer.groups), **TOL)
    columns = TF.unfold(x, w.shape[2:], layer.dilation, layer.padding, layer.stride)
    expected = reference_unfold(x, layer.kernel_size, layer.strides, layer.pairs, layer.dilations)
    torch.testing.assert_close(columns, expected, **TOL)
    transposed = data.draw(conv_layers(min_dims=4, max_dims=4, transposed=True, max_groups=2, max_batch=1))
    x, w = transposed.tensors(seed=1)
    ours = TF.conv_transpose(x, w, None, transposed.stride, transposed.padding, transposed.output_padding,
                             transposed.groups, transposed.dilation)
    expected = reference_conv_transpose(x, w, transposed.strides, transposed.pairs, transposed.output_paddings,
                                        transposed.dilations, transposed.groups)
    torch.testing.assert_close(ours, expected, **TOL)


def test_fold_of_a_single_block() -> None:
    """L = 1 (kernel as large as the image): fold places the one block."""
    u = randn((2, 6, 1), 0)
    torch.testing.assert_close(TF.fold(u, (3,), 3), u.reshape(2, 2, 3), **TOL)
    torch.testing.assert_close(TF.fold(u, (2, 3), (2, 3)), F.fold(u, (2, 3), (2, 3)), **TOL)


def test_conv_transpose_whose_left_padding_crops_everything() -> None:
    """Output pixels that no input pixel reaches are zero (here the left padding crops the whole full output)."""
    x, w = randn((1, 1, 1), 0), randn((1, 1, 1), 1)
    ours = TF.conv_transpose(x, w, None, 3, ((2, 0),), 2)
    expected = reference_conv_transpose(x, w, (3,), ((2, 0),), (2,), (1,), 1)
    assert expected.shape == (1, 1, 1)
    torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes_are_kept(dtype: torch.dtype) -> None:
    x, w, b = randn((2, 4, 7, 6), 0, dtype), randn((6, 2, 3, 2), 1, dtype), randn((6,), 2, dtype)
    ours = TF.conv(x, w, b, stride=2, padding=1, groups=2)
    assert ours.dtype == dtype
    tolerance = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 5e-2}[dtype]
    expected = F.conv2d(x.double(), w.double(), b.double(), 2, 1, 1, 2)
    torch.testing.assert_close(ours.double(), expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())
    assert TF.conv_transpose(x, randn((4, 3, 3, 2), 3, dtype), None, 2, 1, 1).dtype == dtype
    assert TF.unfold(x, 3).dtype == dtype
    assert TF.conv_weight_vjp(x, ours, (3, 2), 2, 1, 1, 2).dtype == dtype


def test_unbatched_inputs() -> None:
    x, w = randn((4, 7, 6), 0), randn((6, 2, 3, 2), 1)
    torch.testing.assert_close(TF.conv(x, w, groups=2), F.conv2d(x, w, groups=2), **TOL)
    wt = randn((4, 3, 3, 2), 2)
    torch.testing.assert_close(TF.conv_transpose(x, wt, stride=2), F.conv_transpose2d(x, wt, stride=2), **TOL)
    torch.testing.assert_close(TF.unfold(x[None], (3, 2))[0], F.unfold(x, (3, 2)), **TOL)  # 3-d x is 1-d batched
    u = F.unfold(x, (3, 2))
    torch.testing.assert_close(TF.fold(u, (7, 6), (3, 2)), F.fold(u, (7, 6), (3, 2)), **TOL)


def test_repeated_calls_are_validated_by_their_typed_arguments() -> None:
    """A configuration seen before skips validation, but ``True`` is not taken for a cached ``1``, nor
    a list (not cached) for anything; an error is never cached."""
    x, w = torch.randn(2, 3, 7, 7, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, w, stride=1, padding=1)
    for _ in range(2):
        torch.testing.assert_close(tnconv.F.conv(x, w, stride=1, padding=1), expected)
        torch.testing.assert_close(tnconv.F.conv(x, w, stride=[1, 1], padding=(1, 1)), expected)
        with pytest.raises(TypeError, match="stride"):
            tnconv.F.conv(x, w, stride=True, padding=1)
        with pytest.raises(ValueError, match="padding"):
            tnconv.F.conv(x, w, stride=1, padding=-1)


def test_public_aliases() -> None:
    assert tnconv.F is tnconv.functional is TF


def test_double_backward() -> None:
    x = randn((1, 2, 4, 3), 0).requires_grad_(True)
    w = randn((4, 1, 3, 2), 1).requires_grad_(True)
    b = randn((4,), 2).requires_grad_(True)
    conv = lambda x, w, b: TF.conv(x, w, b, stride=(2, 1), padding=((1, 0), 1), groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
    wt = randn((2, 3, 2, 3), 3).requires_grad_(True)
    transpose = lambda x, w: TF.conv_transpose(x, w, None, 2, 1, 1, 1, 1)  # noqa: E731
    assert torch.autograd.gradgradcheck(transpose, (x, wt), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda x: TF.unfold(x, 2, padding=1, stride=2), (x,), fast_mode=True)
    v = randn((1, 4, 2, 4), 4).requires_grad_(True)
    input_vjp = lambda v, w: TF.conv_input_vjp(v, w, (4, 3), (2, 1), ((1, 0), 1), 1, 2)  # noqa: E731
    assert torch.autograd.gradgradcheck(input_vjp, (v, w), fast_mode=True)
    weight_vjp = lambda x, v: TF.conv_weight_vjp(x, v, (3, 2), (2, 1), ((1, 0), 1), 1, 2)  # noqa: E731
    assert torch.autograd.gradgradcheck(weight_vjp, (x, v), fast_mode=True)


def test_torch_compile_fullgraph() -> None:
    torch._dynamo.reset()
    layer = lambda x, w, b: TF.conv(x, w, b, stride=2, padding=1, groups=2)  # noqa: E731
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    w, b = randn((6, 2, 3, 2), 1), randn((6,), 2)
    for batch in (2, 3, 4):  # a new batch size makes dynamo trace with symbolic sizes
        x = randn((batch, 4, 7, 6), batch)
        torch.testing.assert_close(compiled(x, w, b), F.conv2d(x, w, b, 2, 1, 1, 2), **TOL)
    x = randn((3, 4, 7, 6), 0).requires_grad_(True)
    (ours,) = torch.autograd.grad(compiled(x, w, b).square().sum(), x)
    (expected,) = torch.autograd.grad(F.conv2d(x, w, b, 2, 1, 1, 2).square().sum(), x)
    torch.testing.assert_close(ours, expected, **TOL)
    transposed = torch.compile(lambda x, w: TF.conv_transpose(x, w, None, 2, 1, 1), fullgraph=True, backend="eager")
    wt = randn((4, 3, 3, 2), 3)
    torch.testing.assert_close(transposed(x.detach(), wt), F.conv_transpose2d(x.detach(), wt, None, 2, 1, 1), **TOL)


def test_torch_compile_fullgraph_of_two_routines_set_up_in_one_trace() -> None:
    torch._dynamo.reset()
    w1, w2 = randn((4, 3, 3, 3), 4), randn((4, 2, 2, 2), 5)
    chain = lambda x: TF.conv_transpose(TF.conv(x, w1, padding=1, dilation=3), w2, stride=3)  # noqa: E731
    x = randn((2, 3, 8, 9), 6)
    expected = F.conv_transpose2d(F.conv2d(x, w1, padding=1, dilation=3), w2, stride=3)
    torch.testing.assert_close(torch.compile(chain, fullgraph=True, backend="eager")(x), expected, **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda() -> None:
    x, w, b = (t.cuda() for t in (randn((2, 4, 7, 6), 0), randn((6, 2, 3, 2), 1), randn((6,), 2)))
    ours = TF.conv(x, w, b, stride=2, padding=1, groups=2)
    assert ours.device == x.device
    torch.testing.assert_close(ours, F.conv2d(x, w, b, 2, 1, 1, 2), **TOL)
    wt = randn((4, 3, 3, 2), 3).cuda()
    torch.testing.assert_close(TF.conv_transpose(x, wt, None, 2, 1, 1), F.conv_transpose2d(x, wt, None, 2, 1, 1), **TOL)
    torch.testing.assert_close(TF.unfold(x, 3, padding=1), F.unfold(x, 3, padding=1), **TOL)


X, W = randn((2, 4, 7, 6), 0), randn((6, 2, 3, 2), 1)
V = randn((2, 6, 5, 5), 2)
BAD = [
    (lambda: TF.conv(X.numpy(), W), TypeError, ["x", "ndarray"]),
    (lambda: TF.conv(X, W.long()), TypeError, ["weight", "torch.int64"]),
    (lambda: TF.conv(X, W.float()), ValueError, ["weight", "torch.float32", "torch.float64"]),
    (lambda: TF.conv(X, W.to("meta")), ValueError, ["weight", "meta"]),
    (lambda: TF.conv(X[0, 0], W), ValueError, ["x", "(7, 6)"]),
    (lambda: TF.conv(X, W[0]), ValueError, ["x", "(2, 4, 7, 6)"]),
    (lambda: TF.conv(X, W), ValueError, ["weight.shape[1]=2", "groups=1", "4"]),
    (lambda: TF.conv(X, W[:5], groups=2), ValueError, ["out_channels=5", "groups=2"]),
    (lambda: TF.conv(X, W, groups=2, stride=0), ValueError, ["stride", "0"]),
    (lambda: TF.conv(X, W, groups=2, stride=2, padding="same"), ValueError, ["same", "stride"]),
    (lambda: TF.conv(X, W, groups=2, padding=(1, 2, 3)), ValueError, ["padding", "(1, 2, 3)"]),
    (lambda: TF.conv(X, W, groups=2, dilation=4), ValueError, ["kernel_size=(3, 2)", "dilation=(4, 4)"]),
    (lambda: TF.conv(X, W, groups=2.0), TypeError, ["groups", "2.0"]),
    (lambda: TF.conv(X, W, groups=2, stride=True), TypeError, ["stride", "True"]),
    (lambda: TF.conv(X, W, torch.zeros(5, dtype=torch.float64), groups=2), ValueError, ["bias", "(5,)"]),
    (lambda: TF.conv(X, W, groups=2, padding_mode="mirror"), ValueError, ["padding_mode", "'mirror'"]),
    (lambda: TF.conv(X, W, groups=2, padding=7, padding_mode="reflect"), ValueError, ["reflect", "padding=7"]),
    (lambda: TF.conv_transpose(X, W), ValueError, ["weight.shape[0]=6", "x.shape[1]=4"]),
    (lambda: TF.conv_transpose(X, W[:4], output_padding=1), ValueError, ["output_padding", "1"]),
    (lambda: TF.conv_transpose(X, W[:4], padding=5), ValueError, ["output size", "padding=5"]),
    (lambda: TF.unfold(X, 8), ValueError, ["kernel_size=(8, 8)", "padded input"]),
    (lambda: TF.unfold(X, (3, 3, 3, 3, 3)), ValueError, ["kernel_size", "(3, 3, 3, 3, 3)"]),
    (lambda: TF.fold(randn((2, 10, 30), 0), (7, 6), (3, 2)), ValueError, ["x.shape[1]=10", "prod(kernel_size)=6"]),
    (lambda: TF.fold(randn((2, 12, 24), 0), (7, 6), (3, 2)), ValueError, ["x.shape[2]=24", "25"]),
    (lambda: TF.fold(randn((2, 12, 30), 0), (7, 6, 1), (3, 2)), ValueError, ["kernel_size", "(3, 2)"]),
    (lambda: TF.conv_input_vjp(V, W, (2, 4, 8, 6), groups=2), ValueError, ["grad_output", "(2, 6, 5, 5)", "(2, 6, 6, 5)"]),
    (lambda: TF.conv_input_vjp(V, W, (3, 4, 7, 6), groups=2), ValueError, ["input_size", "(3, 4, 7, 6)"]),
    (lambda: TF.conv_input_vjp(V, W, (7,), groups=2), ValueError, ["input_size", "(7,)"]),
    (lambda: TF.conv_input_vjp(V, W, 7, groups=2), TypeError, ["input_size", "7"]),
    (lambda: TF.conv_weight_vjp(X, V[:, :, :4], (3, 2), groups=2), ValueError, ["grad_output", "(2, 6, 4, 5)"]),
    (lambda: TF.conv_weight_vjp(X, V, (6, 3, 3, 2), groups=2), ValueError, ["kernel_size", "(6, 3, 3, 2)"]),
    (lambda: TF.conv_weight_vjp(X, V[0], (3, 2), groups=2), ValueError, ["grad_output", "(6, 5, 5)"]),
]


@pytest.mark.parametrize("call, error, words", BAD)
def test_bad_input_names_argument_and_value(call, error: type, words: list[str]) -> None:
    with pytest.raises(error) as raised:
        call()
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))
