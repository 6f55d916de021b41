"""tnconv.curvature against independent float64 references (test_curvature_reference), any N, groups, transposed."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gram_plans import planned
from support.layers import conv_layers, curvature_layers
from support.references import diag_ggn_reference, grouped_patches, kfac_references, kwargs, per_sample_reference, random

import tnconv
from tnconv import curvature

TOL = dict(rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16), st.sampled_from([0, 10**9]))
def test_kfac_factors_equal_patch_references(layer, seed, views_from):
    """``views_from``: the patches as strided views laid out in one copy (0), or by the unfold program (10^9)."""
    x = random(layer.x_shape, seed)
    expand, reduce = kfac_references(grouped_patches(layer, x))
    with planned(views_from=views_from, whole=False):
        got_expand = curvature.kfac_expand_factor(x, layer.kernel_size, **kwargs(layer))
    got_reduce = curvature.kfac_reduce_factor(x, layer.kernel_size, **kwargs(layer))
    assert got_expand.shape == got_reduce.shape == expand.shape  # (G, d, d), also for G == 1
    torch.testing.assert_close(got_expand, expand, **TOL)
    torch.testing.assert_close(got_reduce, reduce, **TOL)


@settings(max_examples=40, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16))
def test_per_sample_weight_grad_equals_vmap_grad(layer, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    got = curvature.per_sample_weight_grad(x, v, layer.kernel_size, **kwargs(layer))
    expected = per_sample_reference(layer, x, v)
    assert got.shape == (x.shape[0], *layer.weight_shape)
    torch.testing.assert_close(got, expected, **TOL)


@settings(max_examples=30, deadline=None)
@given(curvature_layers(), st.integers(1, 3), st.integers(0, 2**16))
def test_diag_ggn_weight_equals_squared_per_sample_grads(layer, columns, seed):
    x = random(layer.x_shape, seed)
    sqrt_ggn = random((columns, *layer.output_shape), seed + 1)
    got = curvature.diag_ggn_weight(x, sqrt_ggn, layer.kernel_size, **kwargs(layer))
    assert got.shape == layer.weight_shape
    torch.testing.assert_close(got, diag_ggn_reference(layer, x, sqrt_ggn), **TOL)


def test_grouped_factors_are_per_group_and_not_averaged():
    """Depthwise: each group's factor is its own channel's, distinct from the others and from their mean."""
    x = random((2, 3, 6, 5), 1)
    x[:, 1] *= 10.0
    factor = curvature.kfac_expand_factor(x, 3, padding=1, groups=3)
    assert factor.shape == (3, 9, 9)
    for g in range(3):
        alone = curvature.kfac_expand_factor(x[:, g : g + 1], 3, padding=1)
        torch.testing.assert_close(factor[g], alone[0], **TOL)
    assert not torch.allclose(factor[0], factor[1])


def test_float32_and_dtype_kept():
    x = random((2, 4, 7), 3)
    expected = curvature.kfac_reduce_factor(x, 3, stride=2, groups=2)
    got = curvature.kfac_reduce_factor(x.float(), 3, stride=2, groups=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float16, 6e-4), (torch.bfloat16, 4e-3)])  # ~ half an ulp
@pytest.mark.parametrize("routine", [curvature.kfac_expand_factor, curvature.kfac_reduce_factor])
def test_half_precision_factors_are_finite_and_close_to_float64(routine, dtype, rtol):
    """Unscaled sums of N*T (~1e5 here) and N*T^2 (~1e8) products overflow float16 and lose digits in bfloat16:
    they are summed in float32, so the result is the exact factor rounded once."""
    x = (8.0 + torch.randn(4, 4, 20, 20, generator=torch.Generator().manual_seed(0))).to(dtype)
    got = routine(x, 3, padding=1, groups=2)
    expected = routine(x.double(), 3, padding=1, groups=2)  # the same rounded input, summed in float64
    assert got.dtype == dtype and got.isfinite().all()
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=0)


@settings(max_examples=8, deadline=None)
@given(st.booleans().flatmap(lambda t: conv_layers(4, t, min_dims=4, max_groups=2)), st.integers(0, 2**16))
def test_four_spatial_dims_against_references(layer, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    expand, reduce = kfac_references(grouped_patches(layer, x))
    torch.testing.assert_close(curvature.kfac_expand_factor(x, layer.kernel_size, **kwargs(layer)), expand, **TOL)
    torch.testing.assert_close(curvature.kfac_reduce_factor(x, layer.kernel_size, **kwargs(layer)), reduce, **TOL)
    got = curvature.per_sample_weight_grad(x, v, layer.kernel_size, **kwargs(layer))
    torch.testing.assert_close(got, per_sample_reference(layer, x, v), **TOL)


def test_four_spatial_dims_reduce_to_three():
    """Any N: a 4-d layer whose last dim is a size-1 pixel under a size-1 kernel is the 3-d layer."""
    x, v = random((2, 4, 4, 3, 5), 0), random((2, 2, 3, 1, 2), 1)
    args = dict(stride=(2, 1, 2), padding=(1, 0, 0), dilation=(1, 2, 1), groups=2)
    args4 = {key: (*value, 1) if isinstance(value, tuple) else value for key, value in args.items()}
    args4["padding"] = (1, 0, 0, 0)
    for routine in (curvature.kfac_expand_factor, curvature.kfac_reduce_factor):
        expected = routine(x, (2, 2, 2), **args)
        torch.testing.assert_close(routine(x.unsqueeze(-1), (2, 2, 2, 1), **args4), expected, **TOL)
    got = curvature.per_sample_weight_grad(x.unsqueeze(-1), v.unsqueeze(-1), (2, 2, 2, 1), **args4)
    torch.testing.assert_close(got.squeeze(-1), curvature.per_sample_weight_grad(x, v, (2, 2, 2), **args), **TOL)


def test_padding_strings_are_accepted():
    x = random((2, 3, 6, 5), 4)
    same = curvature.kfac_expand_factor(x, (2, 3), padding="same")
    torch.testing.assert_close(same, curvature.kfac_expand_factor(x, (2, 3), padding=((0, 1), (1, 1))), **TOL)
    valid = curvature.kfac_reduce_factor(x, (2, 3), padding="valid")
    torch.testing.assert_close(valid, curvature.kfac_reduce_factor(x, (2, 3)), **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_results():
    x, v, s = random((2, 4, 7, 6), 0), random((2, 6, 3, 6), 1), random((3, 2, 6, 3, 6), 2)
    args = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, groups=2)
    for name, operands in (
        ("kfac_expand_factor", (x,)), ("kfac_reduce_factor", (x,)), ("per_sample_weight_grad", (x, v)),
        ("diag_ggn_weight", (x, s)),
    ):
        routine = getattr(curvature, name)
        got = routine(*(t.cuda() for t in operands), **args)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), routine(*operands, **args), **TOL)
    for mode in ("channel", "spatial"):
        draws = [dict(keep=0.5, mode=mode, generator=torch.Generator().manual_seed(1), **args) for _ in range(2)]
        got = curvature.weight_vjp_dropout(x.cuda(), v.cuda(), **draws[0])
        torch.testing.assert_close(got.cpu(), curvature.weight_vjp_dropout(x, v, **draws[1]), **TOL)


# --- the derived networks ------------------------------------------------------------------------
def test_kfac_reduce_network_never_forms_the_unfolded_input():
    shape, kernel = (4, 8, 32, 32), 7
    net = tnconv.conv_network("kfac_reduce", shape, kernel, padding=3, groups=8)
    tnconv.verify(net)
    kinds = {type(entry.kind).__name__ for entry in net.entries}
    assert "PatternSum" in kinds and "IndexPattern" not in kinds
    program = tnconv.compile(net)
    factor = 8 * kernel**2 * kernel**2  # the (G, d, d) output; the unfolded input would be 4*8*49*1024
    assert program.largest_intermediate <= factor
    expand = tnconv.compile(tnconv.conv_network("kfac_expand", shape, kernel, padding=3, groups=8))
    assert program.flops < expand.flops // 10
    sums = tnconv.conv_network("patch_sums", shape, kernel, padding=3, groups=8)
    assert {type(entry.kind).__name__ for entry in sums.entries} == {"Data", "PatternSum"}
    assert tnconv.compile(sums).largest_intermediate <= 4 * 8 * kernel * 32  # X after one (K, I) pattern sum


@pytest.mark.parametrize("op", ["kfac_expand", "kfac_reduce", "per_sample_grad", "diag_ggn"])
@pytest.mark.parametrize("transposed", [False, True])
def test_derived_networks_verify_and_name_their_operands(op, transposed):
    net = tnconv.conv_network(
        op, (2, 4, 5, 6), (2, 3), out_channels=6, stride=2, padding=1, groups=2, transposed=transposed,
        output_padding=(1, 0) if transposed else 0,
    )
    tnconv.verify(net)
    expected = {"kfac_expand": ("X",), "kfac_reduce": ("X",)}.get(op, ("X", "V"))
    assert set(net.operands) == set(expected)
    dims = 2
    if op.startswith("kfac"):
        assert len(net.output) == 1 + 2 * (1 + dims)
    elif op == "per_sample_grad":
        assert net.output[0] == "n" and len(net.output) == 4 + dims
    else:
        assert len(net.output) == 3 + dims


@settings(max_examples=15, deadline=None)
@given(curvature_layers(max_dims=2), st.integers(0, 2**16))
def test_conv_network_kfac_ops_compute_the_routines(layer, seed):
    """The networks users inspect (conv_network, simplified or not) give the routines' factors, unscaled."""
    x = random(layer.x_shape, seed)
    args = kwargs(layer)
    batch, locations = x.shape[0], math.prod(layer.output_shape[2:])
    for op, routine, scale in (
        ("kfac_expand", curvature.kfac_expand_factor, batch * locations),
        ("kfac_reduce", curvature.kfac_reduce_factor, batch * locations**2),
    ):
        expected = routine(x, layer.kernel_size, **args) * scale
        for simplify in (True, False):
            net = tnconv.conv_network(op, x.shape, layer.kernel_size, **args, simplify=simplify)
            tnconv.verify(net)
            got = tnconv.compile(net)(X=x).reshape(expected.shape)
            torch.testing.assert_close(got, expected, **TOL)


