"""per_sample_grad_norms, sum_grad_squared and grad_variance of whole models in float64: equal to BackPACK's
BatchL2Grad, SumGradSquared and Variance where BackPACK supports the layers, and to torch.func's per-sample
gradients everywhere (normalisation layers' affine parameters, padding modes, tnconv.nn modules, tied weights,
Linear layers with locations, every loss and reduction)."""

from __future__ import annotations

import copy

import pytest
import torch
from backpack import backpack, extend
from backpack.extensions import BatchGrad, BatchL2Grad, SumGradSquared, Variance

import tnconv.nn as tnn
from tnconv.curvature import grad_variance, per_sample_grad_norms, sum_grad_squared
from tnconv.models import ChannelsLayerNorm

TOL = dict(rtol=1e-9, atol=1e-12)
CLASSES = 3
LOSSES = {
    "ce-mean": torch.nn.CrossEntropyLoss(), "ce-sum": torch.nn.CrossEntropyLoss(reduction="sum"),
    "mse-mean": torch.nn.MSELoss(), "mse-sum": torch.nn.MSELoss(reduction="sum"),
}


def batch(shape: tuple[int, ...], loss_function: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if isinstance(loss_function, torch.nn.CrossEntropyLoss):
        return x, torch.randint(0, CLASSES, (shape[0],), generator=generator)
    return x, torch.randn(shape[0], CLASSES, generator=generator, dtype=torch.float64)


def reference_grads(model, loss_function, x, y) -> dict[str, torch.Tensor]:
    """Each sample's term of the loss gradient as the reduction weights it, by ``torch.func.vmap(grad)``."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    weight = 1.0 / x.shape[0] if loss_function.reduction == "mean" else 1.0

    def term(values, sample, target):
        return loss_function(torch.func.functional_call(model, values, (sample[None],)), target[None]) * weight

    return torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))(params, x, y)


def check_against_torch_func(model, loss_function, x, y) -> None:
    grads = reference_grads(model, loss_function, x, y)
    norms = per_sample_grad_norms(model, loss_function, x, y)
    squares = sum_grad_squared(model, loss_function, x, y)
    variance = grad_variance(model, loss_function, x, y)
    assert list(norms) == list(squares) == list(variance) == list(grads)  # every parameter, in model order
    for name, g in grads.items():
        torch.testing.assert_close(norms[name], g.flatten(1).square().sum(1), **TOL)
        torch.testing.assert_close(squares[name], g.square().sum(0), **TOL)
        torch.testing.assert_close(variance[name], g.square().mean(0) - g.mean(0).square(), **TOL)
    assert all(p.grad is None for p in model.parameters())


# --- BackPACK ----------------------------------------------------------------------------------
def backpack_model() -> torch.nn.Module:
    """Layers BackPACK's first-order extensions support: strided, dilated, grouped and transposed convs, Linear."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 2, dilation=(1, 2), padding=(1, 2), groups=2), torch.nn.Sigmoid(),
        torch.nn.ConvTranspose2d(6, 4, 3, stride=2), torch.nn.Tanh(),  # BackPACK fails with output_padding
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 16, 3, stride=2), torch.nn.Flatten(),  # 2x2 locations: pairs
        torch.nn.Linear(16 * 2 * 2, CLASSES),
    ).double()  # fmt: skip


GROUPED = "2.weight"
"""BackPACK 1.7's BatchL2Grad of a grouped conv's weight is not the squared norm of its own BatchGrad (its
SumGradSquared and Variance are right): there the norms are compared with its BatchGrad squared."""


@pytest.mark.parametrize("loss", list(LOSSES))
def test_equal_backpack(loss):
    model, loss_function = backpack_model(), LOSSES[loss]
    x, y = batch((5, 3, 10, 8), loss_function)
    norms = per_sample_grad_norms(model, loss_function, x, y)
    squares = sum_grad_squared(model, loss_function, x, y)
    variance = grad_variance(model, loss_function, x, y)
    extended, extended_loss = extend(copy.deepcopy(model)), extend(copy.deepcopy(loss_function))
    with backpack(BatchL2Grad(), SumGradSquared(), Variance(), BatchGrad()):
        extended_loss(extended(x), y).backward()
    expected = dict(extended.named_parameters())
    assert list(norms) == list(squares) == list(variance) == list(expected)
    for name, param in expected.items():
        batch_l2 = param.grad_batch.flatten(1).square().sum(1) if name == GROUPED else param.batch_l2
        torch.testing.assert_close(norms[name], batch_l2, **TOL)
        torch.testing.assert_close(squares[name], param.sum_grad_squared, **TOL)
        torch.testing.assert_close(variance[name], param.variance, **TOL)


