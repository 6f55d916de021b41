"""tnconv.distributed: two gloo processes on localhost combine shard factors into the full-batch factors.

Also for whole models: ``KFAC(..., distributed=True)`` on two ranks holds the factors of the
full batch, and a KFAC-preconditioned training run on two ranks (gradients averaged with
``all_reduce_factors``) is the run of one process on the full batch. Ranks whose KFAC settings
differ raise the same ValueError, and a rank whose batch fails makes every rank raise (none waits
for the process group's timeout) with the factors left as they were.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tnconv import curvature
from tnconv.distributed import all_reduce_factors

SHARDS = (3, 2)  # unequal batches: the mean must be weighted by batch size
LAYER = dict(kernel_size=3, stride=2, padding=1, groups=2)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SHARDS), 4, 7, 6, generator=generator, dtype=torch.float64)
    sqrt_ggn = torch.randn(2, sum(SHARDS), 6, 4, 3, generator=generator, dtype=torch.float64)
    return x, sqrt_ggn


def factors(x: torch.Tensor, sqrt_ggn: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "expand": curvature.kfac_expand_factor(x, **LAYER),
        "reduce": curvature.kfac_reduce_factor(x, **LAYER),
        "diag_ggn": curvature.diag_ggn_weight(x, sqrt_ggn, **LAYER),
    }


def shard_factors(rank: int) -> dict[str, torch.Tensor]:
    """This rank's shard's factors, all-reduced: batch-weighted means, a sum, and an unweighted mean."""
    x, sqrt_ggn = batch()
    start = sum(SHARDS[:rank])
    shard = slice(start, start + SHARDS[rank])
    local = factors(x[shard], sqrt_ggn[:, shard])
    diag = local.pop("diag_ggn")
    averaged = all_reduce_factors(local, batch_size=SHARDS[rank])
    (summed,) = all_reduce_factors([diag], reduction="sum")
    equal = all_reduce_factors(local["expand"])  # ranks counted equally
    return {**averaged, "diag_ggn": summed, "equal": equal}


def worker(rank: int, port: int, out: str) -> None:
    """One rank: the shard factors, then every scenario (``("ok", value)`` or ``(error type, message)``)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(SHARDS), timeout=datetime.timedelta(seconds=120))
    try:
        results: dict[str, tuple] = {"shards": ("ok", shard_factors(rank))}
        for name, run in {**scenarios(rank), **kfac_scenarios(rank)}.items():
            try:
                results[name] = ("ok", run())
            except (TypeError, ValueError, RuntimeError) as error:
                results[name] = (type(error).__name__, str(error))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def training_setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1, groups=2), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(4 * 16, 3)
    ).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, sum(SHARDS), 2, 4, 4, generator=generator, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (STEPS, sum(SHARDS)), generator=generator)


STEPS = 3


