"""Whole models whose parameters are not one layer's own: used twice, tied, used by another module, computed.

References in float64 from ``torch.func`` on the model itself (``functional_call`` keeps tied
weights tied): each sample's gradient of its term of the loss, and ``diag(J^T H J)`` with ``J``
the Jacobian of the whole batch output w.r.t. the parameter and ``H`` the loss Hessian.

- a layer called twice and a weight tied between two layers: every use contributes (per-sample
  gradients sum over uses; the GGN diagonal is that of the whole Jacobian, cross terms between
  uses included); KFAC refuses them, naming the parameter and the modules;
- a parameter that a module other than a supported layer holds too: refused everywhere;
- attention: ``out_proj`` never runs its forward (its weight is used through ``F.linear``): it is
  left out with one warning, every other layer gets its curvature;
- parametrized and pruned weights: the curvature of the effective weight, keyed ``layer + ".weight"``;
- BatchNorm with batch statistics: one warning naming it.
"""

from __future__ import annotations

import warnings
from unittest import mock

import pytest
import torch
import torch.nn.utils.prune
from torch.func import functional_call

from tnconv.curvature import KFAC, diag_ggn, per_sample_grads, sqrt_ggn
from tnconv.curvature import model as model_module

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 3
LOSSES = {"ce-mean": torch.nn.CrossEntropyLoss(), "mse-sum": torch.nn.MSELoss(reduction="sum")}


