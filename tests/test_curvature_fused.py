"""``KFAC.update`` accumulates in place: the running factors are blended with each batch's products where they
lie, with no temporary of a factor's size, float32 sums for half-precision models, and the values of the
unfused formulas (running mean, summed ``B``, exponential moving average) in float64.

Also the per-layer pieces of it: KFAC-expand's patches taken in chunks of samples, the bias row and
column of a joined ``A``; and the two ways of the GGN diagonal built from the same patches.
"""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import curvature_layers
from support.gram_plans import planned
from support.references import kwargs, random

from tnconv import curvature
from tnconv.curvature import KFAC, diag_ggn, sqrt_ggn
from tnconv.curvature import factors as factors_module
from tnconv.curvature import patches as patches_module
from tnconv.conv.checks import layer as checked_layer
from tnconv.curvature.factors import Geometry, accumulate_bias, matrix_weight
from tnconv.curvature.hooks import find_layers, forward, pull_back
from tnconv.lower.patch_gram import NetworkGram
from tnconv.programs.program import default_target

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 3


def small_model(dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A conv with a bias, a depthwise conv, a Linear on ``(N, T, d)``, and a Linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 4, 3, groups=4, bias=False),
        torch.nn.Flatten(2), torch.nn.Linear(16, 5), torch.nn.Tanh(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 5, CLASSES),
    ).to(dtype)  # fmt: skip


def batch(size: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 2, 6, 6, generator=generator, dtype=dtype), torch.randint(0, CLASSES, (size,),
                                                                                      generator=generator)


