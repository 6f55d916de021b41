"""tnconv.distributed: two gloo processes on localhost combine shard factors into the full-batch factors.

Also for whole models: ``KFAC(..., distributed=True)`` on two ranks holds the factors of the
full batch, and a KFAC-preconditioned training run on two ranks (gradients averaged with
``all_reduce_factors``) is the run of one process on the full batch.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(SHARDS))
    try:
        x, sqrt_ggn = batch()
        start = sum(SHARDS[:rank])
        shard = slice(start, start + SHARDS[rank])
        local = factors(x[shard], sqrt_ggn[:, shard])
        diag = local.pop("diag_ggn")
        averaged = all_reduce_factors(local, batch_size=SHARDS[rank])
        (summed,) = all_reduce_factors([diag], reduction="sum")
        equal = all_reduce_factors(local["expand"])  # ranks counted equally
        torch.save({**averaged, "diag_ggn": summed, "equal": equal}, Path(out) / f"rank{rank}.pt")
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


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_gloo_ranks_reproduce_the_full_batch_factors(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=len(SHARDS), join=True)
    x, sqrt_ggn = batch()
    full = factors(x, sqrt_ggn)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(len(SHARDS))]
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
