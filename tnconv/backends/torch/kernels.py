"""Native kernel calls (``tnconv.lower.kernels``) as torch callables on the operands, built once.

Each takes the operands in ``Network.operands`` order: its operands are
arranged (views, permutation, reshape: ``tnconv.lower.layout.Arrange``), the
kernel runs, and its result is restored into the output's legs.

The runner bounds a call's result by the allocation limit (``tnconv.limits``);
the padded copy of the input that a call makes on its way (asymmetric or
non-zero padding), which can be far larger than both the operands and the
result (a large one-sided padding with an equally large stride), is checked
here against the same limit before it is made. PyTorch's own
buffers inside a kernel (oneDNN's reordered copies of the operands) are not
counted.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from typing_extensions import assert_never

from tnconv.backends.torch.steps import pairwise
from tnconv.backends.torch.views import chain, signed_pad
from tnconv.limits import check_allocation
from tnconv.lower.kernels import (
    ConvCall, ConvTransposeCall, ConvWeightCall, FoldCall, KernelCall, MatmulCall, Spatial, UnfoldCall,
)
from tnconv.lower.layout import Arrange, Restore

Operands = Sequence[torch.Tensor]
Kernel = Callable[[Operands], torch.Tensor]

CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRANSPOSE: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d,
}


def arrangement(arrange: Arrange) -> Callable[[Operands], torch.Tensor]:
    """``arrange`` as a call on the operands (plain indexing when the operand is taken as it is; closures and
    indexing only, which ``torch.compile`` traces - not ``operator.itemgetter``)."""
    number = arrange.operand
    views, permutation, shape = chain(arrange.views), arrange.permutation, arrange.shape
    if views is None and permutation is None and shape is None:
        return lambda operands: operands[number]

    def arranged(operands: Operands) -> torch.Tensor:
        tensor = operands[number]
        if views is not None:
            tensor = views(tensor)
        if permutation is not None:
            tensor = tensor.permute(permutation)
        return tensor if shape is None else tensor.reshape(shape)

    return arranged


def restoration(restore: Restore) -> Callable[[torch.Tensor], torch.Tensor]:
    """``restore`` as a call on a kernel's result."""
    shape, permutation = restore.shape, restore.permutation
    if permutation is None:
        return lambda result: result.reshape(shape)
    return lambda result: result.reshape(shape).permute(permutation)


def padding(spatial: Spatial) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The pad applied before the kernel (None: none), its padded copy bounded first."""
    pad, mode = spatial.pad, spatial.mode
    if pad is None:
        return None
    grow = [(max(pad[2 * n], 0) + max(pad[2 * n + 1], 0)) for n in range(len(pad) // 2)][::-1]  # first dim first

    def padded(x: torch.Tensor) -> torch.Tensor:
        leading = x.ndim - len(grow)
        shape = (*x.shape[:leading], *(size + more for size, more in zip(x.shape[leading:], grow)))
        elements = math.prod(shape)
        check_allocation(elements, x.element_size(), lambda: f"the input {tuple(x.shape)} padded to {shape} for a kernel")
        return signed_pad(x, pad, mode)

    return padded


def kernel(call: KernelCall) -> Kernel:
    """The torch callable of a native kernel call."""
    match call:
        case ConvCall():
            return _conv(call)
        case ConvTransposeCall():
            return _transpose(call)
        case ConvWeightCall():
            return _weight(call)
        case UnfoldCall():
            return _unfold(call)
        case FoldCall():
            return _fold(call)
        case MatmulCall():
            return _matmul(call)
        case _:
            assert_never(call)


def _conv(call: ConvCall) -> Kernel:
    s = call.spatial
    x_of, w_of, out, pad = arrangement(call.x), arrangement(call.w), restoration(call.out), padding(s)
    conv, stride, padded, dilation, groups = CONV[len(s.kernel)], s.stride, s.padding, s.dilation, call.groups

    def run(operands: Operands) -> torch.Tensor:
        x = x_of(operands)
        if pad is not None:
            x = pad(x)
        return out(conv(x, w_of(operands), None, stride, padded, dilation, groups))

    return run


def _transpose(call: ConvTransposeCall) -> Kernel:
    s = call.spatial
    v_of, w_of, out = arrangement(call.v), arrangement(call.w), restoration(call.out)
    stride, padded, dilation, groups, crop = s.stride, s.padding, s.dilation, call.groups, call.crop
    if call.output_padding is not None:
        transpose, output_padding = TRANSPOSE[len(s.kernel)], call.output_padding

        def run(operands: Operands) -> torch.Tensor:
            result = transpose(v_of(operands), w_of(operands), None, stride, padded, output_padding, groups, dilation)
            return out(result if crop is None else signed_pad(result, crop))

        return run
    sizes, zeros = call.input_sizes, (0,) * len(s.kernel)

    def backward(operands: Operands) -> torch.Tensor:
        v = v_of(operands)
        result = torch.ops.aten.convolution_backward(
            v, v.new_empty(1).expand(v.shape[0], *sizes), w_of(operands), None, stride, padded, dilation,
            False, zeros, groups, (True, False, False),
        )[0]
        return out(result if crop is None else signed_pad(result, crop))

    return backward


def _weight(call: ConvWeightCall) -> Kernel:
    s = call.spatial
    x_of, v_of, out, pad = arrangement(call.x), arrangement(call.v), restoration(call.out), padding(s)
    stride, padded, dilation, groups, shape = s.stride, s.padding, s.dilation, call.groups, call.weight_shape
    zeros = (0,) * len(s.kernel)

    def run(operands: Operands) -> torch.Tensor:
        x = x_of(operands)
        if pad is not None:
            x = pad(x)
        result = torch.ops.aten.convolution_backward(
            v_of(operands), x, x.new_empty(1).expand(shape), None, stride, padded, dilation,
            False, zeros, groups, (False, True, False),
        )[1]
        return out(result)

    return run


def _unfold(call: UnfoldCall) -> Kernel:
    s = call.spatial
    x_of, out, pad = arrangement(call.x), restoration(call.out), padding(s)
    if call.im2col:
        kernel_size, dilation, padded, stride = s.kernel, s.dilation, s.padding, s.stride

        def im2col(operands: Operands) -> torch.Tensor:
            x = x_of(operands)
            if pad is not None:
                x = pad(x)
            return out(F.unfold(x, kernel_size, dilation, padded, stride))

        return im2col
    windows = [(2 + d, w.span, w.stride, w.dilation) for d, w in enumerate(s.windows)]

    def views(operands: Operands) -> torch.Tensor:
        x = x_of(operands)
        if pad is not None:
            x = pad(x)
        for axis, span, step, dilation in windows:
            x = x.unfold(axis, span, step)
            if dilation > 1:
                x = x[..., ::dilation]
        return out(x)

    return views


def _fold(call: FoldCall) -> Kernel:
    s = call.spatial
    x_of, out, crop = arrangement(call.x), restoration(call.out), call.crop
    size, kernel_size, dilation, padded, stride = call.size, s.kernel, s.dilation, s.padding, s.stride

    def run(operands: Operands) -> torch.Tensor:
        result = F.fold(x_of(operands), size, kernel_size, dilation, padded, stride)
        return out(result if crop is None else signed_pad(result, crop))

    return run


def _matmul(call: MatmulCall) -> Kernel:
    a_of, b_of, product = arrangement(call.a), arrangement(call.b), pairwise(call.product)
    return lambda operands: product(a_of(operands), b_of(operands))
