"""``simplify``: convolution-aware rewrites, one at a time, to a fixpoint.

The rules (``tnconv.conv.rules`` for index patterns, ``tnconv.passes.legs``
for legs) each fire only where their condition is proven from the sizes,
which may be symbolic; each preserves the network's value exactly. Order:

1. unused pixels (slice away pixels no tap reads; the ``I % S != 0`` rule),
2. pattern -> views (dense, downsampling, 1x1, kernel covering the input),
3. pattern sum (``sum_o Pi`` where ``o`` is summed on ``Pi`` only),
4. padding (zero-pad the data where the taps do not overlap),
5. pattern identity (1x1 and whole-input kernels where ``i`` is an output leg),
6. identities removed by renaming, 7. size-1 legs squeezed,
8. all-ones factors dropped, 9. parallel legs merged.

``simplify(net)`` returns the simplified network (the same object when no
rule fires, so ``simplify(simplify(net)) is simplify(net)``);
``simplify_traced(net)`` also returns the ``Trace`` of the rewrites, which
reads like a derivation::

    1. dense: Pi1 [K=S=16, P=0, D=1, I%K==0 (I=224=S*O)] -> reshape i1 into (o1, k1) on X + identities; drop Pi1
    2. dense: Pi2 [...] -> reshape i2 into (o2, k2) on X + identities; drop Pi2
"""

from __future__ import annotations

from functools import lru_cache

from tnconv.conv.rules import RULES as PATTERN_RULES
from tnconv.ir.network import Network
from tnconv.ir.networksum import NetworkSum, Value
from tnconv.passes.core import Pass, Trace, first, fixpoint, termwise
from tnconv.passes.legs import RULES as LEG_RULES

SIMPLIFY: Pass = fixpoint(first("simplify", *PATTERN_RULES, *LEG_RULES))


def simplify(net: Value) -> Value:
    """The network with every applicable rewrite applied (a ``NetworkSum`` term by term)."""
    return simplify_traced(net)[0]


def simplify_traced(net: Value) -> tuple[Value, Trace]:
    """``(simplify(net), trace)``: the trace lists each rewrite (rule, tensors, proven condition, effect)."""
    if not isinstance(net, (Network, NetworkSum)):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    return termwise(_simplify_one)(net)


def _simplify_one(net: Network) -> tuple[Network, Trace]:
    result, trace = _cached(net)
    return (net, trace) if not trace else (result, trace)  # unchanged: this very object, not an equal one


@lru_cache(maxsize=512)
def _cached(net: Network) -> tuple[Network, Trace]:
    return SIMPLIFY.traced(net)
