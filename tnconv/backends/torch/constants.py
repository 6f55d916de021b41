"""Structured tensors and plan constants as torch tensors, built per dtype and device.

``dense(kind, shape, dtype, device)`` builds a structured tensor (identity,
all-ones, index pattern, pattern sum) densely: ``tnconv.index_pattern`` and
plans that build a pattern densely use it. ``Constants`` turns a plan's
constant descriptions (``tnconv.lower.nodes``) into tensors: whatever comes
from pure-Python index arithmetic (index maps, window-sum weights, a pattern's
positions, a pattern sum's counts) once on the CPU, when the program is made;
then, per dtype and device, only tensor operations (which ``torch.compile``
traces without running Python loops over pixels).
"""

from __future__ import annotations

from typing import Sequence

import torch
from typing_extensions import assert_never

from tnconv.ir.tensors import Identity, IndexPattern, Kind, Ones, PatternSum
from tnconv.lower.nodes import Constant, DenseTensor, IndexMap, Weights


def dense(kind: Kind, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The structured tensor ``kind`` with ``shape`` as a dense tensor."""
    shape = tuple(int(size) for size in shape)
    if isinstance(kind, Ones):
        return torch.ones(shape, dtype=dtype, device=device)
    if isinstance(kind, Identity):
        result = torch.zeros(shape, dtype=dtype, device=device)
        index = torch.arange(shape[0], device=device)
        result[(index,) * len(shape)] = 1
        return result
    if isinstance(kind, (IndexPattern, PatternSum)):
        return _from_host(kind, _host_of(kind, shape), shape, dtype, device)  # type: ignore[arg-type]
    raise TypeError(f"a {kind.label} tensor is bound by the user, not built")


def _host_of(kind: Kind, shape: tuple[int, ...]) -> torch.Tensor | None:
    """What a structured tensor is built from: an index pattern's read positions ``(K, O)`` (int64, -1 where
    padding is read), a pattern sum's counts ``(K, I)`` (float64); None for the others."""
    if isinstance(kind, IndexPattern):
        return torch.tensor(kind.read_positions(), dtype=torch.int64).reshape(shape[:2])
    if isinstance(kind, PatternSum):
        return torch.tensor(kind.counts(), dtype=torch.float64).reshape(shape)
    return None


def _from_host(
    kind: Kind, host: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A pattern (scattered from its positions) or a pattern sum (its counts) from ``_host_of``."""
    if isinstance(kind, PatternSum):
        return host.to(device=device, dtype=dtype)
    positions = host.to(device)
    result = torch.zeros(shape, dtype=dtype, device=device)
    result.scatter_(2, positions.clamp(min=0).unsqueeze(-1), (positions >= 0).unsqueeze(-1).to(dtype))
    return result


class Constants:
    """A plan's constants: ``make(dtype, device)`` builds them (dense tensors per call; index maps and weights
    from CPU tensors made once, here)."""

    def __init__(self, constants: Sequence[Constant]) -> None:
        self._constants = tuple(constants)
        self._host = tuple(_host(constant) for constant in self._constants)

    def make(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        made = []
        for constant, host in zip(self._constants, self._host):
            match constant:
                case DenseTensor():
                    if host is None:
                        made.append(dense(constant.kind, constant.shape, dtype, device))
                    else:
                        made.append(_from_host(constant.kind, host, constant.shape, dtype, device))
                case Weights():
                    made.append(host.to(device=device, dtype=dtype))  # type: ignore[union-attr]
                case IndexMap():
                    made.append(host.to(device))  # type: ignore[union-attr]
                case _:
                    assert_never(constant)
        return tuple(made)


def _host(constant: Constant) -> torch.Tensor | None:
    """What a constant is built from on the CPU, once: a structured tensor's positions or counts (None for the
    kinds built directly), an index map's int64 values, window-sum weights in float64."""
    match constant:
        case DenseTensor():
            return _host_of(constant.kind, constant.shape)
        case IndexMap():
            return torch.tensor(constant.values, dtype=torch.int64)
        case Weights():
            return torch.tensor(constant.rows, dtype=torch.float64)
        case _:
            assert_never(constant)


def nested_bytes(value: object) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples/lists of them, nested)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(nested_bytes(item) for item in value)
    return 0
