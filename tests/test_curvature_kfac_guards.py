"""KFAC guards its factors: batches that are not finite are refused, loaded states are checked, and the
preconditioner names the layer and group it cannot factorise; only the documented methods are public."""

from __future__ import annotations

import math

import pytest
import torch

from tnconv.curvature import KFAC, Preconditioner

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 3


def model_of(dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A grouped conv, a Linear on its flattened output, a Linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1, groups=2), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(64, 6),
        torch.nn.Tanh(), torch.nn.Linear(6, CLASSES),
    ).to(dtype)  # fmt: skip


def data(seed: int, dtype: torch.dtype = torch.float64, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 2, 4, 4, generator=generator, dtype=dtype), torch.randn(
        size, CLASSES, generator=generator, dtype=dtype)  # fmt: skip


def snapshot(kfac: KFAC) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
    return {name: (None if a is None else a.clone(), b.clone()) for name, (a, b) in kfac.factors.items()}


def assert_refused(kfac: KFAC, before: dict, count: int, version: int) -> None:
    """The factors, count and version are as they were before the refused batch."""
    assert (kfac.count, kfac.version) == (count, version)
    torch.testing.assert_close(kfac.factors, before, rtol=0, atol=0)


@pytest.mark.parametrize("settings", [{}, {"approx": "reduce", "separate_bias": False}, {"ema_decay": 0.5}])
def test_batches_that_are_not_finite_are_refused_and_change_nothing(settings):
    loss = torch.nn.MSELoss()
    kfac, reference = KFAC(model_of(), loss, **settings), KFAC(model_of(), loss, **settings)
    for seed in (1, 2):
        kfac.update(*data(seed))
        reference.update(*data(seed))
    before, count, version = snapshot(kfac), kfac.count, kfac.version
    x, y = data(3)
    bad_x, bad_y = x.clone(), y.clone()
    bad_x[1, 0, 2, 2], bad_y[2, 1] = math.nan, math.inf
    with pytest.raises(ValueError, match=r"inputs must be finite, got 1 NaN or inf entry in shape \(4, 2, 4, 4\)"):
        kfac.update(bad_x, y)
    assert_refused(kfac, before, count, version)
    with pytest.raises(ValueError, match=r"targets must be finite, got 1 NaN or inf entry"):
        kfac.update(x, bad_y)
    assert_refused(kfac, before, count, version)
    with torch.no_grad():
        kfac.model[3].weight[0, 0] = math.nan  # every output NaN: the columns pulled back to the first layer too
    with pytest.raises(ValueError, match=r"the batch's factor B of layer '0' is not finite \(NaN or inf in the "
                                         r"layer's output gradients"):
        kfac.update(x, y)
    assert_refused(kfac, before, count, version)
    with torch.no_grad():
        kfac.model[3].weight.copy_(reference.model[3].weight)
    kfac.update(x, y)  # the refused batches left no trace
    reference.update(x, y)
    torch.testing.assert_close(kfac.factors, reference.factors, **TOL)
    assert kfac.count == reference.count == 12


def test_a_factor_too_large_for_its_dtype_is_refused():
    """float32 inputs of about 1e17 give an A of about 1e34 (kept), inputs of 1e20 one of 1e40 (inf in float32)."""
    kfac = KFAC(model_of(torch.float32), torch.nn.MSELoss())
    x, y = data(1, torch.float32)
    kfac.update(x * 1e17, y)
    a = kfac.factors["0"][0]
    assert bool(a.isfinite().all()) and a.abs().max() > 1e33
    before, count, version = snapshot(kfac), kfac.count, kfac.version
    with pytest.raises(ValueError, match=r"factor A of layer '0' is not finite \(NaN or inf in the layer's inputs, or "
                                         r"too large to sum in torch.float32\)"):
        kfac.update(x * 1e20, y)
    assert_refused(kfac, before, count, version)