@settings(max_examples=10, deadline=None)
@given(curvature_layers(max_dims=2), st.integers(1, 3), st.integers(0, 2**16))
def test_conv_network_diag_ggn_and_per_sample_compute_the_routines(layer, columns, seed):
    """The symbolic-M diag_ggn network and the per_sample_grad network (as users get them) match the routines."""
    x, s = random(layer.x_shape, seed), random((columns, *layer.output_shape), seed + 1)
    args = kwargs(layer)
    c_out = layer.out_channels
    diag = tnconv.conv_network("diag_ggn", x.shape, layer.kernel_size, c_out, **args)
    tnconv.verify(diag)
    expected = curvature.diag_ggn_weight(x, s, layer.kernel_size, **args)
    torch.testing.assert_close(tnconv.compile(diag)(X=x, V=s).reshape(expected.shape), expected, **TOL)
    per_sample = tnconv.conv_network("per_sample_grad", x.shape, layer.kernel_size, c_out, **args)
    expected = curvature.per_sample_weight_grad(x, s[0], layer.kernel_size, **args)
    torch.testing.assert_close(tnconv.compile(per_sample)(X=x, V=s[0]).reshape(expected.shape), expected, **TOL)


# --- bad input -------------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    x = random((2, 4, 6, 6), 0)
    with pytest.raises(ValueError, match="groups"):
        curvature.kfac_expand_factor(x, 3, groups=3)
    with pytest.raises(ValueError, match="stride"):
        curvature.kfac_reduce_factor(x, 3, stride=0)
    with pytest.raises(TypeError, match="x"):
        curvature.kfac_expand_factor(x.numpy(), 3)
    with pytest.raises(ValueError, match="x"):
        curvature.kfac_expand_factor(x[0, 0], 3)
    with pytest.raises(ValueError, match="x"):
        curvature.kfac_expand_factor(x[:0], 3)
    with pytest.raises(ValueError, match="kernel_size"):
        curvature.kfac_expand_factor(x, 9)
    with pytest.raises(ValueError, match="output_padding"):
        curvature.kfac_expand_factor(x, 3, output_padding=1)
    with pytest.raises(ValueError, match="grad_output"):
        curvature.per_sample_weight_grad(x, random((2, 5, 5, 5), 1), 3)
    with pytest.raises(ValueError, match="grad_output"):
        curvature.per_sample_weight_grad(x, random((2, 5, 4), 1), 3)
    with pytest.raises(ValueError, match="sqrt_ggn"):
        curvature.diag_ggn_weight(x, random((2, 5, 4, 4), 1), 3)
    with pytest.raises(ValueError, match="sqrt_ggn"):
        curvature.diag_ggn_weight(x, random((3, 2, 5, 3, 4), 1), 3)
    with pytest.raises(ValueError, match="grad_output must have the dtype"):
        curvature.per_sample_weight_grad(x, random((2, 5, 4, 4), 1).float(), 3)
    with pytest.raises(ValueError, match="sqrt_ggn must have the dtype"):
        curvature.diag_ggn_weight(x, random((3, 2, 5, 4, 4), 1).float(), 3)


