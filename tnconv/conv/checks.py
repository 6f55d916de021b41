"""Argument checks shared by the curvature routines: tensors, the layer they describe, gradients.

A layer is given as ``arguments``: keyword arguments of ``tnconv.conv.hyper.conv_hyper``
(``kernel_size``, ``stride``, ...) other than ``input_shape`` and ``out_channels``,
which come from the tensors.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from tnconv.checks import check_same_kind, check_tensor
from tnconv.conv.hyper import ConvHyper
from tnconv.conv.hyper_cache import cached_conv_hyper

__all__ = ["check_finite", "check_output", "check_tensor", "gradient_layer", "layer"]


def layer(x: object, arguments: Mapping[str, Any], out_channels: object = None) -> ConvHyper:
    """The normalised layer whose input is ``x``; a non-empty batch is required (validated once per spelling of the
    arguments: ``cached_conv_hyper``)."""
    x = check_tensor(x, "x")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    return cached_conv_hyper(tuple(x.shape), {"out_channels": out_channels, **arguments})


def check_output(value: torch.Tensor, name: str, hyper: ConvHyper, leading: int = 0) -> None:
    """``value`` must be shaped like the layer output ``(N, C_out, *O)`` after ``leading`` extra axes."""
    if tuple(value.shape[leading:]) != tuple(hyper.output_shape):
        raise ValueError(
            f"{name} must end in the layer output shape {tuple(hyper.output_shape)}, got {tuple(value.shape)}"
        )


def gradient_layer(
    x: torch.Tensor, gradient: object, name: str, leading: int, arguments: Mapping[str, object]
) -> tuple[torch.Tensor, ConvHyper]:
    """The layer of ``x`` whose output gradient is ``gradient``, and ``gradient`` checked.

    ``gradient`` (called ``name``) is ``(*L, N, C_out, *O)`` with ``leading``
    axes ``L`` (the GGN columns of ``sqrt_ggn``) before the layer output
    shape; it gives the layer's ``C_out`` and must match ``x``'s dtype and device.
    """
    ndim = getattr(x, "ndim", None)
    gradient = check_tensor(gradient, name, None if ndim is None else ndim + leading, 3 + leading)
    hyper = layer(x, arguments, gradient.shape[leading + 1])
    check_output(gradient, name, hyper, leading)
    check_same_kind(x, "x", gradient, name)
    return gradient, hyper


def check_finite(value: object, name: str) -> None:
    """A floating-point tensor ``value`` (called ``name``) must hold no NaN or inf; anything else passes."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        bad = int(value.numel() - value.isfinite().sum())
        if bad:
            raise ValueError(
                f"{name} must be finite, got {bad} NaN or inf entr{'y' if bad == 1 else 'ies'} in shape "
                f"{tuple(value.shape)}"
            )
