"""Whole-model curvature against the peers as oracles, in float64 to 1e-10.

- ``KFAC``: per layer, ``kron(B, A)`` equals the block of curvlinops' ``KFACLinearOperator``
  (same model, loss, data, fisher type and ``kfac_approx``) through matrix-vector products,
  for expand/reduce, type-2/empirical, separate and joined bias, over two ``update`` calls,
  on the layers curvlinops supports (Conv2d with groups=1, Linear also on ``(N, T, d)`` inputs),
  with BatchNorm, pooling, a residual connection and in-place ReLUs differentiated through.
- ``per_sample_grads`` equals BackPACK's ``BatchGrad``; ``diag_ggn`` its ``DiagGGNExact``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backpack import backpack, extend
from backpack.extensions import BatchGrad, DiagGGNExact
from curvlinops import KFACLinearOperator

from tnconv.curvature import KFAC, diag_ggn, per_sample_grads

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 5


class Residual(torch.nn.Module):
    """conv -> BatchNorm -> ReLU(inplace) -> conv, plus the input (a custom forward with an in-place add)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(channels)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.norm(self.conv1(x))))
        out += x
        return out


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.nn.ReLU(inplace=True), Residual(4),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 2, dilation=(1, 2), padding=(1, 2)), torch.nn.Sigmoid(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 4, CLASSES),
    ).double()  # fmt: skip


def sequence_mlp() -> torch.nn.Module:
    """A Linear on ``(N, T, d)`` inputs (weight sharing over T), then a Linear on the flattened result."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 3, CLASSES)
    ).double()


MODELS = {"cnn": (cnn, (3, 8, 8)), "sequence": (sequence_mlp, (3, 6))}
LOSSES = {
    "ce-mean": torch.nn.CrossEntropyLoss(),
    "ce-sum": torch.nn.CrossEntropyLoss(reduction="sum"),
    "mse-mean": torch.nn.MSELoss(),
    "mse-sum": torch.nn.MSELoss(reduction="sum"),
}


def batches(shape: tuple[int, ...], loss_function: torch.nn.Module, sizes=(4, 3)) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(1)
    data = []
    for size in sizes:
        x = torch.randn(size, *shape, generator=generator, dtype=torch.float64)
        if isinstance(loss_function, torch.nn.CrossEntropyLoss):
            y = torch.randint(0, CLASSES, (size,), generator=generator)
        else:
            y = torch.randn(size, CLASSES, generator=generator, dtype=torch.float64)
        data.append((x, y))
    return data


def kfac_matvec(kfac: KFAC, vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``kron(B, A)`` of every layer applied to parameter-shaped ``vectors`` (Conv2d with groups=1 and Linear)."""
    result = {}
    for layer in kfac.layers:
        a, b = kfac.factors[layer.name]
        weight = vectors[layer.weight]
        matrix = weight.reshape(1, weight.shape[0], -1)
        if layer.bias is not None and not kfac.separate_bias:
            joined = b @ torch.cat([matrix, vectors[layer.bias].reshape(1, -1, 1)], dim=2) @ a
            result[layer.weight], result[layer.bias] = joined[0, :, :-1].reshape(weight.shape), joined[0, :, -1]
            continue
        result[layer.weight] = (b @ matrix @ a).reshape(weight.shape)
        if layer.bias is not None:
            _, bias_b = kfac.factors[layer.name + ".bias"]
            result[layer.bias] = (bias_b @ vectors[layer.bias].reshape(1, -1, 1)).reshape(-1)
    return result


@pytest.mark.parametrize("separate_bias", [True, False])
@pytest.mark.parametrize("fisher", ["type-2", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_kfac_blocks_equal_curvlinops(model_name, loss, approx, fisher, separate_bias):
    build, shape = MODELS[model_name]
    model, loss_function = build(), LOSSES[loss]
    data = batches(shape, loss_function)
    kfac = KFAC(model, loss_function, approx=approx, fisher=fisher, separate_bias=separate_bias)
    for x, y in data:
        kfac.update(x, y)
    names = [name for layer in kfac.layers for name in (layer.weight, layer.bias) if name is not None]
    params = dict(model.named_parameters())
    operator = KFACLinearOperator(
        model, loss_function, [params[name] for name in names], data, fisher_type=fisher, kfac_approx=approx,
        separate_weight_and_bias=separate_bias, check_deterministic=False,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(2)
    for _ in range(2):
        vectors = {name: torch.randn(params[name].shape, generator=generator, dtype=torch.float64) for name in names}
        expected = operator @ [vectors[name] for name in names]
        got = kfac_matvec(kfac, vectors)
        for name, value in zip(names, expected):
            torch.testing.assert_close(got[name], value, **TOL)


def test_kfac_layers_are_the_supported_modules_anywhere_in_the_model():
    kfac = KFAC(cnn(), LOSSES["ce-mean"])
    assert [layer.name for layer in kfac.layers] == ["0", "2.conv1", "2.conv2", "4", "7"]
    kfac.update(*batches((3, 8, 8), LOSSES["ce-mean"], sizes=(2,))[0])
    assert list(kfac.factors) == ["0", "0.bias", "2.conv1", "2.conv1.bias", "2.conv2", "4", "4.bias", "7", "7.bias"]


def backpack_model() -> torch.nn.Module:
    """What BackPACK's BatchGrad and DiagGGNExact support: no BatchNorm in training, no in-place residual."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 2, dilation=(1, 2), padding=(1, 2)), torch.nn.Sigmoid(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 3 * 4, CLASSES),
    ).double()  # fmt: skip


@pytest.mark.parametrize("loss", list(LOSSES))
def test_per_sample_grads_and_diag_ggn_equal_backpack(loss):
    model, loss_function = backpack_model(), LOSSES[loss]
    (x, y), _ = batches((3, 8, 8), loss_function)
    grads = per_sample_grads(model, loss_function, x, y)
    diagonal = diag_ggn(model, loss_function, x, y)
    extended, extended_loss = extend(copy.deepcopy(model)), extend(copy.deepcopy(loss_function))
    with backpack(BatchGrad(), DiagGGNExact()):
        extended_loss(extended(x), y).backward()
    expected = dict(extended.named_parameters())
    assert list(grads) == list(diagonal) == list(expected)
    for name, param in expected.items():
        torch.testing.assert_close(grads[name], param.grad_batch, **TOL)
        torch.testing.assert_close(diagonal[name], param.diag_ggn_exact, **TOL)
    assert all(p.grad is None for p in model.parameters())
