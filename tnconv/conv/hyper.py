"""Convolution hyper-parameters: normalised and validated in one place for every routine.

Every conv routine (networks, ``tnconv.functional``, ``tnconv.nn``, curvature)
turns its arguments into a ``ConvHyper`` through ``conv_hyper``; nothing else
parses ``stride``/``padding``/... . A ``ConvHyper`` holds per-dim tuples of
ints, is frozen and hashable (a cache key), and knows the index patterns of
its convolution.

Accepted forms (N = number of spatial dims):

- ``stride``, ``dilation``, ``output_padding``, ``kernel_size``: an int, or a
  tuple/list/``torch.Size`` of N ints.
- ``padding``: an int, a tuple of N ints, ``"same"``, ``"valid"``, or a tuple
  of N entries that are ints or ``(left, right)`` pairs. ``"same"`` puts the
  extra pixel on the right, as PyTorch does.

Errors: ``TypeError`` for a wrong type (bool, float, str where an int is
needed), ``ValueError`` for a wrong value; both name the argument and value.

Sizes are checked as results too: every integer must fit in int64 (torch's
index type), and a layer whose padded input ``(N, C_in, *(I + P))`` or output
``(N, C, *O)`` would hold more than ``MAX_ELEMENTS`` elements is refused with
a ``ValueError`` naming the arguments that make it so (``padding=10**12`` on a
4x4 input), before any allocator or kernel error.

Symbolic layers (``conv_hyper(..., symbolic=True)``, what ``tnconv.conv_network``
asks for): the batch, channels and spatial sizes of ``input_shape`` and
``out_channels`` may be symbol names (``"N"``) or sympy expressions
(``tnconv.ir.sizes.as_size``); output sizes are then sympy expressions with
``floor``. A check that holds for some values of the symbols and not for others
(the kernel fits the padded input ``I``) is left to the call that binds them;
one that fails for all values still raises. Channels must be proven divisible
by ``groups`` (``2*C`` with ``groups=2``), since the split into groups is
part of the network.
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import Sequence, TypeGuard

import sympy

from tnconv.ir.sizes import Size, as_size, is_le, proven_divisible, quotient, symbols_of
from tnconv.ir.tensors import PADDING_MODES, IndexPattern

Pairs = tuple[tuple[int, int], ...]

INT64_MAX = 2**63 - 1
MAX_ELEMENTS = 2**40
"""The most elements (about 1.1e12: 4 TiB in float32, beyond any single device's memory) of a
tensor a conv routine lays out: a layer's padded input or output, a dense ``index_pattern``."""


def as_int(value: object, name: str) -> int:
    """``value`` as a Python int; TypeError for bool, float, str and other non-integers."""
    if isinstance(value, bool) or isinstance(value, (float, str, bytes)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    torch = sys.modules.get("torch")  # a tensor can only be passed where torch is loaded: never import it here
    if torch is not None and isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_floating_point() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        result = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if abs(result) > INT64_MAX:
        raise ValueError(f"{name} must fit in int64 (at most 2**63 - 1 in size), got {value!r}")
    return result


def is_sequence(value: object) -> TypeGuard[tuple[object, ...] | list[object]]:
    """Whether ``value`` is a tuple, list or ``torch.Size`` (the accepted per-dim containers; ``torch.Size``
    is a tuple)."""
    return isinstance(value, (tuple, list))


def per_dim(value: object, dims: int, name: str, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``dims`` ints, each ``>= minimum``, as a tuple of ``dims`` ints."""
    if is_sequence(value):
        items = tuple(value)
        if len(items) != dims:
            raise ValueError(f"{name} must be an int or a tuple of {dims} ints, got {value!r} (length {len(items)})")
        result = tuple(as_int(v, f"{name}") for v in items)
    else:
        result = (as_int(value, name),) * dims
    if any(v < minimum for v in result):
        raise ValueError(f"{name} must be >= {minimum} in every dim, got {value!r}")
    return result


def padding_pairs(
    padding: object, dims: int, kernel_size: Sequence[int], dilation: Sequence[int], stride: Sequence[int]
) -> Pairs:
    """``padding`` as N ``(left, right)`` pairs of ints >= 0.

    ``"same"`` needs stride 1 and pads ``dilation*(kernel-1)`` in total, the
    odd pixel on the right; ``"valid"`` pads nothing.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dims
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' needs stride 1 in every dim, got stride={tuple(stride)}")
            totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if not is_sequence(padding):
        value = as_int(padding, "padding")
        pairs: Pairs = ((value, value),) * dims
    else:
        items = tuple(padding)
        if len(items) != dims:
            hint = f" (asymmetric padding is a tuple of {dims} (left, right) pairs)" if len(items) == 2 * dims else ""
            raise ValueError(
                f"padding must be an int or a tuple of {dims} ints or (left, right) pairs, "
                f"got {padding!r} (length {len(items)}){hint}"
            )
        built = []
        for item in items:
            if is_sequence(item):
                pair = tuple(item)
                if len(pair) != 2:
                    raise ValueError(f"padding entries must be ints or (left, right) pairs, got {item!r} in {padding!r}")
                built.append((as_int(pair[0], "padding"), as_int(pair[1], "padding")))
            else:
                value = as_int(item, "padding")
                built.append((value, value))
        pairs = tuple(built)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return pairs


def layer_shape(shape: object, name: str, symbolic: bool = False) -> tuple[Size, ...]:
    """A layer input shape ``(N, C, *I)`` as a tuple of sizes (at least one spatial dim).

    Ints, or with ``symbolic`` also symbol names and sympy expressions (``as_size``).
    """
    if not is_sequence(shape):
        raise TypeError(f"{name} must be a tuple of ints (or torch.Size), got {shape!r}")
    result = tuple(layer_size(v, name, symbolic) for v in shape)
    if len(result) < 3:
        raise ValueError(f"{name} must have at least 3 entries (batch, channels, spatial...), got {shape!r}")
    if any(is_le(v, -1) for v in result) or any(is_le(v, 0) for v in result[1:]):
        raise ValueError(f"{name} must have sizes >= 1 (batch >= 0), got {shape!r}")
    return result


def layer_size(value: object, name: str, symbolic: bool) -> Size:
    """One size of a layer: an int (``as_int``), or with ``symbolic`` also a symbol name or sympy expression."""
    if symbolic and isinstance(value, (str, sympy.Expr)):
        if isinstance(value, str) and not value.isidentifier():
            raise TypeError(f"{name} must be an int or a symbol name (an identifier such as 'N'), got {value!r}")
        return as_size(value, name)
    return as_int(value, name)


@dataclass(frozen=True)
class ConvHyper:
    """The normalised hyper-parameters of one conv layer (``transposed``: a ConvTranspose layer).

    ``input_shape`` is the layer input ``(N, C_in, *I)``. All per-dim fields
    are tuples of N ints; ``padding`` holds ``(left, right)`` pairs.
    ``out_channels`` is None where no weight or output channel is involved.
    """

    input_shape: tuple[Size, ...]
    kernel_size: tuple[int, ...]
    out_channels: Size | None
    stride: tuple[int, ...]
    padding: Pairs
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    output_padding: tuple[int, ...]
    transposed: bool

    @property
    def dims(self) -> int:
        """N, the number of spatial dims."""
        return len(self.kernel_size)

    @property
    def batch(self) -> Size:
        return self.input_shape[0]

    @property
    def in_channels(self) -> Size:
        return self.input_shape[1]

    @property
    def input_size(self) -> tuple[Size, ...]:
        """Spatial sizes of the layer input."""
        return self.input_shape[2:]

    @property
    def output_size(self) -> tuple[Size, ...]:
        """Spatial sizes of the layer output (of the transposed conv when ``transposed``)."""
        if self.transposed:
            return tuple(
                (i - 1) * s - left - right + d * (k - 1) + op + 1
                for i, k, s, (left, right), d, op in zip(
                    self.input_size, self.kernel_size, self.stride, self.padding, self.dilation, self.output_padding
                )
            )
        return tuple(p.output_size for p in self.patterns)

    @property
    def patterns(self) -> tuple[IndexPattern, ...]:
        """The index pattern of each spatial dim, legs ``(k, o, i)`` of the (non-transposed) conv.

        For a transposed layer this is the pattern of the conv it transposes:
        ``i`` runs over the transposed output, ``o`` over its input; the right
        padding absorbs ``output_padding`` so that the pattern's output size is
        the layer's input size. Any right padding in ``[right - op, right - op + S - 1]``
        gives that size and the same entries; the smallest one >= 0 is used (it is
        negative only when ``op >= S``, which PyTorch allows for ``dilation > S``).
        """
        if self.transposed:
            return tuple(
                IndexPattern(size, k, s, left, _crop_right(right - op, s), d, "zeros")
                for size, k, s, (left, right), d, op in zip(
                    self.output_size, self.kernel_size, self.stride, self.padding, self.dilation, self.output_padding
                )
            )
        return tuple(
            IndexPattern(i, k, s, left, right, d, self.padding_mode)
            for i, k, s, (left, right), d in zip(self.input_size, self.kernel_size, self.stride, self.padding, self.dilation)
        )

    @property
    def kernel_elements(self) -> int:
        """prod(K)."""
        return math.prod(self.kernel_size)

    @property
    def patch_size(self) -> Size:
        """``d = C_in // G * prod(K)``: the entries of one group's patch, the rows of its Kronecker factor ``A``."""
        return self.in_channels // self.groups * self.kernel_elements

    @property
    def weight_shape(self) -> tuple[Size, ...]:
        """The torch weight shape: ``(C_out, C_in // G, *K)``, or ``(C_in, C_out // G, *K)`` when transposed."""
        if self.out_channels is None:
            raise ValueError("out_channels is needed for the weight shape, got None")
        if self.transposed:
            return (self.in_channels, quotient(self.out_channels, self.groups), *self.kernel_size)
        return (self.out_channels, quotient(self.in_channels, self.groups), *self.kernel_size)

    @property
    def output_shape(self) -> tuple[Size, ...]:
        """The layer output shape ``(N, C_out, *O)``."""
        if self.out_channels is None:
            raise ValueError("out_channels is needed for the output shape, got None")
        return (self.batch, self.out_channels, *self.output_size)


def _crop_right(lowest: int, stride: int) -> int:
    """The smallest right padding >= 0 in ``[lowest, lowest + stride - 1]``, else the largest one."""
    return lowest if lowest >= 0 else min(0, lowest + stride - 1)


def conv_hyper(
    input_shape: object,
    kernel_size: object,
    out_channels: object = None,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
    padding_mode: object = "zeros",
    output_padding: object = 0,
    transposed: object = False,
    *,
    symbolic: bool = False,
) -> ConvHyper:
    """Validate and normalise a conv layer's hyper-parameters.

    Args:
        input_shape: the layer input shape ``(N, C_in, *I)``; N = ``len(input_shape) - 2``.
        kernel_size: int or N ints (``weight.shape[2:]`` works).
        out_channels: C_out, or None where no weight/output channel is involved.
        stride, dilation: int or N ints, each >= 1.
        padding: see the module docstring (``"same"`` only when not ``transposed``).
        groups: G >= 1 dividing C_in (and C_out when given).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (only zeros when transposed).
        output_padding: int or N ints (transposed only), each < max(stride, dilation) as in PyTorch.
        transposed: whether the layer is a ConvTranspose.
        symbolic: whether ``input_shape`` and ``out_channels`` may hold symbols (module docstring).

    Raises:
        TypeError, ValueError: naming the argument and the offending value.
    """
    shape = layer_shape(input_shape, "input_shape", symbolic)
    dims = len(shape) - 2
    if not isinstance(transposed, bool):
        raise TypeError(f"transposed must be a bool, got {transposed!r}")
    kernel = per_dim(kernel_size, dims, "kernel_size", 1)
    strides = per_dim(stride, dims, "stride", 1)
    dilations = per_dim(dilation, dims, "dilation", 1)
    if transposed and isinstance(padding, str) and padding == "same":
        raise ValueError(
            "padding='same' is not defined for a transposed convolution (torch's conv_transpose rejects it too); "
            "give an int, a tuple of ints or (left, right) pairs, or 'valid'"
        )
    pairs = padding_pairs(padding, dims, kernel, dilations, strides)
    group_count = as_int(groups, "groups")
    if group_count < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    _check_divisible("in_channels", shape[1], group_count)
    channels = None
    if out_channels is not None:
        channels = layer_size(out_channels, "out_channels", symbolic)
        if is_le(channels, 0):
            raise ValueError(f"out_channels must be >= 1, got {out_channels!r}")
        _check_divisible("out_channels", channels, group_count)
    if not isinstance(padding_mode, str):
        raise TypeError(f"padding_mode must be a str, got {padding_mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    extra = per_dim(output_padding, dims, "output_padding", 0)
    if transposed:
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for a transposed convolution, got {padding_mode!r}")
        for op, s, d in zip(extra, strides, dilations):
            if op >= max(s, d):
                raise ValueError(
                    f"output_padding must be smaller than max(stride, dilation) in every dim, got "
                    f"output_padding={output_padding!r} with stride={strides}, dilation={dilations}"
                )
    elif any(extra):
        raise ValueError(f"output_padding applies to transposed convolutions only, got {output_padding!r}")
    _check_padding_mode(padding_mode, pairs, shape[2:], padding)
    hyper = ConvHyper(shape, kernel, channels, strides, pairs, dilations, group_count, padding_mode, extra, transposed)
    _check_extent(hyper, padding)
    _check_elements(hyper, padding, stride, dilation, output_padding)
    return hyper


def _check_divisible(name: str, channels: Size, groups: int) -> None:
    """``channels % groups == 0``, proven for all values of the symbols in ``channels``."""
    if proven_divisible(channels, groups):
        return
    if isinstance(channels, int):
        raise ValueError(f"{name}={channels} must be divisible by groups={groups}")
    symbols = ", ".join(sorted(map(str, symbols_of((channels,)))))
    raise ValueError(
        f"{name}={channels} must be divisible by groups={groups}, which is not proven for all values of {symbols}; "
        f"give {name} as a multiple of {groups} (e.g. {groups}*{channels})"
    )


def _check_padding_mode(mode: str, pairs: Pairs, size: Sequence[Size], padding: object) -> None:
    """PyTorch's limits: reflect needs padding < input size, circular padding <= input size (where decided)."""
    if mode == "reflect" and any(is_le(i, max(pair)) for pair, i in zip(pairs, size)):
        raise ValueError(
            f"padding_mode='reflect' needs padding smaller than the input size in every dim, "
            f"got padding={padding!r} for input size {tuple(size)}"
        )
    if mode == "circular" and any(is_le(i + 1, max(pair)) for pair, i in zip(pairs, size)):
        raise ValueError(
            f"padding_mode='circular' needs padding at most the input size in every dim, "
            f"got padding={padding!r} for input size {tuple(size)}"
        )


def _check_extent(hyper: ConvHyper, padding: object) -> None:
    """The (dilated) kernel must fit in the padded input; a transposed output must be non-empty (where decided)."""
    if hyper.transposed:
        if any(is_le(o, 0) for o in hyper.output_size):
            raise ValueError(
                f"transposed convolution output size {hyper.output_size} is not positive: padding={padding!r} "
                f"is too large for input size {hyper.input_size}, kernel_size={hyper.kernel_size}, "
                f"stride={hyper.stride}, dilation={hyper.dilation}"
            )
        return
    for d, (i, k, dil, (left, right)) in enumerate(zip(hyper.input_size, hyper.kernel_size, hyper.dilation, hyper.padding)):
        extent = dil * (k - 1) + 1
        if is_le(i + left + right + 1, extent):
            raise ValueError(
                f"kernel_size={hyper.kernel_size} (dilation={hyper.dilation}) spans {extent} pixels in dim {d}, "
                f"larger than the padded input size {i} + {left} + {right} (padding={padding!r})"
            )


def _check_elements(hyper: ConvHyper, padding: object, stride: object, dilation: object, output_padding: object) -> None:
    """The padded input and the output of the layer must each hold at most ``MAX_ELEMENTS`` elements.

    For a transposed layer, the padded input is that of the conv it transposes
    (its ``I`` is the layer's output).
    """
    padded = tuple(p.input_size + p.pad_left + p.pad_right for p in hyper.patterns)
    size = hyper.batch * hyper.in_channels * math.prod(padded)
    if is_le(MAX_ELEMENTS + 1, size):
        what = f"padding={padding!r}" if not hyper.transposed else (
            f"stride={stride!r}, padding={padding!r}, dilation={dilation!r}, output_padding={output_padding!r}"
        )
        raise ValueError(
            f"{what} with input shape {hyper.input_shape} and kernel_size={hyper.kernel_size} makes a padded input "
            f"(N, C_in, *(I + P)) = {(hyper.batch, hyper.in_channels, *padded)} of {_count(size)} elements, more than "
            f"tnconv.conv.hyper.MAX_ELEMENTS = 2**40"
        )
    channels = hyper.out_channels if hyper.out_channels is not None else hyper.in_channels
    size = hyper.batch * channels * math.prod(hyper.output_size)
    if is_le(MAX_ELEMENTS + 1, size):
        raise ValueError(
            f"stride={stride!r}, padding={padding!r}, dilation={dilation!r}, output_padding={output_padding!r} "
            f"with input shape {hyper.input_shape}, kernel_size={hyper.kernel_size} and {channels} channels make an "
            f"output (N, C, *O) = {(hyper.batch, channels, *hyper.output_size)} of {_count(size)} elements, more than "
            f"tnconv.conv.hyper.MAX_ELEMENTS = 2**40"
        )


def _count(elements: Size) -> str:
    """A number of elements for a message: ``1.100e+12``, or the expression when symbolic."""
    return f"{elements:.3e}" if isinstance(elements, int) else str(elements)
