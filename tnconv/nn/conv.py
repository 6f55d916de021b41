"""Convolution modules: ``ConvNd`` for any N and ``Conv1d/2d/3d``, drop-ins for ``torch.nn.Conv*d``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from tnconv import functional as tnf
from tnconv.nn.base import ConvBase, Device


class ConvNd(ConvBase):
    """``N``-d convolution (cross-correlation), ``torch.nn.Conv{N}d`` for any ``N >= 1``.

    ``forward``: ``(n, C_in, *I) -> (n, C_out, *O)`` (``n`` may be absent, as in torch), run
    by :func:`tnconv.functional.conv` with this module's ``padding_mode``. ``padding`` also
    accepts N ``(left, right)`` pairs.
    """

    torch_classes = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}

    def __init__(
        self,
        N: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] | tuple[tuple[int, int], ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            N, in_channels, out_channels, kernel_size, stride, padding, dilation, 0, groups, bias, padding_mode,
            device, dtype,
        )  # fmt: skip

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        self._check_input(input)
        return tnf.conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.padding_mode)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)


class FixedConv(ConvNd):
    """``ConvNd`` with ``N = spatial_dims`` set by the subclass: ``torch.nn.Conv{N}d``'s signature."""

    spatial_dims: ClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] | tuple[tuple[int, int], ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            self.spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip


class Conv1d(FixedConv):
    """1-d convolution with ``torch.nn.Conv1d``'s signature; see :class:`ConvNd`."""

    spatial_dims = 1


class Conv2d(FixedConv):
    """2-d convolution with ``torch.nn.Conv2d``'s signature; see :class:`ConvNd`."""

    spatial_dims = 2


class Conv3d(FixedConv):
    """3-d convolution with ``torch.nn.Conv3d``'s signature; see :class:`ConvNd`."""

    spatial_dims = 3
