"""``tnconv.compile``: network -> cached ``Program``."""

from __future__ import annotations

from functools import lru_cache

from tnconv.ir.network import Network
from tnconv.lower.plan import Optimize, normalize_optimize, plan_contraction
from tnconv.lower.program import Program


def compile(net: Network, optimize: object = "auto") -> Program:  # noqa: A001 - the public name
    """Lower ``net`` to a ``Program`` that runs it with torch.

    The contraction order comes from opt_einsum (``optimize``: an optimizer
    name such as ``"auto"``, ``"greedy"``, ``"optimal"``, ``"dp"``, or an
    explicit path). Programs are cached by network (structure and sizes) and
    optimizer: compiling the same thing twice returns the same object. A
    network with symbolic sizes gives a program that plans per call from the
    operands' shapes.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net must be a tnconv.Network, got {type(net).__name__}")
    return _compile(net, normalize_optimize(optimize))


@lru_cache(maxsize=1024)
def _compile(net: Network, optimize: Optimize) -> Program:
    plan = plan_contraction(net, optimize) if net.is_concrete else None
    return Program(net, plan, optimize)