def alone(settings: dict, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
    """The factors of one batch alone (a fresh KFAC's first update)."""
    kfac = KFAC(small_model(), **settings)
    kfac.update(x, y)
    return kfac.factors


@pytest.mark.parametrize("separate_bias", [True, False])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("ema_decay, reduction", [(None, "mean"), (None, "sum"), (0.6, "mean")])
def test_in_place_updates_equal_the_unfused_formulas(ema_decay, reduction, approx, separate_bias):
    """Three batches of sizes 4, 2, 3: running means weighted by size (``B`` summed for a summed loss) or the
    EMA, from each batch's factors alone; the running tensors stay the same objects, exactly symmetric."""
    loss = torch.nn.CrossEntropyLoss(reduction=reduction)
    settings = dict(loss_function=loss, approx=approx, separate_bias=separate_bias, ema_decay=ema_decay)
    data = [batch(4, 1), batch(2, 2), batch(3, 3)]
    kfac = KFAC(small_model(), **settings)
    kfac.update(*data[0])
    first = {name: [t for t in pair if t is not None] for name, pair in kfac.factors.items()}
    for x, y in data[1:]:
        kfac.update(x, y)
    expected = alone(settings, *data[0])
    seen = 4
    for x, y in data[1:]:
        new = alone(settings, x, y)
        for name, (a, b) in expected.items():
            new_a, new_b = new[name]
            if ema_decay is not None:
                weights_a = weights_b = (ema_decay, 1 - ema_decay)
            else:
                weight = len(y) / (seen + len(y))
                weights_a = (1 - weight, weight)
                weights_b = (1.0, 1.0) if reduction == "sum" else weights_a
            blended_a = None if a is None else weights_a[0] * a + weights_a[1] * new_a
            expected[name] = (blended_a, weights_b[0] * b + weights_b[1] * new_b)
        seen += len(y)
    for name, (a, b) in kfac.factors.items():
        assert all(got is held for got, held in zip((t for t in (a, b) if t is not None), first[name]))
        if a is not None:
            torch.testing.assert_close(a, expected[name][0], **TOL)
            assert torch.equal(a, a.mT)
        torch.testing.assert_close(b, expected[name][1], **TOL)
        assert torch.equal(b, b.mT)


def allocations_during(run) -> list[int]:
    """The sizes of the tensors torch's CPU allocator handed out while ``run()`` ran (torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = profiler.profiler.kineto_results.events()
    return [event.nbytes() for event in events if event.name() == "[memory]" and event.nbytes() > 0]


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_an_update_allocates_nothing_of_a_factors_size(approx):
    """A wide conv on a 3x3 input (one location: patches of 2 x 576) and a wide Linear: the A factors (576^2 and
    700^2 float64) dwarf every activation, so no allocation of their size may happen in a later update."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 700, 3, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(700, 2)).double()  # fmt: skip
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), approx=approx, separate_bias=False)
    x, y = torch.randn(2, 64, 3, 3, dtype=torch.float64), torch.tensor([0, 1])
    kfac.update(x, y)
    smallest_factor = min(a.numel() for a, _ in kfac._layer_factors().values()) * 8
    sizes = allocations_during(lambda: kfac.update(x, y))
    assert sizes and max(sizes) < smallest_factor // 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_sum_in_float32_and_precondition(dtype):
    """Factors of a half model are held in float32, equal to the float64 factors of the same (rounded) model and
    inputs up to float32 rounding; the preconditioner works on the half gradients and returns them in half."""
    model, twin = small_model(dtype), small_model(dtype).double()
    x, y = batch(4, 1, dtype)
    kfac, reference = KFAC(model, torch.nn.CrossEntropyLoss()), KFAC(twin, torch.nn.CrossEntropyLoss())
    kfac.update(x, y)
    reference.update(x.double(), y)
    for name, (a, b) in kfac.factors.items():
        assert b.dtype == torch.float32 and (a is None or a.dtype == torch.float32)
        expected_a, expected_b = reference.factors[name]
        # the forward and backward run in half, so the factors' inputs differ from float64's by half's rounding
        if a is not None:
            torch.testing.assert_close(a.double(), expected_a, rtol=0.05, atol=0.05 * expected_a.abs().max().item())
        torch.testing.assert_close(b.double(), expected_b, rtol=0.05, atol=0.05 * expected_b.abs().max().item())
    torch.nn.CrossEntropyLoss()(model(x), y).backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    preconditioned = kfac.preconditioner(0.1)(gradients)
    exact = KFAC(small_model(), torch.nn.CrossEntropyLoss())
    exact.load_state_dict({**kfac.state_dict(), "factors": {
        name: (a.double(), b.double()) for name, (a, b) in kfac._layer_factors().items()}})  # fmt: skip
    expected = exact.preconditioner(0.1)({name: g.double() for name, g in gradients.items()})
    for name, value in preconditioned.items():
        assert value.dtype == dtype
        torch.testing.assert_close(value.double(), expected[name], rtol=0.02, atol=0.02 * expected[name].abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_ggn_diagonals_are_computed_in_float32(dtype):
    """Wide conv layers take the per-location ways (by location pairs, by columns), a depthwise one the routine:
    each computes in float32 and returns in the model's dtype, close to the float64 diagonal of the same model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
        torch.nn.Tanh(), torch.nn.Conv2d(16, 16, 3, stride=3), torch.nn.Flatten(), torch.nn.Linear(64, CLASSES),
    ).to(dtype)  # fmt: skip
    twin = copy.deepcopy(model).double()
    x, y = torch.randn(2, 3, 6, 6).to(dtype), torch.tensor([0, 2])
    got, expected = diag_ggn(model, torch.nn.CrossEntropyLoss(), x, y), diag_ggn(twin, torch.nn.CrossEntropyLoss(),
                                                                                  x.double(), y)  # fmt: skip
    for name, value in expected.items():
        assert got[name].dtype == dtype
        torch.testing.assert_close(got[name].double(), value, rtol=0.05, atol=0.05 * value.abs().max().item())


@pytest.mark.parametrize("chunk", [1, 288, 600, 10**9])
def test_expand_patches_in_chunks_of_samples_give_the_factor(chunk):
    """5 samples of 2 x 9 x 16 = 288 patch elements: chunks of 1 sample (a chunk never splits a sample, even
    when PATCH_CHUNK is smaller), of 2, 2 and 1, and all 5; the factor of all patches at once."""
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    patches = torch.nn.functional.unfold(x, 3, padding=1).reshape(5, 2, 9, 16).permute(1, 2, 0, 3).flatten(2)
    calls = mock.Mock(wraps=patches_module.part_operands)
    with planned(chunk=chunk, whole=False), mock.patch.object(patches_module, "part_operands", calls):
        got = curvature.kfac_expand_factor(x, 3, padding=1, groups=2)
    torch.testing.assert_close(got, patches @ patches.mT / 80, **TOL)
    sizes = [call.args[2]["X"].shape[0] for call in calls.call_args_list]
    assert sizes == {1: [1] * 5, 288: [1] * 5, 600: [2, 2, 1], 10**9: [5]}[chunk]


def test_the_bias_row_and_column_are_blended_and_mirrored():
    joined = torch.full((2, 4, 4), float("nan"), dtype=torch.float64)
    mean = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    accumulate_bias(joined, mean, 0.5, 0.0)  # not read with beta = 0
    torch.testing.assert_close(joined[:, :3, 3], 0.5 * mean)
    torch.testing.assert_close(joined[:, 3, :], torch.cat([0.5 * mean, torch.full((2, 1), 0.5)], 1).double())
    accumulate_bias(joined, 2 * mean, 0.25, 2.0)
    torch.testing.assert_close(joined[:, :3, 3], 1.5 * mean)
    torch.testing.assert_close(joined[:, 3, 3], torch.full((2,), 1.25, dtype=torch.float64))
    assert torch.equal(joined[:, 3, :3], joined[:, :3, 3])



@settings(max_examples=40, deadline=None)
@given(curvature_layers(), st.integers(1, 3), st.sampled_from([1, 50, 10**9]), st.integers(0, 2**16),
       st.sampled_from([0, 10**9]))
def test_the_ggn_diagonal_by_columns_and_by_location_pairs_equals_the_routine(layer, columns, chunk, seed, views_from):
    """Both ways of ``tnconv.curvature.patches`` (in chunks of one sample, of a few, of all; patches as views or
    from the unfold program) against the ``diag_ggn`` routine, on conv and transposed conv layers of 1 to 3
    dims, through ``matrix_weight``."""
    x, v = random(layer.x_shape, seed), random((columns, *layer.output_shape), seed + 1)
    arguments = kwargs(layer)
    expected = curvature.diag_ggn_weight(x, v, layer.kernel_size, **arguments)
    conv = {"kernel_size": layer.kernel_size, "transposed": False, **arguments}
    geometry = Geometry("transposed" if layer.transposed else "conv", layer.groups, layer.output_shape[1], conv)
    hyper = checked_layer(x, geometry.conv, geometry.out_channels)
    with planned(chunk=chunk, views_from=views_from):
        for path in (patches_module.diag_ggn_by_columns, patches_module.diag_ggn_by_location_pairs):
            got = matrix_weight(path(x, v, hyper), geometry, expected.shape)
            torch.testing.assert_close(got, expected, **TOL)


def test_model_diagonals_take_the_way_their_layers_call_for():
    """A wide conv on 2x2 locations (pairs: T + 1 <= 2M), a wide one on 6x6 (by columns) and a depthwise one (the
    routine): each way runs where it should, and ``diag_ggn`` still equals the routine on every layer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
        torch.nn.Conv2d(16, 16, 3, stride=3), torch.nn.Flatten(), torch.nn.Linear(64, CLASSES),
    ).double()  # fmt: skip
    x, y = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 2])
    calls = {name: mock.Mock(wraps=getattr(factors_module, name))
             for name in ("diag_ggn_by_columns", "diag_ggn_by_location_pairs", "diag_ggn_weight")}  # fmt: skip
    with mock.patch.multiple(factors_module, **calls):
        diagonal = diag_ggn(model, torch.nn.CrossEntropyLoss(), x, y)
    assert [c.call_count for c in calls.values()] == [1, 1, 1]
    layers = find_layers(model)
    output, records = forward(model, layers, x)
    pulled = pull_back(output, records, sqrt_ggn(output, "cross_entropy", "mean"))
    for layer in layers[:3]:
        record = records[layer.name]
        expected = curvature.diag_ggn_weight(record.x, pulled[layer.name], **record.geometry.conv)
        torch.testing.assert_close(diagonal[layer.weight], expected, **TOL)


