"""``KFAC.track()``: the factors recorded inside the caller's own training step equal ``update``'s on the same
batches (float64, every fisher and approximation), with one forward per step and the caller's ``.grad`` as they
would be without it; micro-batches, ``enabled=False``, autocast, approximate backprop, compiled models, and the
errors of a block that cannot record."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from support.models import Upsample

import tnconv.nn as tnn
from tnconv.curvature import KFAC

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 4
LOSSES = {
    "ce-mean": torch.nn.CrossEntropyLoss(), "ce-sum": torch.nn.CrossEntropyLoss(reduction="sum"),
    "mse-mean": torch.nn.MSELoss(),
}  # fmt: skip


def mixed_model() -> torch.nn.Module:
    """Every layer kind: a grouped tnconv conv (reflect padding) followed by an in-place ReLU, a transposed conv,
    a depthwise 1-d conv, a Linear head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tnn.Conv2d(2, 6, 3, padding=1, groups=2, padding_mode="reflect"), torch.nn.ReLU(inplace=True), Upsample(),
        torch.nn.Tanh(), torch.nn.Flatten(2), torch.nn.Conv1d(4, 4, 3, groups=4, bias=False), torch.nn.Flatten(),
        torch.nn.Linear(4 * 70, CLASSES),
    ).double()  # fmt: skip


