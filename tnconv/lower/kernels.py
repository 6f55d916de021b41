"""Native kernel calls as data: which PyTorch kernel computes a whole network, and with what arguments.

``tnconv.lower.native`` matches a network to one of these; the backend
(``tnconv.backends.torch.kernels``) turns it into a call. Each holds the
``Arrange`` of its operands and the ``Restore`` of its result
(``tnconv.lower.layout``) and the spatial hyper-parameters. None holds a batch
size (reshapes lead with -1, a transposed convolution takes the batch of its
operand), except a matrix product's recipe, which holds its sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

from tnconv.lower.layout import Arrange, Restore
from tnconv.lower.steps import Pairwise
from tnconv.lower.window import Window


@dataclass(frozen=True)
class Spatial:
    """The per-dimension hyper-parameters of the patterns, and the pad to apply before the kernel.

    ``padding`` goes to the kernel (symmetric, >= 0); ``pad`` (``F.pad`` order: last dim
    first; negative amounts crop) is applied before it with ``mode`` (``F.pad``'s name), or is None.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    pad: tuple[int, ...] | None
    mode: str
    windows: tuple[Window, ...]


@dataclass(frozen=True)
class ConvCall:
    """``F.conv{N}d`` on the (padded) input."""

    x: Arrange
    w: Arrange
    out: Restore
    spatial: Spatial
    groups: int


@dataclass(frozen=True)
class ConvTransposeCall:
    """The input VJP of a convolution (= a transposed convolution), cropped to the input pixels.

    ``output_padding`` given: ``F.conv_transpose{N}d``; else ``aten.convolution_backward`` for the
    input of shape ``(batch, *input_sizes)``, then ``crop`` (``F.pad`` order) where it is not None.
    """

    v: Arrange
    w: Arrange
    out: Restore
    spatial: Spatial
    groups: int
    output_padding: tuple[int, ...] | None
    input_sizes: tuple[int, ...]  # the uncropped result's shape after its leading (batch) dim, that of ``v``
    crop: tuple[int, ...] | None


@dataclass(frozen=True)
class ConvWeightCall:
    """The weight VJP of a convolution: ``aten.convolution_backward`` for the weight only."""

    x: Arrange
    v: Arrange
    out: Restore
    spatial: Spatial
    groups: int
    weight_shape: tuple[int, ...]


@dataclass(frozen=True)
class UnfoldCall:
    """im2col: ``F.unfold`` in 2-d with zero padding where windows overlap or read padding (it copies once into
    its layout), otherwise pad + ``Tensor.unfold`` views (a patchify unfold is then a view, no copy)."""

    x: Arrange
    out: Restore
    spatial: Spatial
    im2col: bool


@dataclass(frozen=True)
class FoldCall:
    """col2im: ``F.fold`` (2-d, zero padding) onto the padded image of ``size``, cropped to the pixels."""

    x: Arrange
    out: Restore
    spatial: Spatial
    size: tuple[int, ...]
    crop: tuple[int, ...] | None


@dataclass(frozen=True)
class MatmulCall:
    """Two operands (views applied) multiplied by a fixed ``matmul`` recipe (``tnconv.lower.steps``)."""

    a: Arrange
    b: Arrange
    product: Pairwise


KernelCall = Union[ConvCall, ConvTransposeCall, ConvWeightCall, UnfoldCall, FoldCall, MatmulCall]


@dataclass(frozen=True)
class Native:
    """One kernel computes the network: ``name`` (``"conv2d"``, ``"matmul"``, ...), the call, and its
    multiply-adds (one per combination of the legs other than the patterns' pixel legs; 0 for
    unfold and fold, which copy), and those legs."""

    name: str
    kernel: KernelCall
    multiply_adds: int
    legs: tuple[str, ...] = field(default=(), compare=False)
    """The legs whose sizes multiply to ``multiply_adds`` (their product; none for unfold and fold)."""


@dataclass(frozen=True)
class Created:
    """A tensor that a kernel call allocates: the aten op that returned it and its shape."""

    op: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class KernelCost:
    """What one call of a native kernel does: its FLOPs and the tensors it allocates, in order.

    ``flops`` is 2 per multiply-add (0 for unfold and fold, which copy and add);
    sizes are exact integers.
    """

    flops: int
    created: tuple[Created, ...]

    @property
    def largest(self) -> int:
        """Elements of the largest tensor created (0 when the kernel only returns views)."""
        return max((tensor.elements for tensor in self.created), default=0)
