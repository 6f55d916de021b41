"""tnconv.privacy.clip_grads in float64: the sum of per-sample gradients clipped to a total norm equals the one from
torch.func's per-sample gradients and from Opacus's DP optimizer; no clipping gives the ordinary gradient; the noise
is the generator's; unsupported trainable modules and bad arguments are refused by name."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

import tnconv
from tnconv.privacy import clip_grads

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 3


def dp_model(seed: int = 0) -> torch.nn.Module:
    """Convs (one of them read through pairs of locations), GroupNorm, LayerNorm and a Linear head; no in-place ops
    (for Opacus)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 16, 3, stride=2, groups=2), torch.nn.Tanh(), torch.nn.Flatten(),
        torch.nn.LayerNorm(16 * 2 * 2), torch.nn.Linear(16 * 2 * 2, CLASSES),
    ).double()  # fmt: skip


def batch(size: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 6, 6, generator=generator, dtype=torch.float64), torch.randint(0, CLASSES, (size,),
                                                                                               generator=generator)


def per_sample(model: torch.nn.Module, loss_function: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Each sample's term of the loss gradient as the reduction weights it (``torch.func.vmap(grad)``)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    weight = 1.0 / x.shape[0] if loss_function.reduction == "mean" else 1.0

    def term(values, sample, target):
        return loss_function(torch.func.functional_call(model, values, (sample[None],)), target[None]) * weight

    return torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))(params, x, y)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_clipped_sum_equals_torch_func(reduction):
    model, loss_function = dp_model(), torch.nn.CrossEntropyLoss(reduction=reduction)
    x, y = batch()
    grads = per_sample(model, loss_function, x, y)
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads.values()]).sum(0).sqrt()
    max_norm = float(norms.median())  # half the samples are clipped
    got = clip_grads(model, loss_function, x, y, max_norm)
    torch.testing.assert_close(got, norms, **TOL)
    factors = (max_norm / norms).clamp(max=1.0)
    assert (factors < 1).any() and (factors == 1).any()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, torch.einsum("n,n...->...", factors, grads[name]), **TOL)


