"""GGN diagonals of a small CNN against the GGN built with torch.func, and the sqrt_ggn helper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.references import flat_jacobian, random

from tnconv import curvature

TOL = dict(rtol=1e-10, atol=1e-12)
CONV = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
TRANSPOSED = dict(stride=2, padding=1, output_padding=1, groups=3)


def cnn(params: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """conv (groups, stride, dilation) -> tanh -> transposed conv (groups, output_padding) -> tanh -> linear.

    Returns the layer inputs and outputs and the logits.
    """
    h1 = F.conv2d(x, params["w1"], **CONV)
    a1 = torch.tanh(h1)
    h2 = F.conv_transpose2d(a1, params["w2"], **TRANSPOSED)
    return {"h1": h1, "a1": a1, "h2": h2, "logits": head(params, h2)}


def setup(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    x = random((3, 4, 7, 5), seed)
    params = {"w1": random((6, 2, 2, 2), seed + 1), "w2": random((6, 1, 3, 2), seed + 2)}
    h2_shape = F.conv_transpose2d(
        torch.tanh(F.conv2d(x, params["w1"], **CONV)), params["w2"], **TRANSPOSED
    ).shape
    params["w3"] = random((5, h2_shape[1] * h2_shape[2] * h2_shape[3]), seed + 3) / 4
    return params, x


def ggn_diagonals_torch_func(params, x, loss: str) -> dict[str, torch.Tensor]:
    """``diag(J^T H J)`` for w1 and w2 with J from torch.func.jacrev and H from torch.func.hessian."""
    logits = cnn(params, x)["logits"]
    targets = logits.argmax(1) if loss == "cross_entropy" else torch.zeros_like(logits)
    loss_fn = (lambda z: F.cross_entropy(z, targets)) if loss == "cross_entropy" else (lambda z: F.mse_loss(z, targets))
    hessian = torch.func.hessian(loss_fn)(logits).reshape(logits.numel(), logits.numel())
    result = {}
    for name in ("w1", "w2"):
        jacobian = flat_jacobian(lambda w: cnn({**params, name: w}, x)["logits"], params[name])
        ggn = jacobian.T @ hessian @ jacobian
        result[name] = ggn.diagonal().reshape(params[name].shape)
    return result


def ggn_diagonals_tnconv(params, x, loss: str, mc_samples: int | None = None) -> dict[str, torch.Tensor]:
    """DiagGGN: sqrt_ggn of the loss, pulled back to each layer output, into diag_ggn_weight."""
    out = cnn(params, x)
    columns = curvature.sqrt_ggn(
        out["logits"], loss, mc_samples=mc_samples, generator=torch.Generator().manual_seed(7)
    )
    s1 = curvature.pullback(columns, lambda h1: after_conv(params, h1), out["h1"])
    s2 = curvature.pullback(columns, lambda h2: head(params, h2), out["h2"])
    return {
        "w1": curvature.diag_ggn_weight(x, s1, params["w1"].shape[2:], **CONV),
        "w2": curvature.diag_ggn_weight(out["a1"], s2, params["w2"].shape[2:], transposed=True, **TRANSPOSED),
    }


def head(params, h2: torch.Tensor) -> torch.Tensor:
    """The logits from the transposed conv's output."""
    return torch.tanh(h2).flatten(1) @ params["w3"].T


def after_conv(params, h1: torch.Tensor) -> torch.Tensor:
    """The logits from the first conv's output."""
    return head(params, F.conv_transpose2d(torch.tanh(h1), params["w2"], **TRANSPOSED))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_diag_ggn_of_a_cnn_equals_torch_func_ggn(loss):
    params, x = setup()
    expected = ggn_diagonals_torch_func(params, x, loss)
    got = ggn_diagonals_tnconv(params, x, loss)
    for name in ("w1", "w2"):
        assert got[name].shape == params[name].shape
        torch.testing.assert_close(got[name], expected[name], **TOL)


