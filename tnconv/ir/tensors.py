"""Tensor kinds: what a tensor of a network is, beyond its legs.

- ``Data``: an operand the user binds by name (optionally seen through views).
- ``IndexPattern``: the 0/1 tensor ``Pi[k, o, i]`` of a convolution, carried as
  its hyper-parameters (possibly symbolic), never as numbers.
- ``PatternSum``: ``sum_o Pi[k, o, i]``, the small ``(K, I)`` counts matrix
  that KFAC-reduce needs.
- ``Identity``: the generalised Kronecker delta over all of its legs.
- ``Ones``: the all-ones tensor (a sum over its legs).

Structured kinds (all but ``Data``) are built by the program on the operands'
device and dtype; users never pass them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Mapping, Sequence

import sympy
import torch

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

    def materialize(
        self, shape: Sequence[int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        raise TypeError(f"a {self.label} tensor is bound by the user, not built")

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

    def materialize(self, shape, dtype, device):
        size = shape[0]
        result = torch.zeros(tuple(shape), dtype=dtype, device=device)
        index = torch.arange(size, device=device)
        result[(index,) * len(shape)] = 1
        return result


@dataclass(frozen=True)
class Ones(Kind):
    """The all-ones tensor: contracting with it sums a leg out."""

    label: ClassVar[str] = "ones"

    def materialize(self, shape, dtype, device):
        return torch.ones(tuple(shape), dtype=dtype, device=device)


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

    def substitute(self, values):
        fields = ("input_size", "kernel_size", "stride", "pad_left", "pad_right", "dilation")
        return replace(self, **{f: substitute(getattr(self, f), values) for f in fields})

    def positions(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(i[k, o], valid[k, o])``: the input index each (k, o) reads, and whether it reads one."""
        size, kernel, stride = int(self.input_size), int(self.kernel_size), int(self.stride)
        dilation, left = int(self.dilation), int(self.pad_left)
        outputs = torch.arange(int(self.output_size), device=device)
        taps = torch.arange(kernel, device=device)
        position = stride * outputs[None, :] + dilation * taps[:, None] - left
        inside = (position >= 0) & (position < size)
        if self.mode == "zeros":
            return position.clamp(0, size - 1), inside
        if self.mode == "replicate":
            return position.clamp(0, size - 1), torch.ones_like(inside)
        if self.mode == "circular":
            return position.remainder(size), torch.ones_like(inside)
        if self.mode == "reflect":
            period = max(2 * (size - 1), 1)
            folded = position.remainder(period)
            return torch.where(folded >= size, period - folded, folded), torch.ones_like(inside)
        raise ValueError(f"mode must be one of {PADDING_MODES}, got {self.mode!r}")

    def materialize(self, shape, dtype, device):
        index, valid = self.positions(device)
        result = torch.zeros(tuple(shape), dtype=dtype, device=device)
        result.scatter_(2, index.unsqueeze(-1), valid.unsqueeze(-1).to(dtype))
        return result

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

    def substitute(self, values):
        return PatternSum(self.pattern.substitute(values))

    def materialize(self, shape, dtype, device):
        index, valid = self.pattern.positions(device)
        result = torch.zeros(tuple(shape), dtype=dtype, device=device)
        result.scatter_add_(1, index, valid.to(dtype))
        return result

    def describe(self) -> str:
        return "sum_o " + self.pattern.describe()
