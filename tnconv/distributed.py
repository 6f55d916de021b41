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

Factors are matched by key, not by position: dict entries are reduced in
sorted key order, so ``{"a": .., "b": ..}`` on one rank and ``{"b": .., "a": ..}``
on another combine ``a`` with ``a``. Before any data moves, the ranks exchange
a small description of what they hold (``all_gather_object``: keys, shapes,
dtypes, the reduction, whether a batch size is given, the batch sizes, and the
``settings`` a caller asks to agree) and every rank raises the same ``ValueError``
when the descriptions disagree, instead of combining mismatched tensors or
aborting inside the backend. Work a rank does before its ``all_reduce_factors``
runs inside ``tell_failures``: a rank that fails there tells the others in that
same exchange, so that they raise too instead of waiting for it until the
process group's timeout.
Then all tensors go through a single flat all-reduce (one message, not one
per factor); the inputs are left unchanged. ``KFAC.factors`` (a dict of
``(A, B)`` pairs, ``A`` None for a separate bias) goes through as it is;
``KFAC(..., distributed=True)`` all-reduces each batch's factors in ``update``
(its settings compared too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, TypeVar, cast

import torch
import torch.distributed as dist

from tnconv.namespace import public_dir

__all__ = ["all_reduce_factors"]
__dir__ = public_dir(globals(), __all__)

Factors = TypeVar("Factors")  # a tensor, or lists, tuples and dicts of tensors and None, nested

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Description:
    """What one rank holds, exchanged before the all-reduce: checked to agree across ranks.

    ``leaves``: ``(path, shape, dtype)`` of each tensor, paths in reduction order
    (``"['a'][0]"``); ``batch_size``: None when not given; ``settings``: ``(name, repr)``
    of what must agree; ``problem``: this rank's own error, which every other rank reports too.
    """

    leaves: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    reduction: str = "mean"
    batch_size: int | None = None
    settings: tuple[tuple[str, str], ...] = ()
    problem: str | None = None


def all_reduce_factors(
    factors: Factors, reduction: str = "mean", batch_size: int | None = None, group: dist.ProcessGroup | None = None,
    *, settings: Mapping[str, object] | None = None,
) -> Factors:
    """Combine ``factors`` (a tensor, or lists, tuples and dicts of tensors, nested) across the ranks of ``group``.

    Args:
        factors: this rank's factors; all on one device with one floating dtype. Dict
            entries are matched by key across ranks, list and tuple entries by position;
            None entries (a bias without an input factor) stay None.
        reduction: ``"mean"`` (weighted by ``batch_size`` when given) or ``"sum"``.
        batch_size: this rank's number of samples (``reduction="mean"`` only; give it on
            every rank or on none).
        group: the process group (default: the whole world).
        settings: name -> value of what must be equal on every rank (compared by ``repr``,
            with the shapes), e.g. how the factors were computed.

    Returns:
        New tensors of the same structure holding the combined values, the same
        on every rank. Without an initialised process group, the inputs' values
        (one rank).

    Raises:
        ValueError: on every rank alike, when the ranks disagree on the keys, the
            number, shapes or dtypes of the factors, the reduction, whether a batch
            size is given, or ``settings`` (the message names the ranks and the
            entry), or when the batch sizes sum to 0. A rank whose own arguments are
            invalid raises its own TypeError or ValueError, and a rank that failed in
            ``tell_failures`` its own error; the others then raise a ValueError that quotes it.
    """
    distributed = dist.is_available() and dist.is_initialized()
    with tell_failures(group):
        leaves, rebuild = flatten_structure(factors)
        description = describe(leaves, reduction, batch_size, settings)
    descriptions = gather(description, group) if distributed else [description]
    check_agreement(descriptions)
    tensors = [tensor for _, tensor in leaves]
    if not tensors:
        return cast(Factors, rebuild([]))
    weights = [1 if d.batch_size is None else d.batch_size for d in descriptions]
    total = sum(weights)
    if reduction == "mean" and total == 0:
        raise ValueError(f"batch_size is 0 on every rank (batch sizes {weights}), so there is no mean to take")
    weight = float(weights[rank_in(group)]) if reduction == "mean" else 1.0
    buffer = torch.cat([t.detach().reshape(-1) for t in tensors])  # a new tensor: the inputs stay as they are
    if weight != 1.0:
        buffer.mul_(weight)
    if distributed:
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
    if reduction == "mean":
        buffer = buffer / total
    pieces = buffer.split([t.numel() for t in tensors])
    return cast(Factors, rebuild([piece.reshape(t.shape) for piece, t in zip(pieces, tensors)]))


@contextmanager
def tell_failures(group: dist.ProcessGroup | None = None) -> Iterator[None]:
    """Run a rank's work before its ``all_reduce_factors``: if it raises, this rank tells the other ranks of
    ``group`` (their ``all_reduce_factors`` raises a ValueError quoting the error, instead of waiting for this
    rank until the process group's timeout) and raises its own error. Without a process group, nothing more."""
    try:
        yield
    except Exception as error:
        if dist.is_available() and dist.is_initialized():
            gather(Description(problem=f"{type(error).__name__}: {error}"), group)
        raise


def gather(description: Description, group: dist.ProcessGroup | None) -> list[Description]:
    """Every rank's description, in group rank order (the same list on every rank)."""
    descriptions: list[Description | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(descriptions, description, group=group)
    return descriptions  # type: ignore[return-value]


def rank_in(group: dist.ProcessGroup | None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank(group)


def describe(
    leaves: list[tuple[str, torch.Tensor]], reduction: str, batch_size: object, settings: Mapping[str, object] | None
) -> Description:
    """Validate this rank's arguments; its ``Description``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if batch_size is not None:
        if reduction != "mean":
            raise ValueError(f"batch_size weights a mean; it needs reduction='mean', got reduction={reduction!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if leaves:
        first_path, first = leaves[0]
        for path, tensor in leaves:
            if not tensor.is_floating_point():
                raise TypeError(f"factors must be floating-point tensors, got {tensor.dtype} at factors{path}")
            if tensor.dtype != first.dtype or tensor.device != first.device:
                raise ValueError(
                    f"factors must share one dtype and device: factors{first_path} is {first.dtype} on "
                    f"{first.device}, factors{path} is {tensor.dtype} on {tensor.device}"
                )
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping name -> value or None, got {type(settings).__name__}")
    summary = tuple((path, tuple(tensor.shape), str(tensor.dtype)) for path, tensor in leaves)
    agreed = tuple((str(name), repr(value)) for name, value in (settings or {}).items())
    return Description(summary, reduction, batch_size, agreed)


def check_agreement(descriptions: Sequence[Description]) -> None:
    """Raise one ValueError (the same text on every rank) when the ranks' descriptions disagree."""
    for rank, description in enumerate(descriptions):
        if description.problem is not None:
            raise ValueError(f"all_reduce_factors: rank {rank} could not take part: {description.problem}")
    head = descriptions[0]
    for rank, description in enumerate(descriptions[1:], 1):
        if description.reduction != head.reduction:
            raise ValueError(
                f"all_reduce_factors: ranks disagree on reduction: rank 0 gives {head.reduction!r}, "
                f"rank {rank} gives {description.reduction!r}"
            )
        if description.settings != head.settings:
            mine, theirs = dict(head.settings), dict(description.settings)
            differ = [name for name in {**mine, **theirs} if mine.get(name) != theirs.get(name)]
            raise ValueError(
                f"all_reduce_factors: ranks disagree on {', '.join(differ)}: rank 0 has "
                f"{', '.join(f'{name}={mine.get(name)}' for name in differ)}, rank {rank} has "
                f"{', '.join(f'{name}={theirs.get(name)}' for name in differ)}"
            )
        if (description.batch_size is None) != (head.batch_size is None):
            raise ValueError(
                f"all_reduce_factors: batch_size must be given on every rank or on none: rank 0 gives "
                f"{head.batch_size!r}, rank {rank} gives {description.batch_size!r}"
            )
        paths, head_paths = [leaf[0] for leaf in description.leaves], [leaf[0] for leaf in head.leaves]
        if paths != head_paths:
            missing = _names(p for p in head_paths if p not in paths)
            extra = _names(p for p in paths if p not in head_paths)
            raise ValueError(
                f"all_reduce_factors: ranks disagree on the factors: rank 0 has {len(head_paths)} "
                f"({_names(head_paths)}), rank {rank} has {len(paths)} ({_names(paths)}); rank {rank} lacks "
                f"{missing} and has {extra} that rank 0 lacks"
            )
        for (path, shape, dtype), (_, head_shape, head_dtype) in zip(description.leaves, head.leaves):
            if shape != head_shape:
                raise ValueError(
                    f"all_reduce_factors: ranks disagree on the shape of factors{path}: rank 0 has "
                    f"{head_shape}, rank {rank} has {shape}"
                )
            if dtype != head_dtype:
                raise ValueError(
                    f"all_reduce_factors: ranks disagree on the dtype of factors{path}: rank 0 has "
                    f"{head_dtype}, rank {rank} has {dtype}"
                )


def _names(paths: Iterable[str]) -> str:
    """``factors['a'], factors[0]`` (or ``none``)."""
    return ", ".join(f"factors{path}" for path in paths) or "none"


Rebuild = Callable[[list[torch.Tensor]], object]


def flatten_structure(factors: object, path: str = "") -> tuple[list[tuple[str, torch.Tensor]], Rebuild]:
    """``(path, tensor)`` of each tensor of ``factors`` in reduction order, and a function that rebuilds it.

    Dicts are walked in sorted key order (so that ranks match entries by key) and
    rebuilt in their own order; lists and tuples in order; None stays None.
    """
    if isinstance(factors, torch.Tensor):
        return [(path, factors)], lambda new: new[0]
    if factors is None and path:
        return [], lambda new: None
    if isinstance(factors, Mapping):
        try:
            keys = sorted(factors)
        except TypeError:
            raise TypeError(f"factors{path} must have keys that sort (e.g. all str), got {list(factors)!r}") from None
        order = list(factors)

        def rebuild_dict(values: list[object]) -> dict:
            by_key = dict(zip(keys, values))
            return {key: by_key[key] for key in order}

        return _join([(f"{path}[{key!r}]", factors[key]) for key in keys], rebuild_dict)
    if isinstance(factors, (list, tuple)):
        kind = type(factors)
        return _join([(f"{path}[{n}]", item) for n, item in enumerate(factors)], kind)
    where = f"factors{path}" if path else "factors"
    raise TypeError(
        f"{where} must be a tensor, None, or a list/tuple/dict of them, got {type(factors).__name__}"
    )


def _join(children: list[tuple[str, object]], build: Callable[[list[object]], object]) -> tuple[list, Rebuild]:
    """Flatten each child; a rebuild that hands each child its own share of the new tensors."""
    flat: list[tuple[str, torch.Tensor]] = []
    parts: list[tuple[int, int, Rebuild]] = []
    for child_path, child in children:
        leaves, rebuild = flatten_structure(child, child_path)
        parts.append((len(flat), len(flat) + len(leaves), rebuild))
        flat.extend(leaves)
    return flat, lambda new: build([rebuild(new[start:end]) for start, end, rebuild in parts])

