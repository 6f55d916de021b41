"""``plan``: how a concrete network runs, as plain data a backend interprets (no torch).

The planner tries, in order:

1. a native kernel (``tnconv.lower.native``), matched on the index patterns of its
   tensors and ``Taps`` views alike: one PyTorch kernel computes the whole network;
2. a pattern-pair Gram (``tnconv.lower.pair_gram``: KFAC-expand's two equal
   index patterns per dim that share their summed ``o``, as windowed
   cross-correlations), when it is estimated faster than the patches and their
   Gram (``tnconv.lower.pair_choice.pair_gram_pays``: time from shapes at measured
   speeds, not FLOPs: its thin border calls run far below GEMM speed);
3. the einsum stage (``tnconv.lower.einsum``): taps gathers, folds, scatters
   and window sums for the structured tensors, pairwise steps along an
   opt_einsum path for the rest (for KFAC-expand's pattern pairs, the
   gather/Gram path: the same network, nothing to undo);
4. the einsum stage sliced over legs (``tnconv.lower.slicing``), when a
   ``memory_limit`` bounds its intermediates (no native kernel then: tnconv
   does not control their workspaces), or an explicit path is given.
"""

from __future__ import annotations

from tnconv.ir.network import Network
from tnconv.lower import native, pair_gram
from tnconv.lower.nodes import Executor, Plan
from tnconv.lower.optimize import AUTO, Optimize
from tnconv.lower.pair_choice import pair_gram_pays
from tnconv.lower.slicing import plan_memory
from tnconv.lower.target import EINSUM_ONLY, Target


def plan(net: Network, optimize: Optimize = AUTO, memory_limit: int | None = None, target: Target = EINSUM_ONLY
         ) -> Plan:  # fmt: skip
    """The plan of ``net`` (concrete sizes) for the backend ``target`` describes: a ``Native``, ``PairGram``,
    ``Einsum`` or ``Sliced`` node (``tnconv.lower.nodes``).

    ``optimize`` (normalised: ``tnconv.lower.optimize``) and ``memory_limit`` as for ``tnconv.compile``;
    ``target``: the backend's capabilities and speeds (``tnconv.lower.target``; without one, the einsum plan).
    Raises ValueError for symbolic sizes.
    """
    _check_concrete(net)
    if memory_limit is None and not optimize.explicit and target.kernels:
        found = native.match(net)
        if found is not None:
            return found
        pair = pair_gram.match(net)
        if pair is not None and target.speeds is not None and pair_gram_pays(pair, target.speeds):
            return pair
    return einsum_plan(net, optimize, memory_limit)


def einsum_plan(net: Network, optimize: Optimize, memory_limit: int | None = None) -> Executor:
    """The einsum stage's plan of ``net`` (also for networks a native kernel runs: their cost, a reference)."""
    _check_concrete(net)
    return plan_memory(net, optimize, memory_limit)


def _check_concrete(net: Network) -> None:
    if not net.is_concrete:
        raise ValueError(
            f"sizes {sorted(map(str, net.symbols))} are symbolic, so there is no plan yet; "
            "use program.specialize(*operands) or Network.substitute(...) first"
        )
