"""The plan cache: plans by a network's structure up to renaming of legs and tensors (``tnconv.ir.canonical``).

Planning (native matching, opt_einsum's path search, slicing) reads a network's
structure, never its names, so every plan is made for the network's canonical
form and cached there (by optimizer, memory limit and the backend's target),
then written back in the network's own names. A network that differs from one
planned before only in its names (``Network.from_einsum`` with other letters, a
routine's network under other leg names) finds the plan made for it.
"""

from __future__ import annotations


from tnconv.caches import cached
from tnconv.ir.canonical import canonical, named
from tnconv.ir.network import Network
from tnconv.lower.nodes import Executor, Plan
from tnconv.lower.optimize import Optimize
from tnconv.lower.plan import einsum_plan, plan
from tnconv.lower.target import Target

PLANS = 1024
"""The most plans kept (least recently used dropped)."""


def planned(network: Network, optimize: Optimize, memory_limit: int | None, target: Target) -> Plan:
    """``tnconv.lower.plan.plan`` of ``network``, found by its structure (see the module docstring)."""
    form = canonical(network)
    try:
        made = _plan(form.network, optimize, memory_limit, target)
    except ValueError:  # planning refuses: let the network's own plan say so, in its names
        return plan(network, optimize, memory_limit, target)
    return named(made, form.names)


def planned_einsum(network: Network, optimize: Optimize, memory_limit: int | None) -> Executor:
    """``tnconv.lower.plan.einsum_plan`` of ``network``, found by its structure."""
    form = canonical(network)
    try:
        made = _einsum_plan(form.network, optimize, memory_limit)
    except ValueError:
        return einsum_plan(network, optimize, memory_limit)
    return named(made, form.names)


@cached(maxsize=PLANS)
def _plan(network: Network, optimize: Optimize, memory_limit: int | None, target: Target) -> Plan:
    return plan(network, optimize, memory_limit, target)


@cached(maxsize=PLANS)
def _einsum_plan(network: Network, optimize: Optimize, memory_limit: int | None) -> Executor:
    return einsum_plan(network, optimize, memory_limit)
