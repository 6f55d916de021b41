"""Per-sample weight-gradient norms of one layer and their squares summed over samples, against torch.func in
float64: any N <= 3, groups, strides, dilation, padding forms, transposed layers; both evaluations (the per-sample
gradients squared, the location-pair network) whichever the cost formulas pick; Linear layers; chunks of samples."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gram_plans import planned
from support.layers import curvature_layers
from support.references import kwargs, per_sample_reference, random

import tnconv
from tnconv import curvature
from tnconv.conv.hyper import conv_hyper
from tnconv.curvature import norms, patches
from tnconv.curvature.factors import Geometry
from tnconv.routines import TABLE, routine_network, run_routine
from tnconv.routines.run import setup

TOL = dict(rtol=1e-10, atol=1e-12)
NORM = TABLE["per_sample_grad_norm"]


def hyper_of(layer, out_channels):
    return conv_hyper(layer.x_shape, layer.kernel_size, out_channels, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=layer.groups, output_padding=layer.output_padding,
                      transposed=layer.transposed)


@settings(max_examples=50, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16))
def test_norms_and_summed_squares_equal_vmap_grad(layer, seed):
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    expected = per_sample_reference(layer, x, v)
    got = curvature.per_sample_weight_grad_norm(x, v, layer.kernel_size, **kwargs(layer))
    assert got.shape == (x.shape[0],) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected.flatten(1).square().sum(1), **TOL)
    squares = curvature.sum_weight_grad_squared(x, v, layer.kernel_size, **kwargs(layer))
    torch.testing.assert_close(squares, expected.square().sum(0), **TOL)


@settings(max_examples=30, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16))
def test_both_evaluations_equal_vmap_grad(layer, seed):
    """The whole network (two copies contracted, by the optimizer's path) and the shortcut (per-sample gradients
    squared), each, whichever of them the cost formulas pick for the layer."""
    x, v = random(layer.x_shape, seed), random(layer.output_shape, seed + 1)
    expected = per_sample_reference(layer, x, v).flatten(1).square().sum(1)
    hyper = hyper_of(layer, v.shape[1])
    whole = tnconv.compile(routine_network(NORM, hyper))(X=x, V=v)
    always = replace(NORM, shortcut=replace(NORM.shortcut, costs=None))
    torch.testing.assert_close(whole, expected, **TOL)
    torch.testing.assert_close(run_routine(always, hyper, {"X": x, "V": v}), expected, **TOL)


@pytest.mark.parametrize("size, channels, shortcut", [(32, 64, True), (16, 128, True), (8, 256, False), (4, 512, False)])
def test_the_cost_formulas_pair_locations_on_deep_layers(size, channels, shortcut):
    """ResNet-18's 3x3 layers: the per-sample gradients where there are many locations, pairs of locations where
    there are few (T^2 (d + c) against T d c); the network then contracts the two copies' Grams over locations."""
    hyper = conv_hyper((8, channels, size, size), 3, channels, padding=1)
    chosen = setup(NORM, hyper)
    assert (chosen.combine is not None) == shortcut
    if not shortcut:
        steps = [row.equation for row in tnconv.compile(chosen.network).path_info]
        assert any(step.endswith("-> n o1 o2 o1_2 o2_2") for step in steps), steps


def test_chunks_of_samples_give_the_whole_batch():
    layer_hyper = conv_hyper((5, 4, 6, 6), 3, 6, padding=1, groups=2)
    x, v = random((5, 4, 6, 6), 0), random((5, 6, 6, 6), 1)
    whole = norms.conv_norms(x, v, layer_hyper)
    with planned(chunk=200):  # the planner's chunks of one or two samples
        assert len(patches.chunk_layers(layer_hyper, 144)) > 2
        torch.testing.assert_close(norms.conv_norms(x, v, layer_hyper), whole, **TOL)


@pytest.mark.parametrize("size, channels, elements", [
    (4, 512, 512 * 9 * 16),  # pairs: the patches (the 2.4M-float per-sample gradient is never formed)
    (8, 256, 256 * 9 * 64),  # pairs: the patches (more than the 64^2 location pairs)
    (32, 64, 64 * 9 * 1024),  # materialised: the patches (more than the gradient; the 1024^2 pairs are not formed)
])
def test_chunks_are_sized_by_the_form_taken(size, channels, elements):
    """ResNet-18's 3x3 layers at batch 64: the chunks of samples hold the intermediates of the form the cost
    formulas pick, not of both forms (layer4 in chunks of two samples for a gradient it never forms)."""
    hyper = conv_hyper((64, channels, size, size), 3, channels, padding=1)
    assert norms.norm_elements(hyper) == elements
    x, v = random((64, channels, size, size), 0).float(), random((64, channels, size, size), 1).float()
    calls = []

    def counted(routine, part, operands):
        calls.append(operands["X"].shape[0])
        return operands["X"].new_zeros(operands["X"].shape[0])

    with mock.patch.object(norms, "run_routine", counted):
        assert norms.conv_norms(x, v, hyper).shape == (64,)
    assert sum(calls) == 64 and len(calls) == len(patches.chunk_layers(hyper, elements))
    assert len(calls) <= 10


@pytest.mark.parametrize("shape", [(4, 5), (4, 3, 5), (4, 2, 3, 5)], ids=["no-locations", "3-locations", "6-locations"])
@pytest.mark.parametrize("materialise", [True, False])
def test_linear_norms_both_ways(shape, materialise):
    x, v = random(shape, 0), random((*shape[:-1], 7), 1)
    grads = torch.einsum("n...o,n...i->noi", v, x)
    layer = Geometry("linear", 1, 7)
    with mock.patch.object(norms, "linear_materialises", lambda *sizes: materialise):
        torch.testing.assert_close(norms.weight_norms(x, v, layer), grads.flatten(1).square().sum(1), **TOL)
    bias = v.reshape(shape[0], -1, 7).sum(1)
    torch.testing.assert_close(norms.bias_norms(v, layer), bias.square().sum(1), **TOL)


def test_linear_layers_pair_locations_where_few():
    assert not norms.linear_materialises(32, 1, 512, 10)  # no locations: ||v||^2 ||u||^2
    assert norms.linear_materialises(32, 196, 64, 64)  # many locations, narrow: the per-sample gradients


def test_bad_arguments_are_named():
    x = random((2, 3, 5, 5), 0)
    with pytest.raises(ValueError, match=r"grad_output must end in the layer output shape \(2, 4, 3, 3\)"):
        curvature.per_sample_weight_grad_norm(x, random((2, 4, 4, 4), 1), 3)
    with pytest.raises(ValueError, match="x must hold at least one sample"):
        curvature.sum_weight_grad_squared(random((0, 3, 5, 5), 0), random((0, 4, 3, 3), 1), 3)