def test_scalings_are_those_of_the_api():
    """A constant input: every patch entry is 1 without padding, so A = 1 (expand) and 1 (reduce)."""
    x = torch.ones(3, 2, 5, 4, dtype=torch.float64)
    d = 2 * 2 * 3
    for routine in (curvature.kfac_expand_factor, curvature.kfac_reduce_factor):
        torch.testing.assert_close(routine(x, (2, 3)), torch.ones(1, d, d, dtype=torch.float64), **TOL)


@settings(max_examples=6, deadline=None)
@given(curvature_layers(max_dims=2), st.integers(0, 2**16), st.sampled_from(["expand", "reduce"]))
def test_input_factors_are_differentiable(layer, seed, approx):
    """An input that requires a gradient takes a differentiable path: the same value, and gradcheck passes."""
    function = curvature.kfac_expand_factor if approx == "expand" else curvature.kfac_reduce_factor
    x = random(layer.x_shape, seed)
    expected = function(x, layer.kernel_size, **kwargs(layer))
    leaf = x.clone().requires_grad_()
    got = function(leaf, layer.kernel_size, **kwargs(layer))
    assert got.requires_grad
    torch.testing.assert_close(got, expected, **TOL)
    assert torch.autograd.gradcheck(lambda value: function(value, layer.kernel_size, **kwargs(layer)), (leaf,))
    with torch.no_grad():
        assert not function(leaf, layer.kernel_size, **kwargs(layer)).requires_grad