class Branches(torch.nn.Module):
    """Two convs whose outputs are added (autograd hands both one gradient tensor) and a tied Linear weight."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.narrow = torch.nn.Conv2d(3, 4, 1)
        self.first = torch.nn.Linear(4 * 6 * 6, 8)
        self.second = torch.nn.Linear(4 * 6 * 6, 8, bias=False)
        self.second.weight = self.first.weight
        self.head = torch.nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.wide(x) + self.narrow(x)).flatten(1)
        return self.head(torch.tanh(self.first(y)) * self.second(y.cos()))


def test_added_branches_and_tied_weights_are_clipped_once():
    torch.manual_seed(0)
    model, loss_function = Branches().double(), torch.nn.CrossEntropyLoss(reduction="sum")
    x, y = batch(5)
    grads = per_sample(model, loss_function, x, y)
    norms = torch.stack([g.flatten(1).square().sum(1) for g in grads.values()]).sum(0).sqrt()
    max_norm = float(norms.median())
    torch.testing.assert_close(clip_grads(model, loss_function, x, y, max_norm), norms, **TOL)
    factors = (max_norm / norms).clamp(max=1.0)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, torch.einsum("n,n...->...", factors, grads[name]), **TOL)


@pytest.mark.parametrize("loss_function", [torch.nn.CrossEntropyLoss(), torch.nn.MSELoss(reduction="sum")])
def test_without_clipping_the_gradient_is_the_ordinary_one(loss_function):
    """Existing ``.grad`` is overwritten, not added to."""
    model, reference = dp_model(), dp_model()
    x, y = batch()
    if isinstance(loss_function, torch.nn.MSELoss):
        y = torch.randn(x.shape[0], CLASSES, dtype=torch.float64)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 7.0)
    clip_grads(model, loss_function, x, y, max_norm=1e12)
    loss_function(reference(x), y).backward()
    for (name, parameter), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected.grad, **TOL, msg=name)


def test_the_noise_is_the_generators():
    """Noise of std ``noise_multiplier * max_norm`` on every entry, drawn from ``generator`` in parameter order."""
    model, loss_function = dp_model(), torch.nn.CrossEntropyLoss(reduction="sum")
    x, y = batch()
    clip_grads(model, loss_function, x, y, 0.5)
    clean = {name: p.grad.clone() for name, p in model.named_parameters()}
    clip_grads(model, loss_function, x, y, 0.5, noise_multiplier=3.0, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 1.5
        torch.testing.assert_close(parameter.grad - clean[name], noise, rtol=1e-9, atol=1e-9)


def test_clipped_sum_equals_opacus_dp_optimizer():
    """Opacus (hooks mode, its own samplers) clips by ``max_norm / (norm + 1e-6)``: equal to that rounding (a
    relative 1e-6 of each clipped sample's gradient)."""
    model, loss_function = dp_model(), torch.nn.CrossEntropyLoss(reduction="sum")
    x, y = batch(8)
    wrapped = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    optimizer = DPOptimizer(torch.optim.SGD(wrapped.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=0.3,
                            expected_batch_size=8, loss_reduction="sum")
    loss_function(wrapped(x), y).backward()
    optimizer.pre_step()  # clip, sum, (no) noise: .grad
    norms = clip_grads(model, loss_function, x, y, 0.3)
    assert (norms > 0.3).any()
    for (name, ours), theirs in zip(model.named_parameters(), wrapped.parameters()):
        scale = float(theirs.grad.abs().max())
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_unsupported_trainable_modules_are_listed():
    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), Scale(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, CLASSES)).double()
    x, y = batch()
    message = r"unsupported modules: 1\.weight \(BatchNorm2d\), 1\.bias \(BatchNorm2d\), 2\.gain \(Scale\); clip_grads"
    with pytest.raises(ValueError, match=message):
        clip_grads(model, torch.nn.CrossEntropyLoss(), x, y, 1.0)
    for parameter in (*model[1].parameters(), *model[2].parameters()):
        parameter.requires_grad_(False)
    model.eval()  # frozen modules are differentiated through
    assert clip_grads(model, torch.nn.CrossEntropyLoss(), x, y, 1.0).shape == (x.shape[0],)
    assert model[1].weight.grad is None and model[0].weight.grad is not None


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(max_norm=0.0), ValueError, "max_norm must be a finite number > 0, got 0.0"),
        (dict(max_norm=float("inf")), ValueError, "max_norm must be a finite number > 0, got inf"),
        (dict(max_norm="1"), TypeError, "max_norm must be a number, got '1'"),
        (dict(max_norm=True), TypeError, "max_norm must be a number, got True"),
        (dict(max_norm=1.0, noise_multiplier=-1), ValueError, "noise_multiplier must be a finite number >= 0, got -1"),
        (dict(max_norm=1.0, generator=3), TypeError, "generator must be a torch.Generator or None, got 3"),
    ],
)
def test_bad_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        clip_grads(dp_model(), torch.nn.CrossEntropyLoss(), *batch(), **arguments)


def test_tnconv_privacy_is_a_top_level_name():
    assert tnconv.privacy.clip_grads is clip_grads


def test_layers_that_do_not_run_are_refused():
    """Their parameters could get gradients by another path (``F.linear``, as attention's ``out_proj``) that
    clip_grads cannot clip."""

    class Unrun(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head, self.unused = torch.nn.Linear(3 * 6 * 6, CLASSES), torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    model = Unrun().double()
    with pytest.warns(UserWarning, match="did not run"), pytest.raises(
        ValueError, match=r"parameters \['unused\.weight', 'unused\.bias'\] belong to layers that did not run"
    ):
        clip_grads(model, torch.nn.CrossEntropyLoss(), *batch(), 1.0)
    model.unused.requires_grad_(False)
    assert clip_grads(model, torch.nn.CrossEntropyLoss(), *batch(), 1.0).shape == (6,)
