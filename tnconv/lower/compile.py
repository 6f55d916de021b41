"""``tnconv.compile``: network -> cached ``Program``."""

from __future__ import annotations

from functools import lru_cache

from tnconv.ir.network import Network
from tnconv.lower.plan import Optimize, normalize_optimize
from tnconv.lower.program import Program


def compile(  # noqa: A001 - the public name
    net: Network, optimize: object = "auto", *, memory_limit: int | None = None
) -> Program:
    """Lower ``net`` to a ``Program`` that runs it with torch.

    A network that one PyTorch kernel computes (a convolution, its VJPs, a
    transposed convolution, unfold, fold, a matrix product) runs on that
    kernel; any other runs as pairwise contraction steps (fixed permute /
    reshape / matmul calls) with its index patterns applied as strided views,
    gathers and scatters (``Program.strategy`` says which). The
    contraction order comes from opt_einsum (``optimize``: an optimizer name
    such as ``"auto"``, ``"greedy"``, ``"optimal"``, ``"dp"``, or an explicit
    path over ``net.entries``, which also builds index patterns densely).
    ``memory_limit`` (elements) bounds every intermediate of the einsum path
    by slicing the contraction over legs (same result, more steps); when it is
    given, native kernels (whose workspaces tnconv does not control) are not
    used. Programs are cached by network (structure and sizes), optimizer and
    limit: compiling the same thing twice returns the same object. A network
    with symbolic sizes gives a program that plans per call from the
    operands' shapes.
    """
    recent = _RECENT.get(id(net))
    if recent is not None and recent[0] is net and recent[1] == optimize and recent[2] == memory_limit:
        return recent[3]
    from tnconv.ir.networksum import NetworkSum

    if isinstance(net, NetworkSum):  # the product rule's sum of networks: one program per term
        from tnconv.lower.sum import compile_sum

        return compile_sum(net, normalize_optimize(optimize), memory_limit)
    if not isinstance(net, Network):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    if memory_limit is not None:
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int):
            raise TypeError(f"memory_limit must be an int (elements) or None, got {memory_limit!r}")
        if memory_limit < 1:
            raise ValueError(f"memory_limit must be >= 1 element, got {memory_limit}")
    program = _compile(net, normalize_optimize(optimize), memory_limit)
    if len(_RECENT) >= _RECENT_SIZE:
        _RECENT.clear()
    _RECENT[id(net)] = (net, optimize, memory_limit, program)
    return program


# The programs of the networks compiled last, by object identity (each entry keeps its network
# alive, so an id is never reused while its entry exists): a repeated compile of the same object
# costs a dict lookup instead of hashing the network for ``_compile``'s cache.
_RECENT: dict[int, tuple[Network, object, int | None, Program]] = {}
_RECENT_SIZE = 256


@lru_cache(maxsize=1024)
def _compile(net: Network, optimize: Optimize, memory_limit: int | None) -> Program:
    return Program(net, optimize, memory_limit)
