"""Conv layers for the tests: one ``ConvLayer`` type and the hypothesis strategies that draw it.

- ``conv_layers(max_dims=3, transposed=False)``: small, valid conv layers with
  every accepted form of the hyper-parameters (ints, tuples, ``"same"``,
  ``"valid"``, asymmetric ``(left, right)`` pairs), groups, odd sizes, size-1
  legs, and kernels exactly as large as the padded input.
- ``conv_cases(max_dims=2, padded=None)``: per-dim tuples with pairs of padding,
  leaning to the cases where the simplifier's rules fire (stride > kernel,
  kernel == stride, I == S*O, kernels covering the input) plus padded ones where
  they must not.
- ``curvature_layers``: conv or ConvTranspose layers for the curvature tests.
- ``conv_layer(...)``: a hand-written (non-transposed) layer for example-based tests;
  ``conv_net(layer, op)``: its unsimplified tnconv network.

Import as ``from support.layers import conv_layers`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from hypothesis import strategies as st

import tnconv
from tnconv.ir.network import Network

Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ConvLayer:
    """One conv (or ConvTranspose when ``transposed``) layer drawn by ``conv_layers``.

    ``x_shape`` = ``(N, C_in, *I)``; ``weight_shape`` is the torch weight
    (``(C_out, C_in // G, *K)``, or ``(C_in, C_out // G, *K)`` when transposed).
    ``stride``/``dilation``/``output_padding`` are ints or tuples, ``padding`` any
    accepted form; ``pairs`` is the padding as N ``(left, right)`` pairs.
    """

    x_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: int | tuple[int, ...]
    padding: object
    dilation: int | tuple[int, ...]
    groups: int
    padding_mode: str
    output_padding: int | tuple[int, ...]
    transposed: bool
    pairs: Pairs

    @property
    def dims(self) -> int:
        return len(self.x_shape) - 2

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight_shape[2:])

    @property
    def in_channels(self) -> int:
        return self.x_shape[1]

    @property
    def out_channels(self) -> int:
        if self.transposed:
            return self.weight_shape[1] * self.groups
        return self.weight_shape[0]

    @property
    def strides(self) -> tuple[int, ...]:
        return expand(self.stride, self.dims)

    @property
    def dilations(self) -> tuple[int, ...]:
        return expand(self.dilation, self.dims)

    @property
    def output_paddings(self) -> tuple[int, ...]:
        return expand(self.output_padding, self.dims)

    @property
    def output_size(self) -> tuple[int, ...]:
        """Spatial size of the layer output."""
        sizes = zip(self.x_shape[2:], self.kernel_size, self.strides, self.pairs, self.dilations, self.output_paddings)
        if self.transposed:
            return tuple((i - 1) * s - l - r + d * (k - 1) + op + 1 for i, k, s, (l, r), d, op in sizes)
        return tuple((i + l + r - d * (k - 1) - 1) // s + 1 for i, k, s, (l, r), d, _ in sizes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.x_shape[0], self.out_channels, *self.output_size)

    def direct_flops(self) -> int:
        """``2 * N * C_out * C_in/G * prod(K) * prod(O)``: a direct convolution's multiply-adds, times two."""
        total = 2 * self.x_shape[0] * self.out_channels * (self.in_channels // self.groups)
        for k, o in zip(self.kernel_size, self.output_size):
            total *= k * o
        return total

    def tensors(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A random input and weight for this layer."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.x_shape, generator=generator, dtype=dtype)
        w = torch.randn(self.weight_shape, generator=generator, dtype=dtype)
        return x, w


def expand(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _per_dim_form(draw: st.DrawFn, values: tuple[int, ...]) -> int | tuple[int, ...]:
    """An int when all values agree and the coin says so, else the tuple."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return values


@st.composite
def conv_layers(
    draw: st.DrawFn,
    max_dims: int = 3,
    transposed: bool = False,
    min_dims: int = 1,
    padding_modes: Sequence[str] = ("zeros",),
    max_groups: int = 3,
    max_batch: int = 2,
    max_kernel: int = 3,
) -> ConvLayer:
    """Small valid conv layers (ConvTranspose layers when ``transposed``).

    Kernels are 1..``max_kernel`` per dim. Non-"zeros" ``padding_modes`` give
    symmetric int/tuple/"same"/"valid" padding within PyTorch's limits (reflect:
    padding < input size; circular: <=); ``"same"`` only for non-transposed
    layers, as in PyTorch.
    """
    dims = draw(st.integers(min_dims, max_dims))
    mode = "zeros" if transposed else draw(st.sampled_from(tuple(padding_modes)))
    groups = draw(st.integers(1, max_groups))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, max_batch))
    small = 4 if dims <= 2 else 3
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    forms = ("int", "tuple", "valid", "pairs" if mode == "zeros" else "tuple")
    form = draw(st.sampled_from(forms if transposed else (*forms, "same")))  # torch has no transposed "same"
    if form == "same":
        stride = (1,) * dims
    if form == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        pairs: Pairs = tuple((t // 2, t - t // 2) for t in totals)
        padding: object = "same"
    elif form == "valid":
        pairs, padding = ((0, 0),) * dims, "valid"
    elif form == "int":
        value = draw(st.integers(0, 2))
        pairs, padding = ((value, value),) * dims, value
    elif form == "tuple":
        values = tuple(draw(st.integers(0, 2)) for _ in range(dims))
        pairs, padding = tuple((v, v) for v in values), values
    else:
        pairs = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(dims))
        padding = tuple(pair if pair[0] != pair[1] or draw(st.booleans()) else pair[0] for pair in pairs)
    output_padding = (0,) * dims
    sizes = []
    for d in range(dims):
        (left, right), k, dil, s = pairs[d], kernel[d], dilation[d], stride[d]
        if transposed:
            op = draw(st.integers(0, max(s, dil) - 1))
            output_padding = output_padding[:d] + (op,) + output_padding[d + 1 :]
            lowest = max(1, 1 + math.ceil((left + right - dil * (k - 1) - op) / s))
        else:
            lowest = max(1, dil * (k - 1) + 1 - left - right)  # kernel as large as the padded input
            if mode == "reflect":
                lowest = max(lowest, left + 1, right + 1)
            elif mode == "circular":
                lowest = max(lowest, left, right)
        sizes.append(draw(st.integers(lowest, lowest + small)))
    kernel_shape = tuple(kernel)
    if transposed:
        weight_shape = (c_in, c_out // groups, *kernel_shape)
    else:
        weight_shape = (c_out, c_in // groups, *kernel_shape)
    return ConvLayer(
        x_shape=(batch, c_in, *sizes),
        weight_shape=weight_shape,
        stride=_per_dim_form(draw, stride),
        padding=padding,
        dilation=_per_dim_form(draw, dilation),
        groups=groups,
        padding_mode=mode,
        output_padding=_per_dim_form(draw, output_padding) if transposed else 0,
        transposed=transposed,
        pairs=pairs,
    )


@st.composite
def curvature_layers(draw: st.DrawFn, transposed: bool | None = None, max_dims: int = 3) -> ConvLayer:
    """Small conv or ConvTranspose layers (zeros padding, every accepted padding form), any N <= max_dims."""
    is_transposed = draw(st.booleans()) if transposed is None else transposed
    return draw(conv_layers(max_dims=max_dims, transposed=is_transposed, max_batch=3))


def conv_layer(
    x_shape: tuple[int, ...],
    out_channels: int,
    kernel_size: tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: int | Pairs = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
) -> ConvLayer:
    """A hand-written (non-transposed, zeros-padded) layer; ``padding`` an int or per-dim ``(left, right)`` pairs."""
    dims = len(kernel_size)
    pairs = ((padding, padding),) * dims if isinstance(padding, int) else tuple(padding)
    return ConvLayer(
        x_shape, (out_channels, x_shape[1] // groups, *kernel_size), stride, padding, dilation, groups, "zeros", 0,
        False, pairs,
    )


@st.composite
def conv_cases(draw: st.DrawFn, max_dims: int = 2, padded: bool | None = None) -> ConvLayer:
    """Small conv layers with per-dim tuples; ``padded=False`` gives P = 0, ``True`` some padding, None either."""
    dims = draw(st.integers(1, max_dims))
    groups = draw(st.integers(1, 2))
    kernel, stride, dilation, padding, sizes = [], [], [], [], []
    for _ in range(dims):
        k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.sampled_from((1, 1, 2)))
        pad = draw(st.booleans()) if padded is None else padded
        pair = (draw(st.integers(0, 2)), draw(st.integers(0, 2))) if pad else (0, 0)
        lowest = max(1, d * (k - 1) + 1 - sum(pair))
        shape = draw(st.sampled_from(("any", "exact", "covers")))
        if shape == "exact" and pair == (0, 0):  # I == S*O: the blocked rules fire
            size = s * draw(st.integers(1, 3))
            size = max(size, s * ((lowest + s - 1) // s))
        elif shape == "covers":
            size = lowest
        else:
            size = draw(st.integers(lowest, lowest + 6))
        kernel.append(k), stride.append(s), dilation.append(d), padding.append(pair), sizes.append(size)
    batch = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    return conv_layer(
        (batch, c_in, *sizes), c_out, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups
    )


def conv_net(layer: ConvLayer, op: str = "forward") -> Network:
    """The unsimplified network of routine ``op`` for a (non-transposed) ``layer``."""
    return tnconv.conv_network(
        op,
        layer.x_shape,
        layer.kernel_size,
        out_channels=layer.out_channels,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        padding_mode=layer.padding_mode,
        simplify=False,
    )