def test_loaded_factors_must_have_the_shapes_dtypes_and_values_of_an_update():
    kfac = KFAC(model_of(), torch.nn.MSELoss(), separate_bias=False)
    kfac.update(*data(1))
    state = kfac.state_dict()

    def loading(name: str, pair: tuple) -> KFAC:
        fresh = KFAC(model_of(), torch.nn.MSELoss(), separate_bias=False)
        fresh.load_state_dict({**state, "factors": {**state["factors"], name: pair}})
        return fresh

    a, b = state["factors"]["0"]
    with pytest.raises(ValueError, match=r"layer '0' needs A of shape \(2, 10, 10\) in torch.float64, got \(1, 10, "):
        loading("0", (a[:1], b))
    with pytest.raises(ValueError, match=r"layer '0' needs B of shape \(2, 2, 2\) in torch.float64, got \(2, 2, 2\) in "
                                         r"torch.float32"):
        loading("0", (a, b.float()))
    bad = b.clone()
    bad[1, 0, 1] = math.nan
    with pytest.raises(ValueError, match=r"state\['factors'\]\['0'\]: layer '0' needs a finite B, got NaN or inf"):
        loading("0", (a, bad))
    with pytest.raises(ValueError, match=r"must hold some of the layers \['0', '3', '5'\], got \['0', '3', '5', '9'\]"):
        loading("9", (a, b))
    with pytest.raises(ValueError, match=r"state\['factors'\]\['3'\] must be a pair"):
        loading("3", (a,))
    half = KFAC(model_of(torch.bfloat16), torch.nn.MSELoss())
    half.update(*data(1, torch.bfloat16))
    half_state = half.state_dict()
    KFAC(model_of(torch.bfloat16), torch.nn.MSELoss()).load_state_dict(half_state)  # float32 factors: as update
    narrowed = tuple(factor.bfloat16() for factor in half_state["factors"]["5"])
    with pytest.raises(ValueError, match=r"layer '5' needs A of shape \(1, 6, 6\) in torch.float32"):
        KFAC(model_of(torch.bfloat16), torch.nn.MSELoss()).load_state_dict(
            {**half_state, "factors": {**half_state["factors"], "5": narrowed}})


def test_the_preconditioner_names_the_layer_and_group_it_cannot_factorise():
    kfac = KFAC(model_of(), torch.nn.MSELoss())
    kfac.update(*data(1))
    state = kfac.state_dict()
    a, b = state["factors"]["0"]
    negative = a.clone()
    negative[1] = -torch.eye(a.shape[-1], dtype=a.dtype)  # finite, symmetric, not positive definite after damping
    kfac.load_state_dict({**state, "factors": {**state["factors"], "0": (negative, b)}})
    gradients = {name: torch.ones_like(p) for name, p in kfac.model.named_parameters()}
    with pytest.raises(ValueError, match=r"layer '0', group 1: its factor A \+ damping \* I \(damping=0.5\) is not "
                                         r"positive definite"):
        kfac.preconditioner(0.5)(gradients)
    assert set(kfac.preconditioner(2.0)(gradients)) == set(gradients)  # enough damping: positive definite again
    kfac.factors["3"][1][0, 0, 0] = math.inf  # the live tensors, as a diverging run could leave them
    with pytest.raises(ValueError, match=r"layer '3': its factor B is not finite"):
        kfac.preconditioner(2.0)(gradients)


class Branching(torch.nn.Module):
    """A model whose second Linear runs only when ``deep`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.deep = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x))) if self.deep else self.first(x)


def test_every_batch_must_run_the_layers_that_hold_factors():
    torch.manual_seed(0)
    model = Branching().double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    kfac = KFAC(model, torch.nn.CrossEntropyLoss())
    kfac.update(x, y)
    before, count, version = snapshot(kfac), kfac.count, kfac.version
    model.deep = False
    with pytest.warns(UserWarning, match=r"layers \['second'\] did not run"), pytest.raises(
        ValueError, match=r"\['second'\] have factors but did not run, \[\] ran but have none"
    ):
        kfac.update(x, y)
    assert_refused(kfac, before, count, version)
    shallow = KFAC(model, torch.nn.CrossEntropyLoss())
    with pytest.warns(UserWarning, match="did not run"):
        shallow.update(x, y)
    assert list(shallow.factors) == ["first", "first.bias"]
    model.deep = True
    with pytest.raises(ValueError, match=r"\[\] have factors but did not run, \['second'\] ran but have none"):
        shallow.update(x, y)


def test_only_the_documented_methods_are_public():
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(KFAC) == {"update", "factors", "preconditioner", "state_dict", "load_state_dict"}
    assert public(Preconditioner) == {"step"}
