"""tnconv.nn.approximate_backprop: conv weight gradients become tensor-dropout estimates, all else stays exact."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import tnconv
from tnconv.curvature import KFAC, diag_ggn, per_sample_grads
from tnconv.nn import approximate_backprop

MODES = ("channel", "rows", "spatial")
TOL = dict(rtol=1e-10, atol=1e-12)


def models() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """Small float64 models of every supported kind of layer, with their input shapes."""
    torch.manual_seed(0)
    two = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.Tanh(),
        tnconv.nn.Conv2d(4, 4, (3, 2), stride=(2, 1), padding=((1, 0), (1, 1)), dilation=(1, 2)),
        torch.nn.Conv2d(4, 4, 3, groups=4, padding="same", padding_mode="reflect"),  # depthwise
        torch.nn.Tanh(),
        torch.nn.Conv2d(4, 6, 2, groups=2, padding=1, padding_mode="circular"),
        torch.nn.ConvTranspose2d(6, 2, 2, stride=2),  # not supported: stays exact
    )
    one = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2, padding_mode="replicate"),
        torch.nn.Tanh(),
        tnconv.nn.Conv1d(4, 2, 1, bias=False),
    )
    three = torch.nn.Sequential(
        torch.nn.Conv3d(2, 2, 2, padding=1), torch.nn.Tanh(), tnconv.nn.ConvNd(3, 2, 4, 3, padding="same", groups=2)
    )
    four = torch.nn.Sequential(tnconv.nn.ConvNd(4, 2, 4, (2, 1, 2, 2), stride=(1, 1, 2, 1), padding=1))
    return {
        "2d": (two.double(), (3, 2, 9, 8)),
        "1d": (one.double(), (3, 2, 11)),
        "3d": (three.double(), (2, 2, 5, 4, 3)),
        "4d": (four.double(), (2, 2, 4, 3, 5, 3)),
        "unbatched": (one.double(), (2, 11)),
    }


MODELS = tuple(models())


def gradients(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradients of ``<model(x), fixed weights>`` w.r.t. the parameters and ``x`` (key ``"input"``)."""
    model.zero_grad()
    x = x.detach().requires_grad_(True)
    output = model(x)
    target = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype).to(output.device)
    (output * target).sum().backward()
    found = {name: p.grad.clone() for name, p in model.named_parameters()}
    found["input"] = x.grad.clone()
    return found


def conv_weights(model: torch.nn.Module) -> set[str]:
    """The names of the weights whose gradients are estimated (supported conv layers)."""
    supported = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, tnconv.nn.ConvNd)
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, supported)}


def random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def exact_and_estimated(
    kind: str, keep: float, mode: str
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A model of ``models()``, its exact gradients, and its gradients under ``approximate_backprop`` (then removed)."""
    model, shape = models()[kind]
    x = random(shape, 0)
    exact = gradients(model, x)
    with approximate_backprop(model, keep, mode, torch.Generator().manual_seed(1)) as handle:
        assert set(handle.layers) == {name.removesuffix(".weight") for name in conv_weights(model)}
        got = gradients(model, x)
    return model, exact, got


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_keep_one_gives_the_exact_gradients(kind, mode):
    _, exact, got = exact_and_estimated(kind, 1.0, mode)
    for name in exact:
        torch.testing.assert_close(got[name], exact[name], **TOL)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_only_conv_weight_gradients_change(kind, mode):
    """Input, bias and other gradients stay exact; each conv weight gradient is a (random) other value."""
    model, exact, got = exact_and_estimated(kind, 0.5, mode)
    estimated = conv_weights(model)
    for name in exact:
        if name in estimated:
            assert got[name].shape == exact[name].shape and not torch.equal(got[name], exact[name])
        else:
            torch.testing.assert_close(got[name], exact[name], **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_remove_restores_exact_gradients(mode):
    model, shape = models()["2d"]
    x = random(shape, 0)
    exact = gradients(model, x)
    handle = approximate_backprop(model, 0.3, mode)
    gradients(model, x)
    handle.remove()
    handle.remove()  # a second remove does nothing
    assert not any("forward" in vars(m) for m in model.modules())
    got = gradients(model, x)
    assert all(torch.equal(got[name], exact[name]) for name in exact)
    approximate_backprop(model, 0.5, mode).remove()  # the layers can be replaced again


@pytest.mark.parametrize("kind", MODELS)
def test_channel_estimates_are_whole_channels_of_the_exact_gradient_scaled(kind):
    """Every layer's estimate is its own exact weight gradient with some input channels dropped, the rest / keep."""
    model, exact, got = exact_and_estimated(kind, 0.5, "channel")
    kept = []
    for name in conv_weights(model):
        groups = model.get_submodule(name.removesuffix(".weight")).groups
        by_group = [gradient.unflatten(0, (groups, -1)) for gradient in (got[name], exact[name])]
        for group in range(groups):
            for channel in range(exact[name].shape[1]):
                piece, whole = (gradient[group, :, channel] for gradient in by_group)
                kept.append(bool(piece.abs().max() > 0))
                if kept[-1]:
                    torch.testing.assert_close(piece, whole / 0.5, **TOL)
    assert any(kept) and not all(kept)


@pytest.mark.parametrize("mode", MODES)
def test_mean_of_many_steps_is_the_exact_gradient(mode):
    """Over 200 backward passes the weight gradient's mean is within 5 standard errors of the exact one."""
    model = torch.nn.Sequential(torch.nn.Conv2d(6, 4, 3, padding=1, groups=2)).double()
    x = random((2, 6, 7, 7), 0)
    exact = gradients(model, x)["0.weight"]
    steps = 200
    with approximate_backprop(model, 0.5, mode, torch.Generator().manual_seed(2)):
        draws = torch.stack([gradients(model, x)["0.weight"] for _ in range(steps)])
    mean, error = draws.mean(0), draws.std(0) / steps**0.5
    assert (error > 0).all()
    assert ((mean - exact).abs() <= 5 * error).all()
    projection = (draws * exact).flatten(1).sum(1) / exact.square().sum()
    assert 5 * projection.std() / steps**0.5 < 0.2  # resolves a 20% bias
    assert abs(projection.mean() - 1) <= 5 * projection.std() / steps**0.5


def test_the_same_generator_gives_the_same_estimates():
    model, shape = models()["2d"]
    x = random(shape, 0)
    runs = []
    for _ in range(2):
        with approximate_backprop(model, 0.5, "rows", torch.Generator().manual_seed(7)):
            runs.append([gradients(model, x)["0.weight"] for _ in range(2)])
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[0][1])  # each backward draws afresh


