"""KFAC on whole models: accumulation, the preconditioner, state dicts, Monte-Carlo, and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

import tnconv.nn as tnn
from tnconv.curvature import KFAC, diag_ggn, per_sample_grads
from tnconv.curvature.factors import bias_matrix, layout, matrix_weight, weight_matrix

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 4


class Upsample(torch.nn.Module):
    """A transposed conv whose output size is set by ``output_size`` in its forward (not by an attribute)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x, output_size=[2 * s for s in x.shape[2:]])


def mixed_model() -> torch.nn.Module:
    """Every layer kind: grouped tnconv conv (reflect padding), depthwise 1-d conv, transposed conv, Linear."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tnn.Conv2d(2, 6, 3, padding=1, groups=2, padding_mode="reflect"), torch.nn.Tanh(), Upsample(),
        torch.nn.Tanh(), torch.nn.Flatten(2), torch.nn.Conv1d(4, 4, 3, groups=4, bias=False), torch.nn.Flatten(),
        torch.nn.Linear(4 * 70, CLASSES),
    ).double()  # fmt: skip


def data(size: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 2, 3, 6, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (size,), generator=generator)


LOSS = torch.nn.CrossEntropyLoss()


def test_upsample_layer_reads_its_output_padding_from_the_output():
    """The transposed conv ran with output_size: its factors are those of output_padding=1."""
    model = mixed_model()
    fixed = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    fixed.load_state_dict(model[2].up.state_dict())
    twin = torch.nn.Sequential(*model[:2], fixed, *model[3:])
    x, y = data()
    kfac, reference = KFAC(model, LOSS), KFAC(twin, LOSS)
    kfac.update(x, y)
    reference.update(x, y)
    torch.testing.assert_close(kfac.factors["2.up"], reference.factors["2"], **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_updates_weighted_by_batch_size_give_the_factors_of_the_whole_data(approx, reduction):
    model, loss = mixed_model(), torch.nn.CrossEntropyLoss(reduction=reduction)
    (x1, y1), (x2, y2) = data(5, 1), data(2, 2)
    kfac, whole = KFAC(model, loss, approx=approx), KFAC(model, loss, approx=approx)
    kfac.update(x1, y1)
    kfac.update(x2, y2)
    whole.update(torch.cat([x1, x2]), torch.cat([y1, y2]))
    assert kfac.count == whole.count == 7
    for name, (a, b) in whole.factors.items():
        got_a, got_b = kfac.factors[name]
        assert (got_a is None) == (a is None)
        if a is not None:
            torch.testing.assert_close(got_a, a, **TOL)
        torch.testing.assert_close(got_b, b, **TOL)


def test_exponential_moving_average():
    model, decay = mixed_model(), 0.75
    (x1, y1), (x2, y2) = data(5, 1), data(2, 2)
    kfac, first, second = (KFAC(model, LOSS, ema_decay=decay) for _ in range(3))
    kfac.update(x1, y1)
    kfac.update(x2, y2)
    first.update(x1, y1)
    second.update(x2, y2)
    for name, (a, b) in kfac.factors.items():
        (a1, b1), (a2, b2) = first.factors[name], second.factors[name]
        if a is not None:
            torch.testing.assert_close(a, decay * a1 + (1 - decay) * a2, **TOL)
        torch.testing.assert_close(b, decay * b1 + (1 - decay) * b2, **TOL)


def test_update_leaves_gradients_as_they_were():
    model = mixed_model()
    x, y = data()
    LOSS(model(x), y).backward()
    before = {name: (p.grad, p.grad.clone()) for name, p in model.named_parameters()}
    model[7].bias.grad = None
    KFAC(model, LOSS).update(x, y)
    for name, p in model.named_parameters():
        if name == "7.bias":
            assert p.grad is None
        else:
            assert p.grad is before[name][0]
            torch.testing.assert_close(p.grad, before[name][1], rtol=0, atol=0)


def explicit_preconditioning(kfac: KFAC, gradients: dict[str, torch.Tensor], damping: float) -> dict[str, torch.Tensor]:
    """``(B + damping I)^{-1} G (A + damping I)^{-1}`` from ``.factors`` with dense inverses."""

    def inverse(factor: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(factor + damping * torch.eye(factor.shape[-1], dtype=factor.dtype))

    result = {}
    for layer in kfac.layers:
        a, b = kfac.factors[layer.name]
        grid = layout(layer.module)
        weight = gradients[layer.weight]
        matrix = weight_matrix(weight, grid)
        if layer.bias is not None and not kfac.separate_bias:
            matrix = torch.cat([matrix, bias_matrix(gradients[layer.bias], grid)], dim=2)
        solved = inverse(b) @ matrix @ inverse(a)
        if layer.bias is not None and not kfac.separate_bias:
            result[layer.bias] = solved[:, :, -1].reshape(-1)
            solved = solved[:, :, :-1]
        elif layer.bias is not None:
            bias_b = kfac.factors[layer.name + ".bias"][1]
            result[layer.bias] = (inverse(bias_b) @ bias_matrix(gradients[layer.bias], grid)).reshape(-1)
        result[layer.weight] = matrix_weight(solved, grid, weight.shape)
    return result


@pytest.mark.parametrize("separate_bias", [True, False])
def test_preconditioner_equals_damped_inverses_of_the_factors(separate_bias):
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(2).double(), *mixed_model())  # a BatchNorm: not preconditioned
    x, y = data()
    kfac = KFAC(model, LOSS, separate_bias=separate_bias)
    kfac.update(x, y)
    LOSS(model(x), y).backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    damping = 1e-2
    expected = explicit_preconditioning(kfac, gradients, damping)
    preconditioner = kfac.preconditioner(damping)
    got = preconditioner(gradients)
    assert set(got) == set(expected) == set(gradients) - {"0.weight", "0.bias"}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOL)
    torch.testing.assert_close(preconditioner(), got, **TOL)  # default: the parameters' .grad
    grads_before = {name: p.grad for name, p in model.named_parameters()}
    preconditioner.step()
    for name, p in model.named_parameters():
        assert p.grad is grads_before[name]  # in place
        torch.testing.assert_close(p.grad, expected.get(name, gradients[name]), **TOL)


def test_preconditioner_follows_new_factors():
    model = mixed_model()
    kfac = KFAC(model, LOSS)
    kfac.update(*data(5, 1))
    preconditioner = kfac.preconditioner(0.1)
    gradients = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    first = preconditioner(gradients)
    kfac.update(*data(3, 2))
    second = preconditioner(gradients)
    fresh = kfac.preconditioner(0.1)(gradients)
    assert not torch.allclose(first["7.weight"], second["7.weight"])
    for name in second:
        torch.testing.assert_close(second[name], fresh[name], **TOL)


def test_state_dict_round_trip():
    model = mixed_model()
    kfac = KFAC(model, LOSS, approx="reduce", separate_bias=False)
    kfac.update(*data())
    state = kfac.state_dict()
    restored = KFAC(model, LOSS, approx="reduce", separate_bias=False)
    restored.load_state_dict(state)
    assert restored.count == kfac.count
    for name, (a, b) in kfac.factors.items():
        torch.testing.assert_close(restored.factors[name][0], a, rtol=0, atol=0)
        torch.testing.assert_close(restored.factors[name][1], b, rtol=0, atol=0)
    restored.update(*data(3, 2))
    kfac.update(*data(3, 2))
    torch.testing.assert_close(restored.factors["7"], kfac.factors["7"], **TOL)
    with pytest.raises(ValueError, match="approx"):
        KFAC(model, LOSS, separate_bias=False).load_state_dict(state)
    with pytest.raises(ValueError, match="separate_bias"):
        KFAC(model, LOSS, approx="reduce").load_state_dict(state)
    with pytest.raises(ValueError, match="factors"):
        KFAC(model[:3], LOSS, approx="reduce", separate_bias=False).load_state_dict(state)


def test_monte_carlo_factors_approach_type_2_and_follow_the_generator():
    model = mixed_model()
    x, y = data(3)
    exact = KFAC(model, LOSS)
    exact.update(x, y)
    sampled = KFAC(model, LOSS, fisher="mc", mc_samples=1000, generator=torch.Generator().manual_seed(0))
    sampled.update(x, y)
    for name, (a, b) in exact.factors.items():
        got_b = sampled.factors[name][1]
        assert torch.linalg.norm(got_b - b) <= 0.1 * torch.linalg.norm(b)
    again = KFAC(model, LOSS, fisher="mc", mc_samples=1000, generator=torch.Generator().manual_seed(0))
    again.update(x, y)
    torch.testing.assert_close(again.factors["7"], sampled.factors["7"], rtol=0, atol=0)
    monte_carlo = diag_ggn(model, LOSS, x, y, mc_samples=1000, generator=torch.Generator().manual_seed(0))
    for name, value in diag_ggn(model, LOSS, x, y).items():
        assert torch.linalg.norm(monte_carlo[name] - value) <= 0.1 * torch.linalg.norm(value)


def test_linear_on_sequences_matches_autograd():
    """A Linear on (N, T, d): per-sample gradients and GGN diagonal sum over the shared T."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    model = model.double()
    x, y = torch.randn(4, 4, 3, dtype=torch.float64), torch.randint(0, 3, (4,))
    grads, diagonal = per_sample_grads(model, LOSS, x, y), diag_ggn(model, LOSS, x, y)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss_of(name, value, xs, ys):
        return LOSS(torch.func.functional_call(model, {**params, name: value}, (xs,)), ys)

    for name, value in params.items():
        each = [torch.func.grad(loss_of, argnums=1)(name, value, x[i : i + 1], y[i : i + 1]) / 4 for i in range(4)]
        torch.testing.assert_close(grads[name], torch.stack(each), **TOL)
        output = lambda v: torch.func.functional_call(model, {**params, name: v}, (x,))  # noqa: E731
        z = output(value)
        jacobian = torch.func.jacrev(output)(value).reshape(z.numel(), -1)
        hessian = torch.func.hessian(lambda out: LOSS(out, y))(z).reshape(z.numel(), z.numel())
        expected = torch.einsum("ip,ij,jp->p", jacobian, hessian, jacobian).reshape(value.shape)
        torch.testing.assert_close(diagonal[name], expected, **TOL)


