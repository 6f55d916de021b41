"""Tensor kinds: what a tensor of a network is, beyond its legs.

- ``Data``: an operand the user binds by name (optionally seen through views).
- ``IndexPattern``: the 0/1 tensor ``Pi[k, o, i]`` of a convolution, carried as
  its hyper-parameters (possibly symbolic), never as numbers.
- ``PatternSum``: ``sum_o Pi[k, o, i]``, the small ``(K, I)`` counts matrix
  that KFAC-reduce needs.
- ``Identity``: the generalised Kronecker delta over all of its legs.
- ``Ones``: the all-ones tensor (a sum over its legs).

Structured kinds (all but ``Data``) are built by the backend on the operands'
device and dtype (``tnconv.backends.torch.constants``); users never pass them.
Kinds are plain data: the index arithmetic here is pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Mapping

import sympy

from tnconv.ir.sizes import Size, substitute

if TYPE_CHECKING:
    from tnconv.ir.views import View

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Kind:
    """Base of the tensor kinds."""

    label: ClassVar[str] = "kind"
    structured: ClassVar[bool] = True

    def implied_sizes(self) -> tuple[Size, ...] | None:
        """The leg sizes this kind fixes (in leg order), or None when it fixes none."""
        return None

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Kind":
        return self

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class Data(Kind):
    """An operand bound by name; ``views`` turn the operand into the tensor's legs."""

    label: ClassVar[str] = "data"
    structured: ClassVar[bool] = False
    views: tuple[View, ...] = ()

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> "Data":
        if not self.views:
            return self
        return Data(tuple(v.substitute(values) for v in self.views))

    def describe(self) -> str:
        if not self.views:
            return "data"
        return "data via " + " . ".join(str(v) for v in self.views)


@dataclass(frozen=True)
class Identity(Kind):
    """``delta[a, b, ...] = 1`` iff all indices are equal; all legs share one size."""

    label: ClassVar[str] = "identity"


@dataclass(frozen=True)
class Ones(Kind):
    """The all-ones tensor: contracting with it sums a leg out."""

    label: ClassVar[str] = "ones"


@dataclass(frozen=True)
class IndexPattern(Kind):
    """``Pi[k, o, i] = 1`` iff ``pad(stride*o + dilation*k - pad_left) == i`` (legs ``(k, o, i)``).

    ``pad`` is the identity for ``mode="zeros"`` (positions outside ``[0, I)``
    contribute nothing) and folds outside positions back into range for
    ``reflect``, ``replicate`` and ``circular`` padding.
    """

    label: ClassVar[str] = "index_pattern"
    input_size: Size
    kernel_size: Size
    stride: Size = 1
    pad_left: Size = 0
    pad_right: Size = 0
    dilation: Size = 1
    mode: str = "zeros"

    @property
    def output_size(self) -> Size:
        span = self.input_size + self.pad_left + self.pad_right - self.dilation * (self.kernel_size - 1) - 1
        if isinstance(span, int) and isinstance(self.stride, int):
            return span // self.stride + 1
        return sympy.floor(span / self.stride) + 1

    def implied_sizes(self) -> tuple[Size, ...]:
        return (self.kernel_size, self.output_size, self.input_size)

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> IndexPattern:
        return IndexPattern(
            substitute(self.input_size, values),
            substitute(self.kernel_size, values),
            substitute(self.stride, values),
            substitute(self.pad_left, values),
            substitute(self.pad_right, values),
            substitute(self.dilation, values),
            self.mode,
        )

    def misfit(self) -> str | None:
        """Why this pattern (concrete sizes) is no convolution's, in the words of ``tnconv.conv.hyper``'s checks
        of a layer, or None: its input size is not positive (a transposed convolution's output, where the
        pattern runs over it), or its dilated kernel spans more pixels than the padded input (no output)."""
        size, left, right = int(self.input_size), int(self.pad_left), int(self.pad_right)
        if size < 1:
            return f"transposed convolution output size (the convolution's input size) {size} is not positive"
        extent = int(self.dilation) * (int(self.kernel_size) - 1) + 1
        if size + left + right < extent:
            return (
                f"kernel_size={self.kernel_size} (dilation={self.dilation}) spans {extent} pixels, larger than the "
                f"padded input size {size} + {left} + {right} (padding=({left}, {right}))"
            )
        return None

    def fold(self, position: int) -> int:
        """The pixel that padded position ``position`` (``0`` is the first input pixel) reads, or -1 for zero padding.

        Sizes must be concrete. ``zeros``: -1 outside ``[0, I)``; ``replicate`` clamps,
        ``circular`` wraps, ``reflect`` mirrors (as ``torch.nn.functional.pad``).
        """
        size = int(self.input_size)
        if 0 <= position < size:
            return position
        if self.mode == "zeros":
            return -1
        if self.mode == "replicate":
            return min(max(position, 0), size - 1)
        if self.mode == "circular":
            return position % size
        if self.mode == "reflect":
            period = max(2 * (size - 1), 1)
            folded = position % period
            return period - folded if folded >= size else folded
        raise ValueError(f"mode must be one of {PADDING_MODES}, got {self.mode!r}")

    def read_positions(self) -> tuple[tuple[int, ...], ...]:
        """``[k][o]``: the pixel tap ``k`` of output ``o`` reads (``fold(S*o + D*k - P_left)``; -1 for zero padding)."""
        stride, dilation, left, size = int(self.stride), int(self.dilation), int(self.pad_left), int(self.input_size)
        end = stride * int(self.output_size)
        fold = self.fold
        return tuple(
            tuple(p if 0 <= p < size else fold(p) for p in range(dilation * k - left, dilation * k - left + end, stride))
            for k in range(int(self.kernel_size))
        )

    def describe(self) -> str:
        text = (
            f"index_pattern I={self.input_size} K={self.kernel_size} S={self.stride} "
            f"P=({self.pad_left},{self.pad_right}) D={self.dilation}"
        )
        return text if self.mode == "zeros" else f"{text} mode={self.mode}"


@dataclass(frozen=True)
class PatternSum(Kind):
    """``sum_o Pi[k, o, i]`` of an index pattern (legs ``(k, i)``): how often tap k reads pixel i."""

    label: ClassVar[str] = "pattern_sum"
    pattern: IndexPattern = field(default_factory=lambda: IndexPattern(1, 1))

    def implied_sizes(self) -> tuple[Size, ...]:
        return (self.pattern.kernel_size, self.pattern.input_size)

    def substitute(self, values: Mapping[sympy.Symbol, Size]) -> PatternSum:
        return PatternSum(self.pattern.substitute(values))

    def counts(self) -> tuple[tuple[int, ...], ...]:
        """``[k][i]``: how often tap ``k`` reads pixel ``i`` (the tensor's entries; sizes must be concrete)."""
        size = int(self.pattern.input_size)
        rows = []
        for taps in self.pattern.read_positions():
            row = [0] * size
            for pixel in taps:
                if pixel >= 0:
                    row[pixel] += 1
            rows.append(tuple(row))
        return tuple(rows)

    def describe(self) -> str:
        return "sum_o " + self.pattern.describe()
