"""Checks of tensor arguments shared by ``tnconv.functional`` and ``tnconv.curvature``.

Errors name the argument and the offending value: ``TypeError`` for a wrong
type or dtype kind, ``ValueError`` for a wrong rank, dtype or device.
"""

from __future__ import annotations

import torch


def check_tensor(
    value: object, name: str, ndim: int | None = None, min_ndim: int = 3, allow_complex: bool = False
) -> torch.Tensor:
    """``value`` as a floating-point (or, with ``allow_complex``, complex) tensor with ``ndim`` (or at least
    ``min_ndim``) dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not (value.is_floating_point() or (allow_complex and value.is_complex())):
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(value.shape)}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {tuple(value.shape)}")
    return value


def check_same_kind(reference: torch.Tensor, reference_name: str, other: torch.Tensor, name: str) -> None:
    """``other`` (called ``name``) must share the dtype and device of ``reference`` (called ``reference_name``)."""
    if other.dtype != reference.dtype or other.device != reference.device:
        raise ValueError(
            f"{name} must have the dtype and device of {reference_name} ({reference.dtype} on {reference.device}), "
            f"got {other.dtype} on {other.device}"
        )
