"""Hypothesis strategies for conv layers, and PyTorch references for any N (shared by the test files).

``conv_layers(max_dims=3, transposed=False)`` draws small, valid conv layers
(``ConvLayer``): shapes, every accepted form of the hyper-parameters (ints,
tuples, ``"same"``, ``"valid"``, asymmetric ``(left, right)`` pairs), groups,
odd sizes, size-1 legs, and kernels exactly as large as the padded input.

The references (``reference_conv``, ``reference_conv_transpose``) use only
PyTorch: ``F.pad`` + ``F.conv{1,2,3}d`` (``conv_transpose`` + crop), and for
N > 3 a sum of lower-dim convs over the first spatial dim. They read the
layer's padding as pairs computed here, independently of tnconv's parser.

Import from a test file as ``from strategies import conv_layers`` (pytest puts
``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

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
) -> ConvLayer:
    """Small valid conv layers (ConvTranspose layers when ``transposed``).

    Non-"zeros" ``padding_modes`` give symmetric int/tuple/"same"/"valid" padding
    within PyTorch's limits (reflect: padding < input size; circular: <=);
    ``"same"`` only for non-transposed layers, as in PyTorch.
    """
    dims = draw(st.integers(min_dims, max_dims))
    mode = "zeros" if transposed else draw(st.sampled_from(tuple(padding_modes)))
    groups = draw(st.integers(1, max_groups))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, max_batch))
    small = 4 if dims <= 2 else 3
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
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


# --- references ---------------------------------------------------------------------------


def flat_pad(pairs: Pairs) -> tuple[int, ...]:
    """``F.pad``'s argument for per-dim pairs (last dim first)."""
    return tuple(v for pair in reversed(pairs) for v in pair)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def reference_conv(
    x: torch.Tensor, w: torch.Tensor, stride: Sequence[int], pairs: Pairs, dilation: Sequence[int], groups: int,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """PyTorch's conv of ``x`` padded by ``pairs`` (``F.pad`` with ``padding_mode``), any N."""
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(x, flat_pad(pairs), mode=mode) if any(v for p in pairs for v in p) else x
    return _unpadded_conv(padded, w, tuple(stride), tuple(dilation), groups)


def _unpadded_conv(x: torch.Tensor, w: torch.Tensor, stride: tuple, dilation: tuple, groups: int) -> torch.Tensor:
    dims = x.ndim - 2
    if dims <= 3:
        return _CONV[dims](x, w, stride=stride, dilation=dilation, groups=groups)
    s, d, k = stride[0], dilation[0], w.shape[2]
    outputs = (x.shape[2] - d * (k - 1) - 1) // s + 1
    slices = []
    for o in range(outputs):
        terms = [_unpadded_conv(x[:, :, s * o + d * t], w[:, :, t], stride[1:], dilation[1:], groups) for t in range(k)]
        slices.append(torch.stack(terms).sum(0))
    return torch.stack(slices, dim=2)


def reference_conv_transpose(
    x: torch.Tensor, w: torch.Tensor, stride: Sequence[int], pairs: Pairs, output_padding: Sequence[int],
    dilation: Sequence[int], groups: int,
) -> torch.Tensor:
    """PyTorch's transposed conv without padding, cropped by ``pairs``, any N."""
    full = _full_conv_transpose(x, w, tuple(stride), tuple(output_padding), tuple(dilation), groups)
    index = (slice(None), slice(None)) + tuple(slice(l, full.shape[2 + n] - r) for n, (l, r) in enumerate(pairs))
    return full[index]


def _full_conv_transpose(x, w, stride, output_padding, dilation, groups) -> torch.Tensor:
    dims = x.ndim - 2
    if dims <= 3:
        return _CONV_T[dims](x, w, stride=stride, output_padding=output_padding, dilation=dilation, groups=groups)
    s, d, k, op = stride[0], dilation[0], w.shape[2], output_padding[0]
    size = (x.shape[2] - 1) * s + d * (k - 1) + 1 + op
    result = None
    for o in range(x.shape[2]):
        for t in range(k):
            part = _full_conv_transpose(x[:, :, o], w[:, :, t], stride[1:], output_padding[1:], dilation[1:], groups)
            if result is None:
                result = part.new_zeros((part.shape[0], part.shape[1], size, *part.shape[2:]))
            result[:, :, s * o + d * t] += part
    return result


def reference_unfold(
    x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int], pairs: Pairs, dilation: Sequence[int]
) -> torch.Tensor:
    """im2col in F.unfold's layout ``(N, C*prod(K), L)`` for any N: a grouped conv with one-hot weights."""
    channels, taps = x.shape[1], math.prod(kernel_size)
    eye = torch.eye(taps, dtype=x.dtype).reshape(taps, 1, *kernel_size).repeat(channels, 1, *(1,) * len(kernel_size))
    columns = reference_conv(x, eye, stride, pairs, dilation, channels)
    return columns.flatten(2)