def targets(loss_function: torch.nn.Module, size: int, seed: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if isinstance(loss_function, torch.nn.CrossEntropyLoss):
        return torch.randint(0, CLASSES, (size,), generator=generator)
    return torch.randn(size, CLASSES, generator=generator, dtype=torch.float64)


def references(
    model: torch.nn.Module, loss_function: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-sample gradients and GGN diagonals of every parameter, from ``torch.func``."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    size = x.shape[0]
    z = functional_call(model, params, (x,))
    divisor = 1 if loss_function.reduction == "sum" else (size if z.ndim == 2 and y.ndim == 1 else z.numel())
    total = type(loss_function)(reduction="sum")

    def term(values: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        return total(functional_call(model, values, (x[i : i + 1],)), y[i : i + 1]) / divisor

    each = [torch.func.grad(term)(params, i) for i in range(size)]
    per_sample = {name: torch.stack([grads[name] for grads in each]) for name in params}
    jacobians = torch.func.jacrev(lambda values: functional_call(model, values, (x,)))(params)
    hessian = torch.func.hessian(lambda out: loss_function(out, y))(z).reshape(z.numel(), z.numel())
    diagonals = {}
    for name, value in params.items():
        flat = jacobians[name].reshape(z.numel(), -1)
        diagonals[name] = torch.einsum("ip,ij,jp->p", flat, hessian, flat).reshape(value.shape)
    return per_sample, diagonals


class Reused(torch.nn.Module):
    """A conv called twice, two Linear layers that share one weight (their biases apart), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 4)
        self.second.weight = self.first.weight
        self.head = torch.nn.Linear(2 * 4 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(torch.tanh(self.conv(x))))  # (N, 2, 4, 4)
        h = torch.tanh(self.second(torch.tanh(self.first(h))))  # Linear on (N, 2, 4, 4): locations (2, 4)
        return self.head(h.flatten(1))


def reused() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Reused().double(), torch.randn(3, 2, 4, 4, dtype=torch.float64)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_use_of_a_parameter_contributes(loss):
    model, x = reused()
    loss_function = LOSSES[loss]
    y = targets(loss_function, x.shape[0])
    grads, diagonal = per_sample_grads(model, loss_function, x, y), diag_ggn(model, loss_function, x, y)
    expected_grads, expected_diagonal = references(model, loss_function, x, y)
    assert set(grads) == set(diagonal) == set(expected_grads)  # "second.weight" is "first.weight"
    for name in expected_grads:
        torch.testing.assert_close(grads[name], expected_grads[name], **TOL)
        torch.testing.assert_close(diagonal[name], expected_diagonal[name], **TOL)


@pytest.mark.parametrize("chunk", [1, 10**9])
def test_monte_carlo_diagonal_of_a_parameter_used_twice_sums_the_uses_before_squaring(chunk):
    """``sum_{m,n} (J_n^T s[m, n])^2`` for the drawn columns ``s`` (the same generator draws them again here), with
    ``J_n`` sample n's whole Jacobian: every use in it. Columns one at a time or all at once (``SHARED_CHUNK``)."""
    model, x = reused()
    loss_function = LOSSES["ce-mean"]
    y = targets(loss_function, x.shape[0])
    with mock.patch.object(model_module, "SHARED_CHUNK", chunk):
        got = diag_ggn(model, loss_function, x, y, mc_samples=3, generator=torch.Generator().manual_seed(0))
    params = {name: p.detach() for name, p in model.named_parameters()}
    output, vjp = torch.func.vjp(lambda values: functional_call(model, values, (x,)), params)
    columns = sqrt_ggn(output, "cross_entropy", "mean", mc_samples=3, generator=torch.Generator().manual_seed(0))
    expected = {name: torch.zeros_like(value) for name, value in params.items()}
    for column in columns:
        for n in range(x.shape[0]):
            (each,) = vjp(torch.zeros_like(column).index_copy(0, torch.tensor([n]), column[n : n + 1]))
            for name in expected:
                expected[name] += each[name].square()
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOL)


def test_kfac_refuses_shared_weights_naming_parameter_and_modules():
    model, x = reused()
    with pytest.raises(ValueError, match=r"parameter 'first.weight' is shared by the modules \['first', 'second'\]"):
        KFAC(model, LOSSES["ce-mean"])
    model.second.weight = torch.nn.Parameter(model.first.weight.detach().clone())
    kfac = KFAC(model, LOSSES["ce-mean"])
    with pytest.raises(ValueError, match=r"layer 'conv' \(parameters \['conv.weight', 'conv.bias'\]\) ran 2 times"):
        kfac.update(x, targets(LOSSES["ce-mean"], x.shape[0]))
    assert kfac.count == 0 and kfac.version == 0 and not kfac.factors


def test_a_parameter_held_by_an_unsupported_module_is_refused():
    """A Linear head tied to an Embedding (as language models tie them): the embedding's use would be missing."""
    torch.manual_seed(0)
    embedding, head = torch.nn.Embedding(CLASSES, 4), torch.nn.Linear(4, CLASSES)
    head.weight = embedding.weight
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), head).double()
    model.embedding = embedding.double()
    x, y = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0, 1, 2])
    message = r"parameter '2.weight' is shared by the modules \['2', 'embedding'\]: \['embedding'\] is not a supported"
    for function in (per_sample_grads, diag_ggn):
        with pytest.raises(ValueError, match=message):
            function(model, LOSSES["ce-mean"], x, y)
    with pytest.raises(ValueError, match=r"parameter '2.weight' is shared by the modules \['2', 'embedding'\]"):
        KFAC(model, LOSSES["ce-mean"])


