"""``Unfold`` (im2col) and ``Fold`` (col2im) modules: ``torch.nn.Unfold``/``Fold`` for any N.

Like torch they store their arguments as given (so ``extra_repr`` reads the same) and have
no parameters. The number of spatial dims comes from the input (``Unfold``: ``x.ndim - 2``)
or from ``output_size`` (``Fold``), as in :mod:`tnconv.functional`.
"""

from __future__ import annotations

from typing import TypeVar, Union

import torch
from torch import Tensor
from torch.nn import Module

from tnconv import functional as tnf
from tnconv.conv.hyper import is_sequence, padding_pairs, per_dim

Size = Union[int, tuple[int, ...]]
PaddingArg = Union[str, int, tuple[int, ...], tuple[tuple[int, int], ...]]
WindowT = TypeVar("WindowT", bound="Unfold")
FoldT = TypeVar("FoldT", bound="Fold")


def _check_window(**arguments: object) -> None:
    """Validate window arguments before the input is known (N is fixed by the input or ``output_size``).

    Every tuple argument must have the same length N; ``padding`` is checked with the rules of
    ``tnconv.conv.hyper`` (ints, pairs, ``"same"``/``"valid"``).
    """
    lengths = {name: len(value) for name, value in arguments.items() if is_sequence(value)}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={arguments[name]!r}" for name in lengths)
        raise ValueError(f"tuple arguments must all have one length (the number of spatial dims), got {shown}")
    n = next(iter(lengths.values()), 1)
    minimum = {"output_size": 1, "kernel_size": 1, "dilation": 1, "stride": 1}
    checked = {name: per_dim(arguments[name], n, name, low) for name, low in minimum.items() if name in arguments}
    padding_pairs(arguments["padding"], n, checked["kernel_size"], checked["dilation"], checked["stride"])


class Unfold(Module):
    """Extract sliding local blocks: ``(n, C, *I) -> (n, C * prod(K), L)``, ``torch.nn.Unfold`` in any N-d.

    Run by :func:`tnconv.functional.unfold`: N is ``input.ndim - 2``, or ``input.ndim - 1``
    (an unbatched ``(C, *I)`` input) when ``kernel_size`` is a tuple of that length.
    """

    def __init__(self, kernel_size: Size, dilation: Size = 1, padding: PaddingArg = 0, stride: Size = 1) -> None:
        super().__init__()
        _check_window(kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        self.stride = stride

    def forward(self, input: Tensor) -> Tensor:
        return tnf.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return "kernel_size={kernel_size}, dilation={dilation}, padding={padding}, stride={stride}".format(
            **self.__dict__
        )

    @classmethod
    def from_torch(cls: type[WindowT], module: Module) -> WindowT:
        """An ``Unfold`` with the configuration of a ``torch.nn.Unfold``."""
        if not isinstance(module, torch.nn.Unfold):
            raise TypeError(f"module must be a torch.nn.Unfold, got module of type {type(module).__name__}")
        return cls(module.kernel_size, module.dilation, module.padding, module.stride).train(module.training)


class Fold(Module):
    """Sum sliding local blocks into a tensor: ``(n, C * prod(K), L) -> (n, C, *output_size)``.

    ``torch.nn.Fold`` in any N-d (N = number of entries of ``output_size``), run by
    :func:`tnconv.functional.fold`; the adjoint of :class:`Unfold`. An unbatched
    ``(C * prod(K), L)`` input gives a ``(C, *output_size)`` output, as in torch. With ints
    only, N is 2 (as ``torch.nn.Fold``).
    """

    def __init__(
        self, output_size: Size, kernel_size: Size, dilation: Size = 1, padding: PaddingArg = 0, stride: Size = 1
    ) -> None:
        super().__init__()
        _check_window(
            output_size=output_size, kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride
        )
        self.output_size = output_size
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        self.stride = stride

    def forward(self, input: Tensor) -> Tensor:
        return tnf.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (
            "output_size={output_size}, kernel_size={kernel_size}, "
            "dilation={dilation}, padding={padding}, stride={stride}".format(**self.__dict__)
        )

    @classmethod
    def from_torch(cls: type[FoldT], module: Module) -> FoldT:
        """A ``Fold`` with the configuration of a ``torch.nn.Fold``."""
        if not isinstance(module, torch.nn.Fold):
            raise TypeError(f"module must be a torch.nn.Fold, got module of type {type(module).__name__}")
        new = cls(module.output_size, module.kernel_size, module.dilation, module.padding, module.stride)
        return new.train(module.training)
