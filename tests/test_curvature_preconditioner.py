"""KFAC's preconditioner: inverses reused for ``invert_every`` calls, a new damping at once, layers of one shape
batched (with and without all their gradients), and bad settings."""

from __future__ import annotations

import copy

import pytest
import torch

from tnconv.curvature import KFAC
from tnconv.curvature.factors import bias_matrix, layout, matrix_weight, weight_matrix
from tnconv.curvature.inverses import damped_inverse, symmetrized_into

TOL = dict(rtol=1e-10, atol=1e-12)
LOSS = torch.nn.CrossEntropyLoss()


def model_of() -> torch.nn.Module:
    """Two Linear layers of one shape and two grouped convs of one shape (batched), and a head of its own."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1, groups=2), torch.nn.Tanh(), torch.nn.Conv2d(4, 4, 3, padding=1, groups=2),
        torch.nn.Flatten(), torch.nn.Linear(64, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
        torch.nn.Linear(6, 6, bias=False), torch.nn.Tanh(), torch.nn.Linear(6, 3),
    ).double()  # fmt: skip


def data(seed: int, size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 2, 4, 4, generator=generator, dtype=torch.float64), torch.randint(
        0, 3, (size,), generator=generator)  # fmt: skip


def explicit(factors: dict, kfac: KFAC, gradients: dict[str, torch.Tensor], damping: float) -> dict[str, torch.Tensor]:
    """``(B + damping I)^{-1} G (A + damping I)^{-1}`` with dense inverses of ``factors`` (``KFAC.factors``)."""

    def inverse(factor: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(factor + damping * torch.eye(factor.shape[-1], dtype=factor.dtype))

    result = {}
    for layer in kfac.layers:
        a, b = factors[layer.name]
        grid = layout(layer.module)
        joined = layer.bias is not None and not kfac.separate_bias
        if layer.weight in gradients:
            matrix = weight_matrix(gradients[layer.weight], grid)
            if joined:
                matrix = torch.cat([matrix, bias_matrix(gradients[layer.bias], grid)], dim=2)
            solved = inverse(b) @ matrix @ inverse(a)
            if joined:
                result[layer.bias] = solved[:, :, -1].reshape(-1)
                solved = solved[:, :, :-1]
            result[layer.weight] = matrix_weight(solved, grid, layer.weight_shape)
        if layer.bias is not None and not joined and layer.bias in gradients:
            result[layer.bias] = (inverse(b) @ bias_matrix(gradients[layer.bias], grid)).reshape(-1)
    return result


def gradients_of(model: torch.nn.Module, seed: int = 9) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=generator, dtype=p.dtype) for name, p in model.named_parameters()}


@pytest.mark.parametrize("separate_bias", [True, False])
def test_layers_of_one_shape_are_batched_with_or_without_all_their_gradients(separate_bias):
    model = model_of()
    kfac = KFAC(model, LOSS, separate_bias=separate_bias)
    kfac.update(*data(1))
    preconditioner = kfac.preconditioner(0.1)
    gradients = gradients_of(model)
    torch.testing.assert_close(preconditioner(gradients), explicit(kfac.factors, kfac, gradients, 0.1), **TOL)
    some = {name: g for name, g in gradients.items() if not name.startswith(("2.", "8."))}  # one of each pair
    got = preconditioner(some)
    assert set(got) == set(some)
    torch.testing.assert_close(got, explicit(kfac.factors, kfac, some, 0.1), **TOL)


def test_inverses_are_reused_for_invert_every_calls_and_a_new_damping_takes_effect_at_once():
    model = model_of()
    kfac = KFAC(model, LOSS, ema_decay=0.5)
    kfac.update(*data(1))
    first_factors = copy.deepcopy(kfac.factors)
    preconditioner = kfac.preconditioner(0.1, invert_every=3)
    gradients = gradients_of(model)
    outcomes = []
    for seed in (2, 3, 4):  # calls 0, 1, 2 use the inverses of call 0; each after the factors moved
        outcomes.append(preconditioner(gradients))
        kfac.update(*data(seed))
    for outcome in outcomes:
        torch.testing.assert_close(outcome, explicit(first_factors, kfac, gradients, 0.1), **TOL)
    torch.testing.assert_close(preconditioner(gradients), explicit(kfac.factors, kfac, gradients, 0.1), **TOL)
    kfac.update(*data(5))
    preconditioner.damping = 0.3  # call 4: not due, but the damping changed
    torch.testing.assert_close(preconditioner(gradients), explicit(kfac.factors, kfac, gradients, 0.3), **TOL)
    kfac.update(*data(6))
    now = copy.deepcopy(kfac.factors)
    model.zero_grad()
    LOSS(model(data(7)[0]), data(7)[1]).backward()
    expected = explicit(now, kfac, {name: p.grad.clone() for name, p in model.named_parameters()}, 0.3)
    preconditioner.step()  # call 5: reuses the inverses of call 4
    assert not torch.allclose(model[10].weight.grad, expected["10.weight"])
    expected = explicit(now, kfac, {name: p.grad.clone() for name, p in model.named_parameters()}, 0.3)
    preconditioner.step()  # call 6: due, with the factors of now
    torch.testing.assert_close(model[10].weight.grad, expected["10.weight"], **TOL)
    with pytest.raises(ValueError, match="damping must be a finite number > 0, got 0"):
        preconditioner.damping = 0
    assert preconditioner.damping == 0.3


@pytest.mark.parametrize(("invert_every", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_invert_every_is_rejected(invert_every, error):
    kfac = KFAC(model_of(), LOSS)
    with pytest.raises(error, match="invert_every"):
        kfac.preconditioner(0.1, invert_every=invert_every)


def test_half_gradients_are_preconditioned_in_float32_and_returned_in_their_dtype():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6)).bfloat16()
    kfac = KFAC(model, torch.nn.MSELoss())
    x = torch.randn(8, 6, dtype=torch.bfloat16)
    kfac.update(x, torch.randn(8, 6, dtype=torch.bfloat16))
    gradients = gradients_of(model)
    got = kfac.preconditioner(0.1)(gradients)
    wide = {name: g.float() for name, g in gradients.items()}
    expected = explicit(kfac.factors, kfac, wide, 0.1)
    for name, value in got.items():
        assert value.dtype == torch.bfloat16
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(value.float(), expected[name], rtol=1e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("d", [5, 64])  # a batched transposed copy, and one blocked copy per group
def test_damped_inverses_symmetrise_in_place_and_fall_back_per_group(d):
    """``inverses.damped_inverse`` forms ``(F + F^T) / 2 + damping I`` in its output, exactly symmetric, inverts it
    by Cholesky, and a group that is not positive definite by its clamped eigen-decomposition (read before the
    inverse overwrites the output)."""
    generator = torch.Generator().manual_seed(d)
    square = torch.randn(3, d, d, generator=generator, dtype=torch.float64)
    skew = torch.randn(3, d, d, generator=generator, dtype=torch.float64)
    factor = square @ square.mT / d + skew - skew.mT  # not symmetric; its symmetric part positive definite
    factor[1] = -torch.eye(d, dtype=torch.float64)  # eigenvalues -1: clamped to 0
    out = torch.empty_like(factor)
    assert symmetrized_into(out.clone(), factor).equal(symmetrized_into(out, factor).mT)
    torch.testing.assert_close(out, (factor + factor.mT) / 2, **TOL)
    damping = 0.5
    assert damped_inverse(factor, damping, out, "layer", "A") == [1]
    expected = torch.linalg.inv((factor + factor.mT) / 2 + damping * torch.eye(d, dtype=torch.float64))
    expected[1] = torch.eye(d, dtype=torch.float64) / damping
    torch.testing.assert_close(out, expected, **TOL)
