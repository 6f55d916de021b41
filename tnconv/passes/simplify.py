"""``simplify``: convolution-aware rewrites to a fixpoint, one sweep of the network per round.

The rules (``tnconv.passes.pattern_rules`` for index patterns, ``tnconv.passes.legs``
for legs) each fire only where their condition is proven from the sizes,
which may be symbolic; each preserves the network's value exactly.
``RULES`` below is their order, the one place it is stated; ``sweep``
applies it (each phase visits its sites once per round; see
``tnconv.passes.sweep``) and ``fixpoint`` repeats rounds until one changes
nothing.

``simplify(net)`` returns the simplified network (the same object when no
rule fires, so ``simplify(simplify(net)) is simplify(net)``);
``simplify_traced(net)`` also returns the ``Trace`` of the rewrites, which
reads like a derivation::

    1. dense: Pi1 [K=S=16, P=0, D=1, I%K==0 (I=224=S*O)] -> read i1 as taps (o1, k1) of X; drop Pi1
    2. dense: Pi2 [...] -> read i2 as taps (o2, k2) of X; drop Pi2
"""

from __future__ import annotations


from tnconv.caches import cached
from tnconv.passes.pattern_rules import (
    blocks, covering_identity, covering_slice, one_by_one_identity, padding, partial_blocks, pattern_sum,
    strided_slice, unused_pixels,
)
from tnconv.ir.network import Network
from tnconv.ir.networksum import NetworkSum, Value
from tnconv.passes.core import Pass, Trace, fixpoint, termwise
from tnconv.passes.legs import drop_ones, merge_parallel, remove_identity, squeeze
from tnconv.passes.sweep import Phase, sweep

RULES: tuple[Phase, ...] = (
    (unused_pixels,),
    (strided_slice, blocks, covering_slice, partial_blocks),
    (pattern_sum,),
    (padding,),
    (one_by_one_identity, covering_identity),
    (remove_identity,),
    (squeeze,),
    (drop_ones,),
    (merge_parallel,),
)
"""The rules of ``simplify``, phase by phase (the rules of one phase are alternatives, tried in order).

Why this order:

1. ``unused_pixels`` first: slicing away pixels no tap reads costs no copy
   and turns an ``I % S != 0`` pattern into one the taps rules take whole.
2. The taps layouts (the data reads a pattern's pixels as its taps, and
   the pattern disappears) before anything that keeps a pattern; among them the most
   specific first: ``K == 1`` is a strided slice rather than blocks of one
   tap, whole blocks rather than windows, and a kernel
   covering the input a slice rather than one partial block.
3. ``pattern_sum`` where no taps layout applies but ``o`` is summed on the pattern
   alone: a small ``(K, I)`` matrix, and no copy of the input.
4. ``padding`` only then: its taps read zero padding, which copies the
   input (a padded tensor), which the rules above avoid.
5. The pattern identities (``i`` an output leg, as in input VJPs, where no
   taps layout applies) last among the pattern rules; the leg rules then remove
   the identities they leave. Two equal patterns that share their summed
   ``o`` (KFAC-expand) stay as they are: whether they run as a pattern-pair
   Gram is the planner's decision (``tnconv.lower.pair_gram``).
6. ``remove_identity`` before the other leg rules: renaming joins legs, so
   that ``squeeze`` and ``merge_parallel`` see the final legs.
7. ``squeeze`` after the reshapes, which leave size-1 legs (``k`` of a 1x1
   conv, ``o`` of a kernel covering its input), and before ``drop_ones``:
   squeezing can leave an all-ones tensor behind.
8. ``drop_ones`` before ``merge_parallel``: an all-ones tensor on one of two
   legs keeps them from being parallel.
9. ``merge_parallel`` last, on the legs that are left.

Each rule's rewrite enables only rules later in this order, or earlier ones
on the same tensor (which the sweep tries at once), with one exception:
removing an identity or an all-ones tensor can leave a pattern's ``o`` leg
on the pattern alone or its ``i`` leg on data tensors alone; the next round
takes that pattern (where restarting from the first rule after every
rewrite took it at once: the trace then lists the same rewrites in another
order, or, rarely, taps where it listed a pattern sum).
"""

SIMPLIFY: Pass = fixpoint(sweep("simplify", RULES))


def simplify(net: Value) -> Value:
    """The network with every applicable rewrite applied (a ``NetworkSum`` term by term)."""
    return simplify_traced(net)[0]


def simplify_traced(net: Value) -> tuple[Value, Trace]:
    """``(simplify(net), trace)``: the trace lists each rewrite (rule, tensors, proven condition, effect), and
    where sizes are symbolic, each rule that did not fire because its condition is not proven for all sizes."""
    if not isinstance(net, (Network, NetworkSum)):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    return termwise(_simplify_one)(net)


def _simplify_one(net: Network) -> tuple[Network, Trace]:
    result, trace = _cached(net)
    return (result, trace) if trace.changed else (net, trace)  # unchanged: this very object, not an equal one


@cached(maxsize=512)
def _cached(net: Network) -> tuple[Network, Trace]:
    result, trace = SIMPLIFY.traced(net)
    assert isinstance(result, Network)  # the rules rewrite a network into a network
    return result, trace
