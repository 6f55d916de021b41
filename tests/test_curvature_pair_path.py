"""KFAC-expand's input factor through pattern-pair Grams in the model path (``accumulate_input_factor``).

The pair path is forced on and off (the planner's ``pair_gram_pays`` patched, ``support.gram_plans.paying``;
its own decisions are tested in ``tests/test_pair_choice.py``): both give the unfold reference in float64, blended in place into a
running factor with ``beta``/``alpha``, exactly symmetric, over strides, paddings, groups, dilations,
1-3 spatial dims and transposed layers; forced on, the pair path runs wherever the layer's network has
a pair lowering (and then no patches are formed). ``KFAC.update`` (expand, type-2 and empirical) gives the
same factors either way; half inputs accumulate in float32.
"""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gram_plans import paying, planned
from support.layers import ConvLayer, conv_layer, curvature_layers
from support.references import grouped_patches, kfac_references, kwargs, random

from tnconv.conv.checks import layer as checked_layer
from tnconv.curvature import KFAC
from tnconv.curvature import patches as patches_module
from tnconv.curvature.patches import accumulate_input_factor
from tnconv.lower.pair_gram import match
from tnconv.routines.derivation import routine_network
from tnconv.routines.table import TABLE

TOL = {"rtol": 1e-10, "atol": 1e-12}
BLENDS = ((1.0, 0.0), (0.5, 0.5), (2.0, 1.0), (0.3, 0.7))  # (alpha, beta)


def running_factor(groups: int, d: int, seed: int) -> torch.Tensor:
    """A symmetric ``(G, d, d)`` factor to blend into."""
    half = random((groups, d, d), seed)
    return half + half.mT


@settings(max_examples=50, deadline=None)
@given(curvature_layers(max_dims=3), st.sampled_from(BLENDS), st.integers(0, 2**31 - 1))
def test_expand_factor_with_and_without_pair_grams_equals_the_unfold_reference(
    layer: ConvLayer, blend: tuple[float, float], seed: int
) -> None:
    x = random(layer.x_shape, seed)
    hyper = checked_layer(x, dict(kernel_size=layer.kernel_size, **kwargs(layer)))
    expected = kfac_references(grouped_patches(layer, x))[0]
    alpha, beta = blend
    start = running_factor(*expected.shape[:2], seed + 1)
    paired = match(routine_network(TABLE["kfac_expand"], hyper)) is not None  # no pair lowering: 1x1, ...
    for pays in (True, False):
        out = start.clone() if beta else torch.full_like(start, math.nan)  # not read when beta == 0
        spy = mock.Mock(wraps=patches_module.accumulate_patch_gram)
        with paying(pays), planned(whole=None if pays and paired else False):
            with mock.patch.object(patches_module, "accumulate_patch_gram", spy):
                got = accumulate_input_factor(x, hyper, False, out, alpha, beta)
        assert got is out
        assert spy.called != (pays and paired)  # the pair path forms no patches
        torch.testing.assert_close(got, beta * start + alpha * expected if beta else alpha * expected, **TOL)
        assert torch.equal(got, got.mT)


@pytest.mark.parametrize("fisher", ["type-2", "empirical"])
def test_kfac_update_gives_the_same_factors_with_pair_grams(fisher: str) -> None:
    """Three updates (each blended into the factors so far) of a model of stride-1 convs (one with a bias, one
    grouped and dilated), a strided conv and a Linear: the factors with and without the pair path."""
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(),
            torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False), torch.nn.Tanh(),
            torch.nn.Conv2d(4, 3, 2, stride=2), torch.nn.Flatten(), torch.nn.Linear(3 * 9, 3),
        ).double()  # fmt: skip

    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 2, 7, 7, dtype=torch.float64, generator=generator),
                torch.randint(0, 3, (n,), generator=generator)) for n in (4, 3)]  # fmt: skip
    factors = {}
    for pays in (True, False):
        kfac = KFAC(model(), torch.nn.CrossEntropyLoss(), approx="expand", fisher=fisher)
        with paying(pays) as spy:
            for x, y in (*batches, batches[0]):
                kfac.update(x, y)
        assert spy.call_count == 2 * 2  # the two stride-1 convs, once per batch size (the plan is cached)
        factors[pays] = kfac.factors
    for name, (a, b) in factors[True].items():
        expected_a, expected_b = factors[False][name]
        torch.testing.assert_close(b, expected_b, **TOL)
        if a is not None:  # None: a separate bias
            torch.testing.assert_close(a, expected_a, **TOL)
            assert torch.equal(a, a.mT)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32_through_pair_grams(dtype: torch.dtype) -> None:
    layer = conv_layer((3, 4, 6, 5), 2, (3, 2), padding=((1, 1), (0, 1)), groups=2)
    x = random(layer.x_shape, 0).to(dtype)
    hyper = checked_layer(x, dict(kernel_size=layer.kernel_size, **kwargs(layer)))
    expected = kfac_references(grouped_patches(layer, x.double()))[0]
    start = running_factor(2, 12, 1).float()
    spy = mock.Mock(wraps=patches_module.accumulate_patch_gram)
    with paying(True), mock.patch.object(patches_module, "accumulate_patch_gram", spy):
        got = accumulate_input_factor(x, hyper, False, start.clone(), 0.5, 0.5)
    assert not spy.called
    assert got.dtype == torch.float32 and torch.equal(got, got.mT)
    torch.testing.assert_close(got.double(), 0.5 * start.double() + 0.5 * expected, rtol=1e-5, atol=1e-5)