# --- bad arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"approx": "full"}, ValueError, "approx"),
        ({"fisher": "type-1"}, ValueError, "fisher"),
        ({"mc_samples": 0, "fisher": "mc"}, ValueError, "mc_samples"),
        ({"mc_samples": 2}, ValueError, "mc_samples"),
        ({"separate_bias": 1}, TypeError, "separate_bias"),
        ({"generator": 3}, TypeError, "generator"),
        ({"ema_decay": 1.0}, ValueError, "ema_decay"),
        ({"distributed": "yes"}, TypeError, "distributed"),
    ],
)
def test_bad_kfac_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        KFAC(mixed_model(), LOSS, **kwargs)


@pytest.mark.parametrize(
    "loss",
    [
        torch.nn.NLLLoss(), torch.nn.CrossEntropyLoss(reduction="none"), torch.nn.MSELoss(reduction="none"),
        torch.nn.CrossEntropyLoss(label_smoothing=0.1), torch.nn.CrossEntropyLoss(weight=torch.ones(CLASSES)), "ce",
    ],
)  # fmt: skip
def test_unsupported_losses_are_rejected(loss):
    with pytest.raises(ValueError, match="loss_function"):
        KFAC(mixed_model(), loss)
    with pytest.raises(ValueError, match="loss_function"):
        diag_ggn(mixed_model(), loss, *data())


