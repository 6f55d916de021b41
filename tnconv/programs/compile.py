"""``tnconv.compile``: network -> cached ``Program``."""

from __future__ import annotations

from typing import overload

from tnconv.ir.network import Network
from tnconv.ir.networksum import NetworkSum
from tnconv.lower.optimize import normalize_optimize
from tnconv.programs.program import Program, compiled
from tnconv.programs.sum import SumProgram, compile_sum


@overload
def compile(net: Network, optimize: object = "auto", *, memory_limit: int | None = None) -> Program: ...


@overload
def compile(net: NetworkSum, optimize: object = "auto", *, memory_limit: int | None = None) -> SumProgram: ...


def compile(  # noqa: A001 - the public name
    net: Network | NetworkSum, optimize: object = "auto", *, memory_limit: int | None = None
) -> Program | SumProgram:
    """Lower ``net`` to a ``Program`` that runs it with torch.

    A network that one PyTorch kernel computes (a convolution, its VJPs, a
    transposed convolution, unfold, fold, a matrix product) runs on that
    kernel; any other runs as pairwise contraction steps (fixed permute /
    reshape / matmul calls) with its index patterns applied as strided views,
    gathers and scatters (``Program.strategy`` says which). The
    contraction order comes from opt_einsum (``optimize``, what
    ``opt_einsum.contract`` takes, ``tnconv.lower.optimize``: ``True``/``None``
    for ``"auto"``; ``False`` for the tensors' own order, left to right; the name
    of an opt_einsum path function such as ``"auto"``, ``"greedy"``,
    ``"optimal"``, ``"dp"``, ``"eager"``, ``"branch-2"`` or one registered with
    ``opt_einsum.paths.register_path_fn``; an optimizer object, an opt_einsum
    ``PathOptimizer`` such as ``DynamicProgramming()`` or a cotengra optimizer
    such as ``HyperOptimizer()``; or an explicit path over ``net.entries``,
    which also builds index patterns densely).
    ``memory_limit`` (elements) bounds every intermediate of the einsum path
    by slicing the contraction over legs (same result, more steps); when it is
    given, native kernels (whose workspaces tnconv does not control) are not
    used. Programs are cached by network (structure and sizes), optimizer and
    limit: compiling the same thing twice returns the same object (an
    optimizer object counts as the same only when it is the same object). The cache
    (``tnconv.programs.cache.PROGRAMS``) is bounded by the bytes of the
    structured constants its programs hold (512 MiB by default) and by count
    (1024); ``tnconv.clear_caches()`` empties it. A network with symbolic
    sizes gives one symbolic program: its plan chosen at representative sizes,
    its costs sympy expressions, its calls run the concrete program of the
    operands' shapes (compiled once per shape; ``Program.specialize``).

    The network is verified (``tnconv.verify``) when it is first compiled:
    an ``InvariantError`` (a ``ValueError``) names the tensor and legs that
    break an invariant, such as two occurrences of one operand with legs of
    different sizes.
    """
    if not isinstance(net, (Network, NetworkSum)):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int):
            raise TypeError(f"memory_limit must be an int (elements) or None, got {memory_limit!r}")
        if memory_limit < 1:
            raise ValueError(f"memory_limit must be >= 1 element, got {memory_limit}")
    if isinstance(net, NetworkSum):  # the product rule's sum of networks: one program per term
        return compile_sum(net, normalize_optimize(optimize), memory_limit)
    return compiled(net, normalize_optimize(optimize), memory_limit)
