"""Transposed convolution modules: ``ConvTransposeNd`` for any N and ``ConvTranspose1d/2d/3d``,
drop-ins for ``torch.nn.ConvTranspose*d``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from tnconv import functional as tnf
from tnconv.conv.hyper import as_int, is_sequence
from tnconv.nn.arguments import padding_totals
from tnconv.nn.base import ConvBase, Device


class ConvTransposeNd(ConvBase):
    """``N``-d transposed convolution, ``torch.nn.ConvTranspose{N}d`` for any ``N >= 1``.

    ``forward(input, output_size=None)``: ``(n, C_in, *I) -> (n, C_out, *O)`` (``n`` may be
    absent), run by :func:`tnconv.functional.conv_transpose`; ``output_size`` picks the
    output padding as in torch. Only ``padding_mode="zeros"`` exists, as in torch.
    """

    transposed = True
    torch_classes = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}

    def __init__(
        self,
        N: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | tuple[tuple[int, int], ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, ...] = 1,
        padding_mode: str = "zeros",
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            N, in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip

    def _output_padding(self, input: Tensor, output_size: Sequence[int] | None) -> tuple[int, ...]:
        """``self.output_padding``, or the output padding that makes the output's spatial size ``output_size``.

        ``output_size`` holds N sizes, or also the leading batch/channel sizes (ignored), as in torch.
        """
        if output_size is None:
            return self.output_padding
        if not is_sequence(output_size):
            raise TypeError(f"output_size must be a list/tuple/torch.Size of ints, got output_size={output_size!r}")
        dims, leading = self.N, input.ndim - self.N
        sizes = [as_int(size, "output_size") for size in output_size]
        if len(sizes) == leading + dims:
            sizes = sizes[leading:]
        if len(sizes) != dims:
            raise ValueError(
                f"output_size must have {dims} or {leading + dims} entries for a {input.ndim}-d input, "
                f"got output_size={output_size!r}"
            )
        totals = padding_totals(self.padding, self.kernel_size, self.dilation)
        smallest = [
            (i - 1) * s - total + d * (k - 1) + 1
            for i, s, total, d, k in zip(input.shape[leading:], self.stride, totals, self.dilation, self.kernel_size)
        ]
        largest = [low + s - 1 for low, s in zip(smallest, self.stride)]
        if any(not low <= size <= high for size, low, high in zip(sizes, smallest, largest)):
            raise ValueError(
                f"output_size must lie between {smallest} and {largest} for an input of spatial size "
                f"{tuple(input.shape[leading:])}, got output_size={output_size!r}"
            )
        return tuple(size - low for size, low in zip(sizes, smallest))

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        self._check_input(input)
        output_padding = self._output_padding(input, output_size)
        return tnf.conv_transpose(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )


class FixedConvTranspose(ConvTransposeNd):
    """``ConvTransposeNd`` with ``N = spatial_dims`` set by the subclass: ``torch.nn.ConvTranspose{N}d``'s signature."""

    spatial_dims: ClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | tuple[tuple[int, int], ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, ...] = 1,
        padding_mode: str = "zeros",
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            self.spatial_dims, in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation, padding_mode, device, dtype,
        )  # fmt: skip


class ConvTranspose1d(FixedConvTranspose):
    """1-d transposed convolution with ``torch.nn.ConvTranspose1d``'s signature; see :class:`ConvTransposeNd`."""

    spatial_dims = 1


class ConvTranspose2d(FixedConvTranspose):
    """2-d transposed convolution with ``torch.nn.ConvTranspose2d``'s signature; see :class:`ConvTransposeNd`."""

    spatial_dims = 2


class ConvTranspose3d(FixedConvTranspose):
    """3-d transposed convolution with ``torch.nn.ConvTranspose3d``'s signature; see :class:`ConvTransposeNd`."""

    spatial_dims = 3