class Residual(torch.nn.Module):
    """A conv, BatchNorm and an in-place residual add: the layer outputs change in place after the layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(2)
        self.head = torch.nn.Linear(2 * 3 * 6, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out += x
        return self.head(torch.relu_(self.norm(out)).flatten(1))


def data(loss: torch.nn.Module, size: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 2, 3, 6, generator=generator, dtype=torch.float64)
    if isinstance(loss, torch.nn.MSELoss):
        return x, torch.randn(size, CLASSES, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (size,), generator=generator)


def settings(fisher: str) -> dict[str, object]:
    """KFAC settings; ``mc`` draws from a generator seeded alike for the two sides."""
    if fisher != "mc":
        return {"fisher": fisher}
    return {"fisher": fisher, "mc_samples": 3, "generator": torch.Generator().manual_seed(7)}


def tracked_step(kfac: KFAC, loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    kfac.model.zero_grad(set_to_none=True)
    with kfac.track():
        loss(kfac.model(x), y).backward()


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("fisher", ["type-2", "mc", "empirical"])
def test_tracked_steps_give_the_factors_of_update(fisher, approx, loss_name):
    loss = LOSSES[loss_name]
    model = mixed_model()
    separate = loss_name != "ce-sum"
    options = dict(approx=approx, separate_bias=separate, ema_decay=0.5 if loss_name == "mse-mean" else None)
    reference, tracked = (KFAC(model, loss, **options, **settings(fisher)) for _ in range(2))
    for seed, size in ((1, 5), (2, 3)):
        x, y = data(loss, size, seed)
        reference.update(x, y)
        tracked_step(tracked, loss, x, y)
        assert tracked.count == reference.count and tracked.version == reference.version
        torch.testing.assert_close(tracked.factors, reference.factors, **TOL)


@pytest.mark.parametrize("fisher", ["type-2", "mc", "empirical"])
def test_a_tracked_step_runs_one_forward_and_leaves_the_gradients_as_they_would_be(fisher):
    """BatchNorm statistics move once; ``.grad`` (bitwise) and the global random state are those of a plain step."""
    loss = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    plain, model = Residual().double(), None
    model = copy.deepcopy(plain)
    x, y = data(loss, 6)
    plain.zero_grad()
    loss(plain(x), y).backward()
    kfac = KFAC(model, loss, **settings(fisher))
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BatchNorm in training mode: expected here
        tracked_step(kfac, loss, x, y)
    assert len(forwards) == 1 and kfac.count == 6
    for (name, expected), got in zip(plain.named_parameters(), model.parameters()):
        assert torch.equal(got.grad, expected.grad), name
    torch.testing.assert_close(model.norm.running_mean, plain.norm.running_mean, rtol=0, atol=0)
    assert model.norm.num_batches_tracked == plain.norm.num_batches_tracked == 1


@pytest.mark.parametrize("ema_decay", [None, 0.75])
def test_micro_batches_in_one_block_each_count_as_a_batch(ema_decay):
    loss = torch.nn.CrossEntropyLoss()
    model = mixed_model()
    reference, tracked = (KFAC(model, loss, fisher="empirical", ema_decay=ema_decay) for _ in range(2))
    batches = [data(loss, 4, seed) for seed in (1, 2, 3)]
    with tracked.track():
        for x, y in batches:
            loss(model(x), y).backward()
    for x, y in batches:
        reference.update(x, y)
    assert tracked.count == reference.count == 12
    torch.testing.assert_close(tracked.factors, reference.factors, **TOL)


def test_a_disabled_block_records_nothing_and_hooks_are_removed():
    loss = torch.nn.CrossEntropyLoss()
    model = mixed_model()
    kfac = KFAC(model, loss, fisher="empirical")
    x, y = data(loss)
    for enabled in (False, True, False):
        with kfac.track(enabled):
            loss(model(x), y).backward()
    assert kfac.count == 5 and kfac.version == 1
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())
    with kfac.track():
        with torch.no_grad():  # an evaluation inside the block is no batch
            model(x)
    assert kfac.count == 5
    with pytest.raises(TypeError, match="enabled must be a bool, got 1"):
        kfac.track(1)


def test_blocks_that_cannot_record_raise_and_change_nothing():
    loss = torch.nn.CrossEntropyLoss()
    model = mixed_model()
    kfac = KFAC(model, loss, fisher="empirical")
    x, y = data(loss)
    tracked_step(kfac, loss, x, y)
    before = copy.deepcopy(kfac.factors)
    with pytest.raises(ValueError, match="a tracked forward got no backward inside the track"):
        with kfac.track():
            model(x)
    with pytest.raises(ValueError, match="already tracking"):
        with kfac.track(), kfac.track():
            pass
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"factor A of layer '0' is not finite"):
        tracked_step(kfac, loss, bad, y)
    assert kfac.count == 5
    torch.testing.assert_close(kfac.factors, before, rtol=0, atol=0)
    shared = torch.nn.Linear(3, 3).double()
    twice = KFAC(torch.nn.Sequential(shared, shared), loss)
    with pytest.raises(ValueError, match=r"layer '0' \(parameters \['0.weight', '0.bias'\]\) ran 2 times"):
        with twice.track():
            twice.model(torch.randn(2, 3, dtype=torch.float64))
    flat = KFAC(torch.nn.Conv1d(2, 2, 1).double(), loss)
    with pytest.raises(ValueError, match=r"\(N, C\) tensor"), flat.track():
        flat.model(torch.randn(2, 2, 3, dtype=torch.float64))
    assert not any(module._forward_hooks for module in model.modules())


@pytest.mark.parametrize("fisher", ["type-2", "empirical"])
def test_under_autocast_the_factors_are_float32_and_close_to_those_of_float32(fisher):
    loss = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 18, CLASSES)
    )  # fmt: skip
    x, y = (t.float() if t.is_floating_point() else t for t in data(loss, 16))
    reference, tracked = KFAC(model, loss, fisher=fisher), KFAC(model, loss, fisher=fisher)
    reference.update(x, y)
    with tracked.track(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x)
        assert output.dtype == torch.bfloat16
        loss(output, y).backward()
    for name, (a, b) in tracked.factors.items():
        expected_a, expected_b = reference.factors[name]
        assert b.dtype == torch.float32 and (a is None or a.dtype == torch.float32)
        if a is not None:
            torch.testing.assert_close(a, expected_a, rtol=0.05, atol=0.05 * expected_a.abs().max().item())
        torch.testing.assert_close(b, expected_b, rtol=0.1, atol=0.1 * expected_b.abs().max().item())


@pytest.mark.parametrize("fisher", ["type-2", "mc"])
def test_under_approximate_backprop_the_columns_are_exact_and_the_estimates_unchanged(fisher):
    """The extra backward computes no weight gradient: the layers' random streams stay where a plain step finds
    them, so ``.grad`` are the estimates of a plain step; the factors are ``update``'s (exact pullbacks)."""
    loss = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 4, 3, padding=(1, 2)),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 8, CLASSES),
    ).double()  # fmt: skip
    plain = copy.deepcopy(model)
    x, y = data(loss)
    with tnn.approximate_backprop(plain, 0.5, generator=torch.Generator().manual_seed(3)):
        loss(plain(x), y).backward()
    reference = KFAC(model, loss, **settings(fisher))
    reference.update(x, y)
    tracked = KFAC(model, loss, **settings(fisher))
    with tnn.approximate_backprop(model, 0.5, generator=torch.Generator().manual_seed(3)):
        tracked_step(tracked, loss, x, y)
    torch.testing.assert_close(tracked.factors, reference.factors, **TOL)
    for (name, expected), got in zip(plain.named_parameters(), model.parameters()):
        assert torch.equal(got.grad, expected.grad), name


def test_a_compiled_model_is_tracked_eagerly():
    loss = torch.nn.CrossEntropyLoss()
    model = mixed_model()
    compiled = torch.compile(model)
    x, y = data(loss)
    reference, tracked = KFAC(model, loss), KFAC(compiled, loss)
    reference.update(x, y)
    tracked_step(tracked, loss, x, y)
    torch.testing.assert_close(tracked.factors["_orig_mod.7"], reference.factors["7"], **TOL)
