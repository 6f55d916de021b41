"""``contract_copies``: the product of two copies of a network, summed over some of its output legs.

``contract_copies(net, legs)`` turns ``F[a, w]`` (output legs ``a`` kept, ``w``
the given ``legs``) into ``sum_w F[a, w] F[a, w]``: the kept legs join both
copies and the output (an elementwise product), the given legs join the two
copies only (a contraction), and the inner legs of the second copy get fresh
names (``o1`` -> ``o1_2``). Squares that are not multilinear in the operands
come out this way, as networks that the contraction optimizer may split in any
order:

- a per-sample gradient ``J[n, w]`` over the weight legs ``w``: each sample's squared
  gradient norm ``(n,)``, where the optimizer may pair the two copies' output
  locations (``sum_{t,t'} (v_t . v_t') (u_t . u_t')``) instead of forming ``J``;
- the same over ``n``: the squared per-sample gradients summed over samples (``w``);
- GGN columns ``J[m, n, w]`` over ``m, n``: the GGN diagonal.

A ``NetworkSum`` gives the sum over all pairs of its terms (``(A + B)^2`` has the
cross terms), as ``fuse`` expands it.
"""

from __future__ import annotations

from typing import Iterable

from tnconv.ir.names import fresh_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.networksum import NetworkSum, Value
from tnconv.passes.core import Record, Trace
from tnconv.passes.fuse import fuse_traced


def contract_copies(net: Value, legs: str | Iterable[str]) -> Value:
    """Two copies of ``net`` multiplied and summed over its output legs ``legs``; the other output legs kept.

    See ``contract_copies_traced`` for the arguments and errors.
    """
    return contract_copies_traced(net, legs)[0]


def contract_copies_traced(net: Value, legs: str | Iterable[str]) -> tuple[Value, Trace]:
    """``(product, trace)``: ``sum_w F[a, w] F[a, w]`` for ``F = net``, ``w`` = ``legs``, output ``a``.

    Args:
        net: a ``Network`` or ``NetworkSum`` (every pair of its terms is multiplied).
        legs: one output leg of ``net`` or several (distinct), summed over; may be
            empty (an elementwise square). The output is ``net.output`` without them, in order.

    Raises:
        ValueError: a leg of ``legs`` is not an output leg of ``net``, or is given twice.
    """
    if not isinstance(net, (Network, NetworkSum)):
        raise TypeError(f"net must be a tnconv.Network or NetworkSum, got {type(net).__name__}")
    over = (legs,) if isinstance(legs, str) else tuple(legs)
    for leg in over:
        if not isinstance(leg, str):
            raise TypeError(f"legs must be leg names (str), got {leg!r}")
        if leg not in net.output:
            raise ValueError(f"legs: {leg!r} is not an output leg of the network (output {net.output})")
    if len(set(over)) != len(over):
        raise ValueError(f"legs must be distinct, got {over!r}")
    kept = tuple(leg for leg in net.output if leg not in over)
    terms = net.terms if isinstance(net, NetworkSum) else (net,)
    placeholder = fresh_name("F", {label for term in terms for label in term.tensors})
    sketch = Network(
        (Tensor(placeholder, net.output), Tensor(placeholder, net.output)), kept,
        {leg: net.size(leg) for leg in net.output},
    )
    product, _ = fuse_traced(sketch, placeholder, net)
    renamed = _new_legs(terms, product)
    tensors = tuple(dict.fromkeys(label for term in terms for label in term.tensors))
    effect = f"multiply two copies, summed over ({', '.join(over)}), output ({', '.join(kept)})"
    if renamed:
        effect += "; the second copy's inner legs are " + ", ".join(renamed)
    record = Record("contract_copies", tensors, over, f"kept legs ({', '.join(kept)}) join both copies", effect)
    return product, Trace((record,))


def _new_legs(terms: tuple[Network, ...], product: Value) -> tuple[str, ...]:
    """The legs of ``product`` that no term of the network had: the second copy's renamed inner legs."""
    old = {leg for term in terms for leg in term.all_legs}
    products = product.terms if isinstance(product, NetworkSum) else (product,)
    return tuple(dict.fromkeys(leg for term in products for leg in term.all_legs if leg not in old))