def test_a_layer_called_twice_gets_both_estimates():
    """Weight sharing: both calls' weight gradients are estimated and summed; keep=1 is exact."""
    layer = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    model = torch.nn.Sequential(layer, torch.nn.Tanh(), layer)
    x = random((2, 2, 6, 6), 0)
    exact = gradients(model, x)
    with approximate_backprop(model, 1.0, "channel"):
        got = gradients(model, x)
    torch.testing.assert_close(got["0.weight"], exact["0.weight"], **TOL)
    with approximate_backprop(model, 0.5, "channel", torch.Generator().manual_seed(0)):
        assert not torch.equal(gradients(model, x)["0.weight"], exact["0.weight"])


class StandardizedConv2d(torch.nn.Conv2d):
    """A conv whose own forward standardises the weight: not the computation approximate_backprop replaces."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / self.weight.std((1, 2, 3), keepdim=True)
        return self._conv_forward(input, weight, self.bias)


def test_subclasses_with_their_own_forward_stay_exact():
    model = torch.nn.Sequential(StandardizedConv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 3)).double()
    x = random((2, 2, 8, 8), 0)
    exact = gradients(model, x)
    with approximate_backprop(model, 0.5, "channel", torch.Generator().manual_seed(0)) as handle:
        assert handle.layers == ("2",)
        got = gradients(model, x)
    torch.testing.assert_close(got["0.weight"], exact["0.weight"], **TOL)
    assert not torch.equal(got["2.weight"], exact["2.weight"])


def test_frozen_weights_and_inputs_without_gradients():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 3)).double()
    model[0].weight.requires_grad_(False)
    with approximate_backprop(model, 0.5, "rows"):
        model(random((2, 2, 8, 8), 0)).sum().backward()
    assert model[0].weight.grad is None and model[0].bias.grad is not None and model[2].weight.grad is not None


def test_compiled_model_gives_the_eager_estimates():
    """Under torch.compile(fullgraph=True) the whole model, backward included, is one graph with the same draws."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), tnconv.nn.Conv2d(4, 2, 3, groups=2, stride=2)
    ).double()
    x = random((3, 2, 9, 9), 0)
    runs = []
    for compiled in (False, True):
        with approximate_backprop(model, 0.5, "rows", torch.Generator().manual_seed(3)):
            run = torch.compile(model, fullgraph=True) if compiled else model
            steps = []
            for _ in range(2):
                model.zero_grad()
                (run(x) ** 2).sum().backward()
                steps.append([p.grad.clone() for p in model.parameters()])
            runs.append(steps)
    for eager, compiled in zip(*runs):
        for a, b in zip(eager, compiled):
            torch.testing.assert_close(a, b, **TOL)
    assert not torch.equal(runs[0][0][0], runs[0][1][0])
    torch._dynamo.reset()


def torch_roundtrip(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("roundtrip", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)), torch_roundtrip],
                         ids=["deepcopy", "pickle", "torch.save"])