@settings(max_examples=30, deadline=None)
@given(curvature_layers(), st.integers(0, 2**16), st.sampled_from([(1.0, 0.0), (0.3, 0.7)]))
def test_small_expand_factors_by_the_whole_network_equal_the_patches_way(layer, seed, blend):
    """A factor under two full panels whose patches fit one chunk runs as the derived network (the planner's
    ``NetworkGram``): the same value as the patches and Gram, blended in place, exactly symmetric; its cost names
    the network."""
    alpha, beta = blend
    x = random(layer.x_shape, seed)
    hyper = checked_layer(x, {"kernel_size": layer.kernel_size, **kwargs(layer)})
    plan = patches_module.input_gram_plan(hyper, default_target())
    assert plan == NetworkGram(pair=False)  # small test layers: d < 2 * PANEL, one chunk
    start = random((hyper.groups, *2 * [hyper.patch_size]), seed + 1)
    start = start + start.mT
    spy = mock.Mock(wraps=patches_module.accumulate_patch_gram)
    with mock.patch.object(patches_module, "accumulate_patch_gram", spy):
        got = patches_module.accumulate_input_factor(x, hyper, False, start.clone(), alpha, beta)
    with planned(whole=False):
        expected = patches_module.accumulate_input_factor(x, hyper, False, start.clone(), alpha, beta)
    assert not spy.called
    torch.testing.assert_close(got, expected, **TOL)
    assert torch.equal(got, got.mT)
    assert patches_module.input_factor_cost(hyper, False).strategy.startswith("network (")
