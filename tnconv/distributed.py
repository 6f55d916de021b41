"""Data-parallel curvature: combine per-rank factors across ``torch.distributed`` ranks.

The quantities of ``tnconv.curvature`` are sums over the batch: each rank
computes them on its own shard, and one all-reduce combines them.

- ``reduction="mean"``: KFAC factors are means over samples (``1/(N*T)``,
  ``1/(N*T^2)``), so the factor of the whole batch is the mean of the ranks'
  factors weighted by their batch sizes: ``sum_r N_r A_r / sum_r N_r``
  (``batch_size`` = this rank's N; without it the ranks count equally,
  which is the same when every rank holds as many samples).
- ``reduction="sum"``: plain sums (a GGN diagonal of a summed loss, or
  per-sample quantities already scaled to the global batch).

All tensors go through a single flat all-reduce (one message, not one per
factor); the inputs are left unchanged. Structures nest, so ``KFAC.factors`` (a dict
of ``(A, B)`` pairs, ``A`` None for a separate bias) goes through as it is;
``KFAC(..., distributed=True)`` all-reduces each batch's factors in ``update``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

# a tensor, or dicts/lists/tuples of tensors and None, nested
Factors = TypeVar("Factors")

REDUCTIONS = ("mean", "sum")


def all_reduce_factors(
    factors: Factors, reduction: str = "mean", batch_size: int | None = None, group: object = None
) -> Factors:
    """Combine ``factors`` (a tensor, a sequence or a dict of tensors) across the ranks of ``group``.

    Args:
        factors: this rank's factors (a tensor, or dicts/lists/tuples of them, nested, with
            ``None`` entries kept as they are); all on one device with one floating dtype.
        reduction: ``"mean"`` (weighted by ``batch_size`` when given) or ``"sum"``.
        batch_size: this rank's number of samples (``reduction="mean"`` only).
        group: the process group (default: the whole world).

    Returns:
        New tensors of the same structure holding the combined values, the same
        on every rank. Without an initialised process group, the inputs' values
        (one rank).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if batch_size is not None:
        if reduction != "mean":
            raise ValueError(f"batch_size weights a mean; it needs reduction='mean', got reduction={reduction!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    tensors, rebuild = flatten_structure(factors)
    if not tensors:
        return rebuild([])
    dtype, device = tensors[0].dtype, tensors[0].device
    for position, tensor in enumerate(tensors):
        if not tensor.is_floating_point():
            raise TypeError(f"factors must be floating-point tensors, got {tensor.dtype} at position {position}")
        if tensor.dtype != dtype or tensor.device != device:
            raise ValueError(
                f"factors must share one dtype and device: position 0 is {dtype} on {device}, "
                f"position {position} is {tensor.dtype} on {tensor.device}"
            )
    weight = 1.0 if batch_size is None else float(batch_size)
    parts = [t.detach().reshape(-1) * (weight if reduction == "mean" else 1.0) for t in tensors]
    buffer = torch.cat([*parts, torch.tensor([weight], dtype=dtype, device=device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    values, total = buffer[:-1], buffer[-1]
    if reduction == "mean":
        if total.item() == 0:
            raise ValueError("batch_size is 0 on every rank, so there is no mean to take")
        values = values / total
    pieces = values.split([t.numel() for t in tensors])
    return rebuild([piece.reshape(t.shape) for piece, t in zip(pieces, tensors)])


def flatten_structure(factors: object) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """The tensors of ``factors`` in order, and a function that rebuilds the structure from new tensors.

    Dicts, lists and tuples nest (a ``KFAC.factors`` dict of ``(A, B)`` pairs); ``None`` entries
    (the missing ``A`` of a separate bias) stay ``None``.
    """
    if factors is None:
        return [], lambda new: None
    if isinstance(factors, torch.Tensor):
        return [factors], lambda new: new[0]
    if isinstance(factors, Mapping):
        keys = list(factors)
        items, rebuild_items = flatten_items([factors[k] for k in keys])
        return items, lambda new: dict(zip(keys, rebuild_items(new)))
    if isinstance(factors, (list, tuple)):
        kind = type(factors)
        items, rebuild_items = flatten_items(list(factors))
        return items, lambda new: kind(rebuild_items(new))
    raise TypeError(f"factors must be a tensor, a list/tuple or a dict of tensors, got {type(factors).__name__}")


def flatten_items(items: list[object]) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], list[object]]]:
    """The tensors of each item of a container, and a function that rebuilds the items from new tensors."""
    tensors: list[torch.Tensor] = []
    rebuilders = []
    for item in items:
        if item is not None and not isinstance(item, (torch.Tensor, Mapping, list, tuple)):
            raise TypeError(f"factors must hold torch.Tensors, got {type(item).__name__} at position {len(tensors)}")
        found, rebuild = flatten_structure(item)
        rebuilders.append((len(tensors), len(found), rebuild))
        tensors.extend(found)
    return tensors, lambda new: [rebuild(new[start : start + count]) for start, count, rebuild in rebuilders]