def test_bad_models_and_batches_are_rejected():
    with pytest.raises(TypeError, match="model"):
        KFAC(lambda x: x, LOSS)
    with pytest.raises(ValueError, match="no supported layer"):
        KFAC(torch.nn.Sequential(torch.nn.ReLU()), LOSS)
    shared = torch.nn.Linear(3, 3).double()
    with pytest.raises(ValueError, match=r"layer '0' \(parameters \['0.weight', '0.bias'\]\) ran 2 times"):
        KFAC(torch.nn.Sequential(shared, shared), LOSS).update(
            torch.randn(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.long)
        )
    idle = torch.nn.ModuleDict({"unused": torch.nn.Linear(3, 3)}).double()
    idle.forward = lambda x: x
    with pytest.raises(ValueError, match="none of the supported layers"):
        per_sample_grads(idle, LOSS, torch.randn(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    kfac = KFAC(mixed_model(), LOSS)
    x, y = data()
    with pytest.raises(ValueError, match="targets"):
        kfac.update(x, y[:2])
    with pytest.raises(ValueError, match="ignore_index"):
        kfac.update(x, torch.full_like(y, -100))
    with pytest.raises(ValueError, match="update"):
        kfac.preconditioner(1.0)(None)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        KFAC(torch.nn.Conv1d(2, 2, 1).double(), LOSS).update(torch.randn(2, 2, 3, dtype=torch.float64), y[:2])


@pytest.mark.parametrize(("damping", "error"), [(0, ValueError), (-1.0, ValueError), (math.nan, ValueError),
                                                (math.inf, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_damping_is_rejected(damping, error):
    kfac = KFAC(mixed_model(), LOSS)
    with pytest.raises(error, match="damping"):
        kfac.preconditioner(damping)


def test_bad_gradients_are_rejected():
    model = mixed_model()
    kfac = KFAC(model, LOSS, separate_bias=False)
    kfac.update(*data())
    preconditioner = kfac.preconditioner(1.0)
    with pytest.raises(ValueError, match="shape"):
        preconditioner({"7.weight": torch.zeros(2, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="not a parameter"):
        preconditioner({"8.weight": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="both"):
        preconditioner({"7.weight": torch.zeros_like(model[7].weight)})
    with pytest.raises(TypeError, match="gradients"):
        preconditioner([torch.zeros(1)])