def kfac_training(shard: slice, distributed: bool) -> dict[str, object]:
    """A few KFAC-preconditioned SGD steps on ``shard`` of each batch; the factors and parameters after them."""
    model, xs, ys = training_setup()
    loss_function = torch.nn.CrossEntropyLoss()
    kfac = curvature.KFAC(model, loss_function, ema_decay=0.5, distributed=distributed)
    preconditioner = kfac.preconditioner(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in zip(xs[:, shard], ys[:, shard]):
        kfac.update(x, y)
        optimizer.zero_grad()
        loss_function(model(x), y).backward()
        grads = all_reduce_factors({name: p.grad for name, p in model.named_parameters()}, batch_size=len(y))
        for name, p in model.named_parameters():
            p.grad.copy_(grads[name])
        preconditioner.step()
        optimizer.step()
    return {"factors": kfac.factors, "count": kfac.count, "params": dict(model.state_dict())}


def first_batch_factors(shard: slice) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
    """``KFAC.factors`` of the first batch's ``shard``, all-reduced as they are (``(A, B)`` pairs, ``None``s)."""
    model, xs, ys = training_setup()
    kfac = curvature.KFAC(model, torch.nn.CrossEntropyLoss())
    kfac.update(xs[0, shard], ys[0, shard])
    return all_reduce_factors(kfac.factors, batch_size=len(ys[0, shard]))


def training_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(SHARDS))
    try:
        start = sum(SHARDS[:rank])
        shard = slice(start, start + SHARDS[rank])
        result = {**kfac_training(shard, distributed=True), "first": first_batch_factors(shard)}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[dict[str, tuple]]:
    """Each rank's results of ``worker``: one spawn of two gloo processes serves every test here."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch built without gloo")
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=len(SHARDS), join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(len(SHARDS))]


def test_two_gloo_ranks_reproduce_the_full_batch_factors(outcomes):
    x, sqrt_ggn = batch()
    full = factors(x, sqrt_ggn)
    results = [outcome["shards"][1] for outcome in outcomes]
    for result in results:
        for name in ("expand", "reduce", "diag_ggn"):
            torch.testing.assert_close(result[name], full[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0]["equal"], results[1]["equal"], rtol=0, atol=0)
    shards = [curvature.kfac_expand_factor(x[:3], **LAYER), curvature.kfac_expand_factor(x[3:], **LAYER)]
    torch.testing.assert_close(results[0]["equal"], (shards[0] + shards[1]) / 2, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_gloo_ranks_train_with_kfac_as_one_process_on_the_full_batch(tmp_path):
    mp.spawn(training_worker, args=(free_port(), str(tmp_path)), nprocs=len(SHARDS), join=True)
    full = {**kfac_training(slice(None), distributed=False), "first": first_batch_factors(slice(None))}
    assert full["count"] == STEPS * sum(SHARDS)
    for rank in range(len(SHARDS)):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["count"] == full["count"]
        for key in ("factors", "params", "first"):
            assert list(result[key]) == list(full[key])
            torch.testing.assert_close(result[key], full[key], rtol=1e-10, atol=1e-12)


def test_single_process_keeps_values_and_structure():
    a, b = torch.ones(2, 2, dtype=torch.float64), torch.arange(3.0, dtype=torch.float64)
    assert not dist.is_initialized()
    same = all_reduce_factors((a, b), batch_size=4)
    assert isinstance(same, tuple)
    torch.testing.assert_close(same[0], a)
    torch.testing.assert_close(same[1], b)
    assert same[0] is not a
    torch.testing.assert_close(all_reduce_factors(a, reduction="sum"), a)


def test_single_process_keeps_nested_structure_and_key_order():
    a, b = torch.ones(2, 2, dtype=torch.float64), torch.arange(3.0, dtype=torch.float64)
    same = all_reduce_factors({"z": (a, None), "a": [b]}, reduction="sum")
    assert list(same) == ["z", "a"] and isinstance(same["z"], tuple) and same["z"][1] is None
    torch.testing.assert_close(same["z"][0], a, rtol=0, atol=0)
    torch.testing.assert_close(same["a"][0], b, rtol=0, atol=0)


def test_bad_arguments_name_themselves():
    a = torch.ones(2)
    with pytest.raises(ValueError, match="reduction"):
        all_reduce_factors(a, reduction="max")
    with pytest.raises(ValueError, match="batch_size"):
        all_reduce_factors(a, reduction="sum", batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        all_reduce_factors(a, batch_size=-1)
    with pytest.raises(TypeError, match="factors"):
        all_reduce_factors([a, 3.0])
    with pytest.raises(TypeError, match="factors"):
        all_reduce_factors(torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="dtype"):
        all_reduce_factors([a, a.double()])
    with pytest.raises(TypeError, match="factors"):
        all_reduce_factors("a")
    with pytest.raises(TypeError, match="factors"):
        all_reduce_factors(None)
    with pytest.raises(TypeError, match=r"factors\['a'\]\[1\] must be a tensor"):
        all_reduce_factors({"a": [a, "b"]})
    with pytest.raises(TypeError, match="settings must be a mapping"):
        all_reduce_factors(a, settings=3)


# --- two ranks that hold different things: matched by key, or one ValueError on every rank ----------------------


def value(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def scenarios(rank: int) -> dict[str, Callable[[], object]]:
    """What each rank passes, by case; rank 0 first in each pair."""
    first = rank == 0
    ones = torch.ones(2, 3, dtype=torch.float64)
    return {
        "by_key_sum": lambda: all_reduce_factors(
            {"a": value(1), "b": value(10)} if first else {"b": value(20), "a": value(2)}, reduction="sum"
        ),
        "by_key_mean": lambda: all_reduce_factors(
            {"a": value(1), "b": value(10)} if first else {"b": value(20), "a": value(2)}, batch_size=3 if first else 1
        ),
        "nested": lambda: all_reduce_factors(
            {"conv": (value(1, 2), None), "conv.bias": (None, value(4))} if first
            else {"conv.bias": (None, value(6)), "conv": (value(3, 4), None)},
            reduction="sum",
        ),
        "keys": lambda: all_reduce_factors({"a": value(1), "b": value(2)} if first else {"a": value(1), "c": value(2)}),
        "shapes": lambda: all_reduce_factors({"a": ones if first else ones.reshape(3, 2)}),
        "counts": lambda: all_reduce_factors([ones, ones] if first else [ones]),
        "dtypes": lambda: all_reduce_factors([ones if first else ones.float()]),
        "reduction": lambda: all_reduce_factors([ones], reduction="mean" if first else "sum"),
        "batch_given": lambda: all_reduce_factors([ones], batch_size=2 if first else None),
        "zero_batches": lambda: all_reduce_factors([ones], batch_size=0),
        "local_error": lambda: all_reduce_factors([ones if first else ones.long()]),
        "afterwards": lambda: all_reduce_factors([value(rank + 1)], reduction="sum"),
    }


def test_dict_entries_combine_by_key_not_by_position(outcomes):
    for result in outcomes:
        status, summed = result["by_key_sum"]
        assert status == "ok" and list(summed) == (["a", "b"] if result is outcomes[0] else ["b", "a"])
        torch.testing.assert_close(summed["a"], value(3), rtol=0, atol=0)
        torch.testing.assert_close(summed["b"], value(30), rtol=0, atol=0)
        status, mean = result["by_key_mean"]
        torch.testing.assert_close(mean["a"], value((3 * 1 + 2) / 4), rtol=1e-15, atol=0)
        torch.testing.assert_close(mean["b"], value((3 * 10 + 20) / 4), rtol=1e-15, atol=0)


def test_nested_factors_with_none_entries_combine_by_key(outcomes):
    for result in outcomes:
        status, combined = result["nested"]
        assert status == "ok" and combined["conv"][1] is None and combined["conv.bias"][0] is None
        assert isinstance(combined["conv"], tuple)
        torch.testing.assert_close(combined["conv"][0], value(4, 6), rtol=0, atol=0)
        torch.testing.assert_close(combined["conv.bias"][1], value(10), rtol=0, atol=0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("keys", r"disagree on the factors: .*rank 1 lacks factors\['b'\] and has factors\['c'\] that rank 0 lacks"),
        ("shapes", r"shape of factors\['a'\]: rank 0 has \(2, 3\), rank 1 has \(3, 2\)"),
        ("counts", r"disagree on the factors: rank 0 has 2 .*rank 1 has 1"),
        ("dtypes", r"dtype of factors\[0\]: rank 0 has torch.float64, rank 1 has torch.float32"),
        ("reduction", r"disagree on reduction: rank 0 gives 'mean', rank 1 gives 'sum'"),
        ("batch_given", r"batch_size must be given on every rank or on none"),
        ("zero_batches", r"batch_size is 0 on every rank"),
    ],
    ids=lambda item: item if item.isidentifier() else "",
)
def test_ranks_that_disagree_raise_the_same_value_error(outcomes, case, message):
    first, second = outcomes[0][case], outcomes[1][case]
    assert first[0] == second[0] == "ValueError"
    assert first[1] == second[1]
    assert re.search(message, first[1]), first[1]


def test_a_rank_with_bad_arguments_raises_its_error_and_the_others_quote_it(outcomes):
    assert outcomes[1]["local_error"][0] == "TypeError" and "torch.int64" in outcomes[1]["local_error"][1]
    kind, text = outcomes[0]["local_error"]
    assert kind == "ValueError" and "rank 1 could not take part: TypeError" in text and "torch.int64" in text


def test_the_group_still_works_after_the_errors(outcomes):
    for result in outcomes:
        status, (combined,) = result["afterwards"]
        torch.testing.assert_close(combined, value(3), rtol=0, atol=0)


# --- KFAC(distributed=True) on ranks that disagree or fail ------------------------------------------------------------


def kfac_attempt(rank: int, settings: dict, bad: str | None = None) -> dict[str, object]:
    """A distributed KFAC with this rank's ``settings``: one update with a good batch unless the settings differ
    between the ranks, then one whose batch is ``bad`` on rank 1; the outcome of the last update on this rank, and
    whether it left the factors, count and version as they were."""
    model, xs, ys = training_setup()
    shard = slice(sum(SHARDS[:rank]), sum(SHARDS[: rank + 1]))
    loss = torch.nn.CrossEntropyLoss(reduction=settings.pop("reduction", "mean"))
    kfac = curvature.KFAC(model, loss, distributed=True, **settings)
    if bad is not None:
        kfac.update(xs[0, shard], ys[0, shard])
    before = {name: tuple(f.clone() for f in pair) for name, pair in kfac._layer_factors().items()}
    count, version = kfac.count, kfac.version
    x, y = xs[1, shard], ys[1, shard]
    if bad == "targets" and rank == 1:
        y = y[:1]
    elif bad == "inputs" and rank == 1:
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
    elif bad == "model" and rank == 1:
        x = x[:, :1]  # one channel for a conv that takes two: the model raises a RuntimeError
    elif bad == "weights" and rank == 1:
        with torch.no_grad():
            model[0].weight[0, 0, 0, 0] = float("nan")  # every output NaN: found in the all-reduced factors
    try:
        kfac.update(x, y)
        outcome: tuple[str, str] = ("ok", "")
    except (ValueError, RuntimeError) as error:
        outcome = (type(error).__name__, str(error))
    unchanged = (kfac.count, kfac.version) == (count, version) and list(before) == list(kfac._layer_factors()) and all(
        torch.equal(a, b) for name, pair in kfac._layer_factors().items() for a, b in zip(pair, before[name]))
    return {"outcome": outcome, "unchanged": unchanged, "count": kfac.count}


def kfac_scenarios(rank: int) -> dict[str, Callable[[], object]]:
    """KFAC's settings that differ on rank 1, and batches that fail on rank 1."""
    differing = {
        "approx": {"approx": "reduce"}, "fisher": {"fisher": "empirical"}, "reduction": {"reduction": "sum"},
        "separate_bias": {"separate_bias": False}, "ema_decay": {"ema_decay": 0.5},
    }  # fmt: skip
    cases: dict[str, Callable[[], object]] = {
        f"kfac_{name}": (lambda change=change: kfac_attempt(rank, dict(change) if rank == 1 else {}))
        for name, change in differing.items()
    }
    for bad in ("targets", "inputs", "model", "weights"):
        cases[f"kfac_bad_{bad}"] = lambda bad=bad: kfac_attempt(rank, {}, bad)
    cases["kfac_after"] = lambda: kfac_attempt(rank, {})
    cases["kfac_count"] = lambda: kfac_counts_apart(rank)
    return cases