def test_monte_carlo_diag_ggn_converges_to_the_exact_one():
    params, x = setup(1)
    exact = ggn_diagonals_tnconv(params, x, "cross_entropy")
    sampled = ggn_diagonals_tnconv(params, x, "cross_entropy", mc_samples=4000)
    for name in ("w1", "w2"):
        error = (sampled[name] - exact[name]).norm() / exact[name].norm()
        assert error < 0.1, (name, error)
        assert not torch.allclose(sampled[name], exact[name], rtol=1e-6)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sqrt_ggn_factorises_the_loss_hessian(loss, reduction):
    logits = random((3, 4), 2)
    targets = torch.tensor([0, 3, 1]) if loss == "cross_entropy" else random((3, 4), 3)
    function = F.cross_entropy if loss == "cross_entropy" else F.mse_loss
    hessian = torch.func.hessian(lambda z: function(z, targets, reduction=reduction))(logits)  # (N, C, N, C)
    columns = curvature.sqrt_ggn(logits, loss, reduction)
    assert columns.shape == (4, 3, 4)
    blocks = torch.einsum("mnc,mnd->ncd", columns, columns)
    expected = torch.stack([hessian[n, :, n, :] for n in range(3)])
    torch.testing.assert_close(blocks, expected, **TOL)
    off_diagonal = hessian.clone()
    for n in range(3):
        off_diagonal[n, :, n, :] = 0
    assert off_diagonal.abs().max() == 0  # samples are independent: per-sample blocks are the whole Hessian


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_monte_carlo_sqrt_ggn_is_unbiased(loss):
    logits = random((2, 3), 4)
    exact = curvature.sqrt_ggn(logits, loss)
    sampled = curvature.sqrt_ggn(logits, loss, mc_samples=40000, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (40000, 2, 3)
    got = torch.einsum("mnc,mnd->ncd", sampled, sampled)
    expected = torch.einsum("mnc,mnd->ncd", exact, exact)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.03 * expected.abs().max().item())
    again = curvature.sqrt_ggn(logits, loss, mc_samples=40000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, sampled, rtol=0, atol=0)


def test_sqrt_ggn_bad_arguments():
    logits = random((2, 3), 0)
    with pytest.raises(ValueError, match="loss"):
        curvature.sqrt_ggn(logits, "hinge")
    with pytest.raises(ValueError, match="reduction"):
        curvature.sqrt_ggn(logits, reduction="none")
    with pytest.raises(ValueError, match="mc_samples"):
        curvature.sqrt_ggn(logits, mc_samples=0)
    with pytest.raises(ValueError, match="output"):
        curvature.sqrt_ggn(logits[0])
    with pytest.raises(ValueError, match="output"):
        curvature.sqrt_ggn(logits[:0])
    with pytest.raises(TypeError, match="output"):
        curvature.sqrt_ggn(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="function"):
        curvature.pullback(curvature.sqrt_ggn(logits), "f", logits)


def test_generator_must_be_a_torch_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got 123"):
        curvature.sqrt_ggn(random((2, 3), 0), mc_samples=2, generator=123)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_monte_carlo_columns_need_finite_logits(bad):
    logits = random((3, 4), 0)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match=r"output \(the logits\) must be finite.*1 NaN or inf entry"):
        curvature.sqrt_ggn(logits, mc_samples=2)


def test_pullback_columns_must_match_the_model_output():
    layer_output = random((3, 4), 0)
    columns = random((2, 3, 5), 1)
    with pytest.raises(ValueError, match=r"columns must have shape \(M, \*function\(layer_output\).shape\) = \(M, 3, 4\), got \(2, 3, 5\)"):
        curvature.pullback(columns, lambda z: 2 * z, layer_output)
    with pytest.raises(TypeError, match="function must return one tensor"):
        curvature.pullback(columns, lambda z: (z, z), layer_output)
    torch.testing.assert_close(curvature.pullback(columns[..., :4], lambda z: 2 * z, layer_output), 2 * columns[..., :4])
