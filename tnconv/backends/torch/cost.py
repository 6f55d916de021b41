"""What one call of a native kernel allocates, recorded by running it on meta tensors (no data, no arithmetic)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tnconv.lower.kernels import Created, KernelCost, Native


def kernel_cost(
    native: Native, kernel: Callable[[Sequence[torch.Tensor]], torch.Tensor], shapes: Sequence[Sequence[int]]
) -> KernelCost:
    """The FLOPs of ``native`` (2 per multiply-add) and the tensors one call of ``kernel`` (the native kernel on
    the operands, ``tnconv.backends.torch.runner.NativeKernel``) creates.

    A tensor counts as created when an aten op returns one whose storage no earlier
    tensor had, so views (permutes, reshapes that need no copy, expands,
    ``Tensor.unfold``) do not count and padded copies, reordering copies and the
    result do.
    """
    created: list[Created] = []
    alive: list[torch.Tensor] = []  # keeps storages alive, so that a new one never reuses a seen address
    seen: set[int] = set()

    class Allocations(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            result = func(*args, **(kwargs or {}))
            for tensor in tree_leaves(result):
                if isinstance(tensor, torch.Tensor):
                    storage = tensor.untyped_storage()._cdata
                    if storage not in seen:
                        seen.add(storage)
                        created.append(Created(str(func.overloadpacket), tuple(tensor.shape)))
                    alive.append(tensor)
            return result

    operands = [torch.empty(tuple(int(size) for size in shape), device="meta") for shape in shapes]
    seen.update(operand.untyped_storage()._cdata for operand in operands)
    with Allocations():
        kernel(operands)
    return KernelCost(2 * native.multiply_adds, tuple(created))
