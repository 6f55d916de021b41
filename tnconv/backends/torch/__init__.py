"""The torch backend: plans (``tnconv.lower.nodes``) interpreted as fixed torch calls.

- ``views``: view chains and ``Taps`` (also the einsum stage's gathers) as torch views;
- ``constants``: structured tensors, window-sum weights and index maps per dtype and device;
- ``kernels``: native kernel calls (``F.conv{N}d``, ``aten.convolution_backward``, ``matmul``, ...);
- ``steps``: the pairwise recipes as ``sum`` / ``permute`` / ``reshape`` / ``matmul`` calls;
- ``einsum``: einsum and sliced plans (preparations, steps, folds);
- ``runner``: ``Runner``, what a ``Program`` calls (operand checks, dispatch, constant cache);
- ``cost``: what a native kernel call allocates (run on meta tensors).
"""

from tnconv.backends.torch.runner import NativeKernel, Runner

__all__ = ["NativeKernel", "Runner"]