class Attention(torch.nn.Module):
    """A Linear on a sequence, a transformer encoder layer (self-attention, its out_proj used by F.linear), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.encoder = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(2 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).flatten(1))


def test_attention_layers_whose_forward_never_runs_are_left_out_with_one_warning():
    torch.manual_seed(0)
    model = Attention().double()
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    loss_function = LOSSES["ce-mean"]
    y = targets(loss_function, 3)
    ran = ["embed", "encoder.linear1", "encoder.linear2", "head"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grads = per_sample_grads(model, loss_function, x, y)
        diagonal = diag_ggn(model, loss_function, x, y)
        kfac = KFAC(model, loss_function)
        kfac.update(x, y)
    messages = [str(w.message) for w in caught if "did not run" in str(w.message)]
    assert messages == ["layers ['encoder.self_attn.out_proj'] did not run in the forward pass (another module may use "
                        "their parameters, as nn.MultiheadAttention uses its out_proj through F.linear): they get no "
                        "curvature"] * 3
    assert list(kfac.factors) == [key for name in ran for key in (name, name + ".bias")]
    expected_grads, expected_diagonal = references(model, loss_function, x, y)
    keys = [f"{name}.{kind}" for name in ran for kind in ("weight", "bias")]
    assert list(grads) == list(diagonal) == keys
    for key in keys:
        torch.testing.assert_close(grads[key], expected_grads[key], **TOL)
        torch.testing.assert_close(diagonal[key], expected_diagonal[key], **TOL)
    model.zero_grad()
    loss_function(model(x), y).backward()
    kfac.preconditioner(0.1).step()  # out_proj has no factors: its gradient stays as it is
    out_proj = model.encoder.self_attn.out_proj.weight
    torch.testing.assert_close(out_proj.grad, torch.func.grad(lambda w: loss_function(functional_call(
        model, {"encoder.self_attn.out_proj.weight": w}, (x,)), y))(out_proj.detach()), **TOL)  # fmt: skip


def parametrized_and_twin() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A weight-normed conv, a pruned conv and a spectral-normed Linear (eval mode: no power iteration in the
    forward), and a plain twin holding their effective weights."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 3, 2), torch.nn.Flatten(),
        torch.nn.Linear(27, CLASSES),
    ).double()  # fmt: skip
    torch.nn.utils.parametrizations.weight_norm(model[0])
    torch.nn.utils.prune.random_unstructured(model[2], "weight", amount=0.4)
    torch.nn.utils.parametrizations.spectral_norm(model[4])
    model.eval()
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 3, 2), torch.nn.Flatten(),
        torch.nn.Linear(27, CLASSES),
    ).double()  # fmt: skip
    with torch.no_grad():
        for index in (0, 2, 4):
            twin[index].weight.copy_(model[index].weight)
            twin[index].bias.copy_(model[index].bias)
    return model, twin


def test_parametrized_and_pruned_weights_get_the_curvature_of_their_effective_weight():
    model, twin = parametrized_and_twin()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    loss_function = LOSSES["ce-mean"]
    y = targets(loss_function, 3)
    expected_grads, expected_diagonal = references(twin, loss_function, x, y)
    grads, diagonal = per_sample_grads(model, loss_function, x, y), diag_ggn(model, loss_function, x, y)
    assert list(grads) == list(diagonal) == list(expected_grads)  # "0.weight": the effective weight's key
    for key in expected_grads:
        torch.testing.assert_close(grads[key], expected_grads[key], **TOL)
        torch.testing.assert_close(diagonal[key], expected_diagonal[key], **TOL)
    kfac, reference = KFAC(model, loss_function, separate_bias=False), KFAC(twin, loss_function, separate_bias=False)
    kfac.update(x, y)
    reference.update(x, y)
    torch.testing.assert_close(kfac.factors, reference.factors, **TOL)
    gradients = {key: value.sum(0) for key, value in expected_grads.items()}
    torch.testing.assert_close(kfac.preconditioner(0.1)(gradients), reference.preconditioner(0.1)(gradients), **TOL)
    model.zero_grad()
    loss_function(model(x), y).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    kfac.preconditioner(0.1).step()  # the weights' .grad belong to g, v, weight_orig: those layers are left alone
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, before[name], rtol=0, atol=0)


def test_batch_statistics_give_one_warning_naming_the_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                torch.nn.Linear(12, CLASSES)).double()  # fmt: skip
    x, y = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with pytest.warns(UserWarning, match=r"BatchNorm layers \['1'\] normalise with batch statistics") as caught:
        grads = per_sample_grads(model, LOSSES["ce-mean"], x, y)
    assert len([w for w in caught if "BatchNorm" in str(w.message)]) == 1
    model.zero_grad()
    LOSSES["ce-mean"](model(x), y).backward()
    for name in ("0.weight", "3.bias"):  # their sum is the batch gradient all the same
        torch.testing.assert_close(grads[name].sum(0), dict(model.named_parameters())[name].grad, **TOL)
    with pytest.warns(UserWarning, match=r"BatchNorm layers \['1'\]"):
        diag_ggn(model, LOSSES["ce-mean"], x, y)
    with pytest.warns(UserWarning, match=r"BatchNorm layers \['1'\]"):
        KFAC(model, LOSSES["ce-mean"]).update(x, y)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_sample_grads(model, LOSSES["ce-mean"], x, y)
