"""Operand checks of a call: torch tensors, one dtype, one device, the shapes the legs need.

Every check here runs on each call of a program, so the common path (in
``tnconv.backends.torch.runner``) is a few tuple comparisons; the detailed
messages are only built on a mismatch (``tnconv.lower.bind``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from tnconv.ir.sizes import Size
from tnconv.lower.bind import order, shape_mismatch


def collect(names: Sequence[str], args: Sequence[object], kwargs: Mapping[str, object]) -> list[torch.Tensor]:
    """Order the operands given positionally (in ``names`` order) and by name; check their types."""
    operands = order(names, args, kwargs)
    for name, value in zip(names, operands):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"operand {name!r} must be a torch.Tensor, got {type(value).__name__}")
    return operands


def check_operands(
    names: Sequence[str],
    operands: Sequence[torch.Tensor],
    expected: Sequence[tuple[Size, ...]],
    labels: Mapping[str, tuple[str, ...]],
) -> None:
    """Raise ValueError on a shape, dtype or device mismatch (the message names tensor, leg and sizes)."""
    for name, operand, shape in zip(names, operands, expected):
        if operand.shape != shape:
            raise ValueError(shape_mismatch(name, tuple(operand.shape), shape, labels[name]))
    if operands:
        dtype, device = operands[0].dtype, operands[0].device
        for name, operand in zip(names, operands):
            if operand.dtype != dtype:
                raise ValueError(
                    f"operands must share one dtype: {names[0]!r} is {dtype} but {name!r} is {operand.dtype}"
                )
            if operand.device != device:
                raise ValueError(
                    f"operands must share one device: {names[0]!r} is on {device} but {name!r} is on {operand.device}"
                )
