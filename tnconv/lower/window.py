"""``Window``: an index pattern with integer hyper-parameters, as kernels, taps and folds use it."""

from __future__ import annotations

from dataclasses import dataclass

from tnconv.ir.tensors import IndexPattern


@dataclass(frozen=True)
class Window:
    """An index pattern with integer hyper-parameters (what taps, gathers and folds need)."""

    input_size: int
    kernel_size: int
    output_size: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int
    mode: str

    @classmethod
    def of(cls, pattern: IndexPattern) -> "Window":
        return cls(
            int(pattern.input_size), int(pattern.kernel_size), int(pattern.output_size), int(pattern.stride),
            int(pattern.dilation), int(pattern.pad_left), int(pattern.pad_right), pattern.mode,
        )

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel_size - 1) + 1

    def pattern(self) -> IndexPattern:
        return IndexPattern(
            self.input_size, self.kernel_size, self.stride, self.pad_left, self.pad_right, self.dilation, self.mode
        )
