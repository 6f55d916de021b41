"""Constructor arguments of the conv modules, in the forms torch's modules store them.

``tnconv.conv.hyper`` owns the parsing rules (it is the one place that normalises conv
hyper-parameters); this module only picks the attribute forms torch uses (tuples of N
ints, a padding string kept as given) and adds the checks a module can do before it sees
an input (channels vs groups, transposed-only restrictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from tnconv.conv.hyper import as_int, padding_pairs, per_dim
from tnconv.ir.tensors import PADDING_MODES

# a padding string, N ints (symmetric), or N (left, right) pairs
Padding = Union[str, tuple[int, ...], tuple[tuple[int, int], ...]]


@dataclass(frozen=True)
class ConvArguments:
    """Validated constructor arguments of a conv module with ``len(kernel_size)`` spatial dims."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Padding
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...]
    groups: int
    padding_mode: str


def positive(value: object, name: str) -> int:
    """``value`` as an int >= 1."""
    result = as_int(value, name)
    if result < 1:
        raise ValueError(f"{name} must be >= 1, got {name}={value!r}")
    return result


def module_padding(
    padding: object, dims: int, kernel_size: Sequence[int], dilation: Sequence[int], stride: Sequence[int]
) -> Padding:
    """``padding`` as stored on the module: a string as given, N ints when symmetric, else N pairs."""
    pairs = padding_pairs(padding, dims, kernel_size, dilation, stride)
    if isinstance(padding, str):
        return padding
    if all(left == right for left, right in pairs):
        return tuple(left for left, _ in pairs)
    return pairs


def padding_totals(padding: Padding, kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Left plus right padding in every spatial dim."""
    dims = len(kernel_size)
    return tuple(left + right for left, right in padding_pairs(padding, dims, kernel_size, dilation, (1,) * dims))


def conv_arguments(
    dims: object,
    in_channels: object,
    out_channels: object,
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    output_padding: object,
    groups: object,
    padding_mode: object,
    transposed: bool,
) -> ConvArguments:
    """Validate a conv module's constructor arguments (``dims`` = N spatial dims).

    Raises ``TypeError``/``ValueError`` naming the argument and value for what torch rejects
    (channels not divisible by groups, ``"same"`` with stride > 1, unknown padding modes, a
    non-zero padding mode or padding string on a transposed conv) and for non-positive sizes,
    negative paddings and ``output_padding >= max(stride, dilation)``.
    """
    n = positive(dims, "N")
    channels_in = positive(in_channels, "in_channels")
    channels_out = positive(out_channels, "out_channels")
    group_count = positive(groups, "groups")
    if channels_in % group_count:
        raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, groups={groups}")
    if channels_out % group_count:
        raise ValueError(f"out_channels must be divisible by groups, got out_channels={out_channels}, groups={groups}")
    kernel = per_dim(kernel_size, n, "kernel_size", 1)
    strides = per_dim(stride, n, "stride", 1)
    dilations = per_dim(dilation, n, "dilation", 1)
    if transposed and isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be ints, got padding={padding!r}")
    pad = module_padding(padding, n, kernel, dilations, strides)
    extra = per_dim(output_padding, n, "output_padding", 0)
    if any(op >= max(s, d) for op, s, d in zip(extra, strides, dilations)):
        raise ValueError(
            "output_padding must be smaller than either stride or dilation, got "
            f"output_padding={output_padding!r}, stride={strides}, dilation={dilations}"
        )
    if not isinstance(padding_mode, str):
        raise TypeError(f"padding_mode must be a str, got padding_mode={padding_mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got padding_mode={padding_mode!r}")
    if transposed and padding_mode != "zeros":
        raise ValueError(f"only padding_mode='zeros' is supported when transposed, got padding_mode={padding_mode!r}")
    return ConvArguments(channels_in, channels_out, kernel, strides, pad, dilations, extra, group_count, padding_mode)