# --- torch.func --------------------------------------------------------------------------------
class Tied(torch.nn.Module):
    """One conv weight used by two layers (the second a clone sharing it): per-sample gradients add over uses."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.second.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def normalised_model() -> torch.nn.Module:
    """Every normalisation layer with affine parameters, a padding mode, a tnconv.nn conv and tied weights."""
    torch.manual_seed(1)
    instance = torch.nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.GroupNorm(2, 4), torch.nn.ReLU(),
        tnn.Conv2d(4, 4, 3, padding=1, padding_mode="circular", groups=2), ChannelsLayerNorm(4), torch.nn.Tanh(),
        Tied(), instance, torch.nn.Conv2d(4, 2, 2, stride=2), torch.nn.Flatten(), torch.nn.LayerNorm(2 * 3 * 3),
        torch.nn.Linear(2 * 3 * 3, CLASSES),
    ).double()  # fmt: skip


@pytest.mark.parametrize("loss", ["ce-mean", "mse-sum"])
def test_normalisation_layers_padding_modes_and_tied_weights_equal_torch_func(loss):
    model = normalised_model().eval()  # InstanceNorm reads its running statistics in eval mode
    model[7].running_var.uniform_(0.5, 2.0)
    model[7].running_mean.normal_()
    check_against_torch_func(model, LOSSES[loss], *batch((4, 3, 6, 6), LOSSES[loss]))


def test_instance_norm_in_training_mode_equals_torch_func():
    """Statistics of the sample itself (its running statistics, which the forward updates, are not read)."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 3, 3), torch.nn.InstanceNorm1d(3, affine=True), torch.nn.Flatten(),
        torch.nn.Linear(3 * 5, CLASSES),
    ).double()  # fmt: skip
    loss_function = LOSSES["ce-mean"]
    check_against_torch_func(model, loss_function, *batch((3, 2, 7), loss_function))


def test_linear_layers_with_locations_and_3d_convs_equal_torch_func():
    """Linear layers over a sequence (their locations, both norm forms) and a transposed 3-d conv."""
    torch.manual_seed(3)

    class Sequence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.ConvTranspose3d(2, 3, 2, stride=(1, 2, 1))
            self.narrow = torch.nn.Linear(3, 2)  # 60 locations, narrow: the per-sample gradients
            self.wide = torch.nn.Linear(40, 30)  # 3 locations, wide: pairs of locations
            self.head = torch.nn.Linear(90, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.narrow(torch.tanh(self.conv(x)).flatten(2).transpose(1, 2))  # (N, 60, 2)
            z = self.wide(y.reshape(y.shape[0], 3, 40))
            return self.head(torch.tanh(z).flatten(1))

    model = Sequence().double()
    loss_function = LOSSES["mse-mean"]
    check_against_torch_func(model, loss_function, *batch((3, 2, 2, 2, 4), loss_function))


def test_frozen_parameters_are_left_out():
    model = normalised_model()
    model[1].weight.requires_grad_(False)
    model[11].bias.requires_grad_(False)
    x, y = batch((2, 3, 6, 6), LOSSES["ce-sum"])
    norms = per_sample_grad_norms(model, LOSSES["ce-sum"], x, y)
    assert "1.weight" not in norms and "11.bias" not in norms and "1.bias" in norms and "11.weight" in norms


def test_a_normalisation_layer_run_twice_is_refused():
    norm = torch.nn.GroupNorm(1, 3)
    model = torch.nn.Sequential(norm, norm, torch.nn.Flatten(), torch.nn.Linear(3 * 4, CLASSES)).double()
    with pytest.raises(ValueError, match="layer '0' ran more than once in one forward"):
        per_sample_grad_norms(model, LOSSES["ce-mean"], *batch((2, 3, 4), LOSSES["ce-mean"]))


def test_a_normalisation_layer_that_does_not_run_is_refused():
    class Unused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head, self.unused = torch.nn.Linear(3 * 4, CLASSES), torch.nn.LayerNorm(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    model = Unused().double()
    with pytest.raises(ValueError, match=r"layers \['unused'\] did not run in the forward pass"):
        sum_grad_squared(model, LOSSES["ce-mean"], *batch((2, 3, 4), LOSSES["ce-mean"]))


class UnrunLinear(torch.nn.Module):
    """A head and a Linear layer the forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.unused = torch.nn.Linear(3 * 4, CLASSES), torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


def test_a_supported_layer_that_does_not_run_is_left_out_with_a_warning():
    """As ``per_sample_grads`` does (it gets no curvature); the layers that ran are right."""
    model, loss_function = UnrunLinear().double(), LOSSES["ce-sum"]
    x, y = batch((4, 3, 4), loss_function)
    with pytest.warns(UserWarning, match=r"layers \['unused'\] did not run in the forward pass"):
        norms = per_sample_grad_norms(model, loss_function, x, y)
    grads = reference_grads(model, loss_function, x, y)
    assert list(norms) == ["head.weight", "head.bias"]
    for name, value in norms.items():
        torch.testing.assert_close(value, grads[name].flatten(1).square().sum(1), **TOL)