def kfac_counts_apart(rank: int) -> None:
    """One update on both ranks, then rank 1 loads its state with another count: their running means would part."""
    model, xs, ys = training_setup()
    shard = slice(sum(SHARDS[:rank]), sum(SHARDS[: rank + 1]))
    kfac = curvature.KFAC(model, torch.nn.CrossEntropyLoss(), distributed=True)
    kfac.update(xs[0, shard], ys[0, shard])
    if rank == 1:
        kfac.load_state_dict({**kfac.state_dict(), "count": 100})
    kfac.update(xs[1, shard], ys[1, shard])


@pytest.mark.parametrize(
    "case, message",
    [
        ("approx", r"ranks disagree on approx: rank 0 has approx='expand', rank 1 has approx='reduce'"),
        ("fisher", r"ranks disagree on fisher: rank 0 has fisher='type-2', rank 1 has fisher='empirical'"),
        ("reduction", r"ranks disagree on reduction: rank 0 has reduction='mean', rank 1 has reduction='sum'"),
        ("separate_bias", r"ranks disagree on separate_bias: rank 0 has separate_bias=True, rank 1 has "
                          r"separate_bias=False"),
        ("ema_decay", r"ranks disagree on ema_decay: rank 0 has ema_decay=None, rank 1 has ema_decay=0.5"),
    ],
)
def test_kfac_ranks_with_different_settings_raise_the_same_value_error(outcomes, case, message):
    first, second = (outcome[f"kfac_{case}"][1] for outcome in outcomes)
    assert first["outcome"] == second["outcome"] and first["outcome"][0] == "ValueError"
    assert re.search(message, first["outcome"][1]), first["outcome"][1]
    assert first["unchanged"] and second["unchanged"] and first["count"] == second["count"] == 0


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("targets", "ValueError", r"targets must fit the model output \(2, 3\)"),
        ("inputs", "ValueError", r"inputs must be finite, got 1 NaN or inf entry"),
        ("model", "RuntimeError", r"expected input\[2, 1, 4, 4\] to have 2 channels"),
    ],
)
def test_a_kfac_rank_whose_batch_fails_makes_every_rank_raise(outcomes, bad, error, message):
    """Rank 1 raises its own error; rank 0 a ValueError that quotes it (not a wait until the timeout); the factors,
    counts and versions stay as they were on both."""
    first, second = (outcome[f"kfac_bad_{bad}"][1] for outcome in outcomes)
    assert second["outcome"][0] == error and re.search(message, second["outcome"][1]), second["outcome"]
    assert first["outcome"][0] == "ValueError"
    assert f"rank 1 could not take part: {error}: " in first["outcome"][1]
    assert re.search(message, first["outcome"][1]), first["outcome"]
    assert first["unchanged"] and second["unchanged"] and first["count"] == second["count"] == sum(SHARDS)
    after = [outcome["kfac_after"][1] for outcome in outcomes]  # the same ranks, settings that agree: it works
    assert all(result["outcome"] == ("ok", "") and result["count"] == sum(SHARDS) for result in after)


def test_kfac_factors_that_are_not_finite_on_one_rank_make_every_rank_raise_the_same_value_error(outcomes):
    first, second = (outcome["kfac_bad_weights"][1] for outcome in outcomes)
    assert first["outcome"] == second["outcome"] and first["outcome"][0] == "ValueError"
    assert "the batch's factor B of layer '0' (all ranks together) is not finite" in first["outcome"][1]
    assert first["unchanged"] and second["unchanged"]


def test_kfac_ranks_that_saw_different_numbers_of_samples_raise_the_same_value_error(outcomes):
    first, second = (outcome["kfac_count"] for outcome in outcomes)
    assert first == second and first[0] == "ValueError"
    assert "ranks disagree on count: rank 0 has count=5, rank 1 has count=100" in first[1]