def test_a_copy_of_an_approximated_model_computes_with_its_own_weights_and_stream(roundtrip):
    """keep=1 (exact estimates): a copy whose weights are doubled has the gradients of the plain model with doubled
    weights, and the original gets none; keep=0.5: a copy draws what the original draws next (a copy of its
    stream), and both keep their estimates."""
    model, shape = models()["2d"]
    x = random(shape, 0)
    doubled = copy.deepcopy(model)
    with torch.no_grad():
        for p in doubled.parameters():
            p.mul_(2)
    expected = gradients(doubled, x)
    with approximate_backprop(model, 1.0, "channel"):
        twin = roundtrip(model)
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(2)
        model.zero_grad()
        got = gradients(twin, x)
        assert all(p.grad is None for p in model.parameters())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOL)
    assert any("forward" in vars(m) for m in twin.modules())  # the handle restores the original only
    with approximate_backprop(model, 0.5, "channel", torch.Generator().manual_seed(5)):
        twin = roundtrip(model)
        mine, theirs = gradients(model, x), gradients(twin, x)
        assert not torch.equal(mine["0.weight"], expected["0.weight"] / 2)
        for name in mine:
            torch.testing.assert_close(theirs[name], mine[name], **TOL)


def curvature_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 3, 3, padding=1, groups=3),
        torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 25, 4),
    ).double()  # fmt: skip


def curvature_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    loss = torch.nn.CrossEntropyLoss()
    kfac = KFAC(model, loss, fisher="mc", generator=torch.Generator().manual_seed(1))
    kfac.update(x, y)
    sampled = diag_ggn(model, loss, x, y, mc_samples=2, generator=torch.Generator().manual_seed(2))
    return {"kfac": kfac.factors, "per_sample": per_sample_grads(model, loss, x, y),
            "diag": diag_ggn(model, loss, x, y), "mc": sampled}  # fmt: skip


def test_curvature_of_approximated_and_compiled_models_is_the_exact_one():
    """KFAC, per-sample gradients and GGN diagonals pull columns back exactly, whatever the model's own backward:
    under approximate_backprop, of a torch.compile'd model (keys as its named_parameters: ``_orig_mod.``) and of
    both; the estimates stay in place and draw nothing for them."""
    torch._dynamo.reset()
    model = curvature_model()
    x, y = random((3, 2, 5, 5), 0), torch.tensor([0, 3, 1])
    expected = curvature_of(model, x, y)
    with approximate_backprop(model, 0.5, "channel", torch.Generator().manual_seed(3)) as handle:
        approximated = curvature_of(model, x, y)
        compiled = curvature_of(torch.compile(model), x, y)
        assert all("forward" in vars(model.get_submodule(name)) for name in handle.layers)
        after = gradients(model, x)["0.weight"]
    with approximate_backprop(model, 0.5, "channel", torch.Generator().manual_seed(3)):
        assert torch.equal(gradients(model, x)["0.weight"], after)  # the same first draw: curvature drew nothing
    plain_compiled = curvature_of(torch.compile(model), x, y)
    for got in (approximated, compiled, plain_compiled):
        for kind, values in expected.items():
            prefix = "" if got is approximated else "_orig_mod."
            assert list(got[kind]) == [prefix + key for key in values]
            for key, value in values.items():
                torch.testing.assert_close(got[kind][prefix + key], value, **TOL)
    torch._dynamo.reset()


def test_bad_arguments_name_themselves():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3))
    with pytest.raises(TypeError, match="model"):
        approximate_backprop("model", 0.5)
    for keep in (0, 1.5, True):
        with pytest.raises(ValueError, match="keep"):
            approximate_backprop(model, keep)
    with pytest.raises(ValueError, match="mode"):
        approximate_backprop(model, 0.5, "pixels")
    with pytest.raises(TypeError, match="generator"):
        approximate_backprop(model, 0.5, generator=0)
    with pytest.raises(ValueError, match="block_rows"):
        approximate_backprop(model, 0.5, "rows", block_rows=0)
    with pytest.raises(ValueError, match="no supported conv layer"):
        approximate_backprop(torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 2, 3), torch.nn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError, match="uninitialized"):
        approximate_backprop(torch.nn.LazyConv2d(2, 3), 0.5)
    with approximate_backprop(model, 0.5), pytest.raises(ValueError, match="'0' already"):
        approximate_backprop(model, 0.5)
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_estimates_equal_cpu_estimates(mode):
    model, shape = models()["2d"]
    x = random(shape, 0)
    with approximate_backprop(model, 0.5, mode, torch.Generator().manual_seed(4)):
        expected = gradients(model, x)
    model.cuda()
    with approximate_backprop(model, 0.5, mode, torch.Generator().manual_seed(4)):
        got = gradients(model, x.cuda())
    for name in expected:
        torch.testing.assert_close(got[name].cpu(), expected[name], **TOL)
