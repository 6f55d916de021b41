"""Argument checks shared by the curvature routines: tensors, the layer they describe, gradients."""

from __future__ import annotations

import torch

from tnconv.conv.hyper import ConvHyper, conv_hyper


def check_tensor(value: object, name: str, ndim: int | None = None, min_ndim: int = 3) -> torch.Tensor:
    """``value`` as a floating-point tensor with ``ndim`` (or at least ``min_ndim``) dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(value.shape)}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims (N, C, *spatial), got shape {tuple(value.shape)}")
    return value


def layer(
    x: object, kernel_size: object, out_channels: object, stride: object, padding: object, dilation: object,
    groups: object, transposed: object, output_padding: object,
) -> ConvHyper:
    """The normalised layer whose input is ``x``; a non-empty batch is required."""
    x = check_tensor(x, "x")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    return conv_hyper(
        tuple(x.shape), kernel_size, out_channels, stride, padding, dilation, groups, "zeros", output_padding,
        transposed,
    )


def check_pair(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    """``other`` must share ``x``'s dtype and device."""
    if other.dtype != x.dtype or other.device != x.device:
        raise ValueError(
            f"{name} must have the dtype and device of x ({x.dtype} on {x.device}), "
            f"got {other.dtype} on {other.device}"
        )


def check_output(value: torch.Tensor, name: str, hyper: ConvHyper, leading: int = 0) -> None:
    """``value`` must be shaped like the layer output ``(N, C_out, *O)`` after ``leading`` extra axes."""
    if tuple(value.shape[leading:]) != tuple(hyper.output_shape):
        raise ValueError(
            f"{name} must end in the layer output shape {tuple(hyper.output_shape)}, got {tuple(value.shape)}"
        )


def gradient_layer(
    x: torch.Tensor, gradient: object, name: str, leading: int, kernel_size: object, stride: object, padding: object,
    dilation: object, groups: object, transposed: object, output_padding: object,
) -> tuple[torch.Tensor, ConvHyper]:
    """The layer of ``x`` whose output gradient is ``gradient``, and ``gradient`` checked.

    ``gradient`` (called ``name``) is ``(*L, N, C_out, *O)`` with ``leading``
    axes ``L`` (the GGN columns of ``sqrt_ggn``) before the layer output
    shape; it gives the layer's ``C_out`` and must match ``x``'s dtype and device.
    """
    ndim = getattr(x, "ndim", None)
    gradient = check_tensor(gradient, name, None if ndim is None else ndim + leading, 3 + leading)
    hyper = layer(
        x, kernel_size, gradient.shape[leading + 1], stride, padding, dilation, groups, transposed, output_padding
    )
    check_output(gradient, name, hyper, leading)
    check_pair(x, gradient, name)
    return gradient, hyper
