"""tnconv.integrations.opacus: tnconv's samplers equal Opacus's own conv sampler (and torch.func where Opacus has
none or is wrong: padding modes, transposed convs), and after ``register()`` Opacus's hooks and ghost-clipping modes
use them and give what they gave before, in float64. Opacus's registries are restored after each test."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.grad_sample.grad_sample_module import GradSampleHooks
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

import tnconv.nn as tnn
from tnconv.integrations.opacus import CONV_LAYERS, grad_sampler, norm_sampler, register

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def registered():
    """``register()``, then Opacus's registries as they were."""
    registries = (GradSampleHooks.GRAD_SAMPLERS, GradSampleHooksFastGradientClipping.GRAD_SAMPLERS,
                  GradSampleHooksFastGradientClipping.NORM_SAMPLERS)
    saved = [dict(registry) for registry in registries]
    register()
    yield
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)


def random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def torch_func_grads(layer: torch.nn.Module, x: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each sample's gradient of ``<layer(x_n), v_n>`` w.r.t. the layer's parameters (``torch.func``)."""
    params = {name: p.detach() for name, p in layer.named_parameters()}

    def term(values, sample, gradient):
        return (torch.func.functional_call(layer, values, (sample[None],)) * gradient[None]).sum()

    return torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))(params, x, v)


LAYERS = {
    "conv1d-strided-dilated": (torch.nn.Conv1d(4, 6, 3, stride=2, dilation=2, padding=1), (3, 4, 11)),
    "conv2d-grouped": (torch.nn.Conv2d(4, 6, (3, 2), padding=(1, 0), groups=2), (3, 4, 7, 6)),
    "conv2d-same": (torch.nn.Conv2d(3, 4, 3, padding="same", bias=False), (2, 3, 5, 6)),
    "conv3d": (torch.nn.Conv3d(2, 4, 2, stride=(1, 2, 1)), (2, 2, 4, 5, 3)),
    "conv2d-deep": (torch.nn.Conv2d(8, 32, 3, stride=2), (4, 8, 5, 5)),  # 2x2 locations: pairs of locations
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_samplers_equal_opacus_own(name):
    layer, shape = LAYERS[name]
    layer = copy.deepcopy(layer).double()
    x = random(shape, 0)
    v = random(layer(x).shape, 1)
    theirs = compute_conv_grad_sample(layer, [x], v)
    ours = grad_sampler(layer, [x], v)
    norms = norm_sampler(layer, [x], v)
    assert list(ours) == list(norms) == list(theirs)
    for parameter, expected in theirs.items():
        torch.testing.assert_close(ours[parameter], expected, **TOL)
        torch.testing.assert_close(norms[parameter], expected.flatten(1).norm(dim=1), **TOL)


@pytest.mark.parametrize("layer, shape", [
    (torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", groups=2), (2, 4, 5, 6)),
    (torch.nn.Conv1d(2, 3, 3, padding=2, padding_mode="circular"), (3, 2, 6)),
    (torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 3, 4)),
    (torch.nn.ConvTranspose1d(3, 2, 4, stride=3, dilation=2), (2, 3, 5)),
    (tnn.ConvNd(4, 2, 2, 2, padding=1), (2, 2, 3, 2, 3, 2)),
], ids=["reflect", "circular", "transposed2d", "transposed1d", "tnconv-4d"])  # fmt: skip
def test_samplers_where_opacus_has_none_or_is_wrong_equal_torch_func(layer, shape):
    """Opacus unfolds zero-padded inputs whatever the padding mode, and has no sampler for transposed convs."""
    layer = copy.deepcopy(layer).double()
    x = random(shape, 2)
    v = random(layer(x).shape, 3)
    expected = torch_func_grads(layer, x, v)
    ours, norms = grad_sampler(layer, [x], v), norm_sampler(layer, [x], v)
    for name, parameter in layer.named_parameters():
        torch.testing.assert_close(ours[parameter], expected[name], **TOL)
        torch.testing.assert_close(norms[parameter], expected[name].flatten(1).norm(dim=1), **TOL)


def test_an_empty_batch_gives_empty_results():
    layer = torch.nn.Conv2d(2, 3, 3).double()
    x, v = random((0, 2, 5, 5), 0), random((0, 3, 3, 3), 1)
    assert [t.shape for t in grad_sampler(layer, [x], v).values()] == [(0, 3, 2, 3, 3), (0, 3)]
    assert [t.shape for t in norm_sampler(layer, [x], v).values()] == [(0,), (0,)]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(4, 4, 2, stride=2), torch.nn.ReLU(), tnn.Conv2d(4, 16, 3, stride=3, groups=2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 3),
    ).double()  # fmt: skip


def batch():
    generator = torch.Generator().manual_seed(4)
    return torch.randn(6, 3, 6, 6, generator=generator, dtype=torch.float64), torch.randint(0, 3, (6,),
                                                                                            generator=generator)


def hooks_grad_samples() -> dict[str, torch.Tensor]:
    wrapped = GradSampleModule(model())
    x, y = batch()
    torch.nn.functional.cross_entropy(wrapped(x), y).backward()
    return {name: p.grad_sample for name, p in wrapped.named_parameters()}


def ghost_step() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One ghost-clipping step of Opacus (its two backward passes): the clipped summed gradients and the norms."""
    wrapped = GradSampleModuleFastGradientClipping(model(), max_grad_norm=0.5, use_ghost_clipping=True)
    optimizer = DPOptimizerFastGradientClipping(torch.optim.SGD(wrapped.parameters(), lr=1.0), noise_multiplier=0.0,
                                                max_grad_norm=0.5, expected_batch_size=6)
    criterion = DPLossFastGradientClipping(wrapped, optimizer, torch.nn.CrossEntropyLoss())
    x, y = batch()
    criterion(wrapped(x), y).backward()
    return {name: p.grad.clone() for name, p in wrapped.named_parameters()}, wrapped.per_sample_gradient_norms


def test_registered_samplers_run_in_opacus_hooks_and_ghost_modes(registered):
    for cls in CONV_LAYERS:
        assert GradSampleHooks.GRAD_SAMPLERS[cls] is grad_sampler
        assert GradSampleHooksFastGradientClipping.NORM_SAMPLERS[cls] is norm_sampler
    ours_hooks, (ours_ghost, ours_norms) = hooks_grad_samples(), ghost_step()
    registries = (GradSampleHooks.GRAD_SAMPLERS, GradSampleHooksFastGradientClipping.NORM_SAMPLERS)
    for cls in CONV_LAYERS:  # Opacus alone: its unfold sampler for Conv2d, torch.func for the others
        for registry in registries:
            registry.pop(cls, None)
    GradSampleHooks.GRAD_SAMPLERS[torch.nn.Conv2d] = compute_conv_grad_sample
    theirs_hooks, (theirs_ghost, theirs_norms) = hooks_grad_samples(), ghost_step()
    for name, expected in theirs_hooks.items():
        torch.testing.assert_close(ours_hooks[name], expected, **TOL)
    torch.testing.assert_close(ours_norms, theirs_norms, **TOL)
    assert (ours_norms > 0.5).any()  # some samples are clipped
    for name, expected in theirs_ghost.items():
        torch.testing.assert_close(ours_ghost[name], expected, **TOL)
