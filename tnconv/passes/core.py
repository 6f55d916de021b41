"""The pass vocabulary: rules, passes, their composition, and a printable trace of rewrites.

A *rule* looks at a network and either declines (``None``) or performs one
rewrite, returning the new network and a ``Record`` that says which rule
fired, on which tensors and legs, and which condition was proven (the
rules of ``simplify`` are ``tnconv.passes.sweep.Rule`` objects, a declared
match plus a rewrite, which are such functions too)::

    dense: Pi1 [K=S=4, P=0, D=1, I%K==0 (I=16=S*O)] -> read i1 as taps (o1, k1) of X; drop Pi1

Where sizes are symbolic, a rule whose condition holds for some values of the
symbols but is not proven for all does not fire; it leaves a record with
``fired=False`` that says which condition was not proven::

    dense: Pi1 not applied [not proven for all sizes: H % 2 == 0]

A ``Pass`` is a pure ``Network -> Network`` function (a ``NetworkSum`` is
transformed term by term) that also reports the records of what it
rewrote; it returns the *same object* when nothing changed, which is how
``fixpoint`` knows it is done. ``differentiate``, ``vmap``, ``fuse``,
``simplify`` and the sub-tensor accesses each have a traced form
(``differentiate_traced``, ...) that ``as_pass`` turns into a ``Pass``::

    derive = sequence(as_pass(differentiate_traced, "W"), as_pass(simplify_traced))
    network, trace = derive.traced(net)

Passes compose with ``sequence``, ``first`` (try rules in order, apply the first that fires;
``tnconv.passes.sweep.sweep`` applies many rewrites per call),
``fixpoint`` (repeat until nothing changes; raise on a loop or when it does
not converge) and ``checked`` (run the verifier after the pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from tnconv.ir.network import Network
from tnconv.ir.networksum import NetworkSum, Value
from tnconv.ir.verify import verify


@dataclass(frozen=True)
class Record:
    """One rewrite: ``rule`` fired on ``tensors`` / ``legs`` because ``condition`` held, doing ``effect``.

    With ``fired=False``, the rule did not fire there because ``condition`` (which holds
    for some values of the size symbols) is not proven for all of them (``unproven``).
    """

    rule: str
    tensors: tuple[str, ...]
    legs: tuple[str, ...]
    condition: str
    effect: str
    fired: bool = True

    def __str__(self) -> str:
        where = ", ".join(self.tensors) if self.tensors else ", ".join(self.legs)
        if not self.fired:
            return f"{self.rule}: {where} not applied [not proven for all sizes: {self.condition}]"
        condition = f" [{self.condition}]" if self.condition else ""
        return f"{self.rule}: {where}{condition} -> {self.effect}"


def unproven(rule: str, tensors: tuple[str, ...], legs: tuple[str, ...], condition: str) -> Record:
    """The record of a rule that did not fire on ``tensors`` because ``condition`` is not proven for all sizes.

    A rule's match returns it instead of None (``tnconv.passes.sweep.Rule``), so that the trace says why.
    """
    return Record(rule, tensors, legs, condition, "", fired=False)


class Trace(tuple[Record, ...]):
    """The records of a run of passes, in order.

    ``print(trace)`` shows one numbered line per rewrite, and a line marked ``-`` per
    rule that did not fire because its condition is not proven for all sizes.
    """

    def __new__(cls, records: Iterable[Record] = ()) -> "Trace":
        return super().__new__(cls, tuple(records))

    def __str__(self) -> str:
        if not self:
            return "(no rewrites)"
        width = len(str(len(self.rules()) or 1))
        lines, number = [], 0
        for record in self:
            if record.fired:
                number += 1
                lines.append(f"{str(number).rjust(width)}. {record}")
            else:
                lines.append(f"{'-'.rjust(width)}  {record}")
        return "\n".join(lines)

    @property
    def changed(self) -> bool:
        """Whether a rule fired (the records are not all of rules that did not)."""
        return any(record.fired for record in self)

    def rules(self) -> tuple[str, ...]:
        """The names of the rules that fired, in order (handy in tests)."""
        return tuple(record.rule for record in self if record.fired)

    def unproven(self) -> tuple[Record, ...]:
        """The records of rules that did not fire because their condition is not proven for all sizes."""
        return tuple(record for record in self if not record.fired)

    def once(self) -> "Trace":
        """This trace with each not-fired record kept at its first occurrence only (a rule tried on an
        unchanged tensor in several rounds says the same thing each time)."""
        seen: set[Record] = set()
        kept = []
        for record in self:
            if not record.fired:
                if record in seen:
                    continue
                seen.add(record)
            kept.append(record)
        return Trace(kept)


Rewrite = tuple[Network, Record]
RuleFunction = Callable[[Network], Optional[Rewrite]]
Run = Callable[[Value], tuple[Value, Trace]]


class NoFixpointError(RuntimeError):
    """A fixpoint iteration looped (a network came back) or did not converge in its round limit."""


@dataclass(frozen=True)
class Pass:
    """A named pure transformation of a ``Network`` (or ``NetworkSum``) that reports its rewrites.

    ``pass_(net)`` returns the result; ``pass_.traced(net)`` returns
    ``(result, Trace)``. Both return ``net`` itself when nothing changed.
    """

    name: str
    run: Run

    def __call__(self, net: Value) -> Value:
        return self.traced(net)[0]

    def traced(self, net: Value) -> tuple[Value, Trace]:
        if not isinstance(net, (Network, NetworkSum)):
            raise TypeError(f"pass {self.name!r} takes a tnconv.Network or NetworkSum, got {type(net).__name__}")
        return self.run(net)


def termwise(run: Callable[[Network], tuple[Network, Trace]]) -> Run:
    """``run`` on a network, or on each term of a ``NetworkSum`` (the same sum object when no term changed)."""

    def on_value(net: Value) -> tuple[Value, Trace]:
        if isinstance(net, Network):
            return run(net)
        results = [run(term) for term in net.terms]
        if all(result is term for (result, _), term in zip(results, net.terms)):
            return net, Trace(r for _, trace in results for r in trace)  # rules that did not fire, if any
        return NetworkSum(result for result, _ in results), Trace(r for _, trace in results for r in trace)

    return on_value


def first(name: str, *rules: RuleFunction) -> Pass:
    """A pass that applies the first of ``rules`` that fires (one rewrite per network), or changes nothing."""

    def run(net: Network) -> tuple[Network, Trace]:
        for rule in rules:
            rewrite = rule(net)
            if rewrite is not None:
                return rewrite[0], Trace((rewrite[1],))
        return net, Trace()

    return Pass(name, termwise(run))


def as_pass(traced: Callable[..., tuple[Value, Trace]], *args: object) -> Pass:
    """The ``Pass`` ``net -> traced(net, *args)`` (e.g. ``as_pass(vmap_traced, "b", 4, "X")``)."""
    label = traced.__name__.removesuffix("_traced")
    name = f"{label}({', '.join(map(repr, args))})" if args else label
    return Pass(name, lambda net: traced(net, *args))


def sequence(*passes: Pass) -> Pass:
    """Run ``passes`` one after another; the trace is the concatenation of theirs."""
    for item in passes:
        if not isinstance(item, Pass):
            raise TypeError(f"sequence takes Pass objects, got {item!r}")

    def run(net: Value) -> tuple[Value, Trace]:
        records: list[Record] = []
        for item in passes:
            net, trace = item.traced(net)
            records.extend(trace)
        return net, Trace(records)

    return Pass("sequence(" + ", ".join(p.name for p in passes) + ")", run)


def fixpoint(inner: Pass, max_rounds: int | None = None) -> Pass:
    """Repeat ``inner`` until it returns its input unchanged.

    Raises ``NoFixpointError`` when a network seen before comes back (a rewrite
    loop) or after ``max_rounds`` rounds, naming the last rewrites. By default
    the limit grows with the network (``round_limit``), so that a pass that
    rewrites one leg at a time still converges on a network with thousands of
    legs.
    """
    if not isinstance(inner, Pass):
        raise TypeError(f"fixpoint takes a Pass, got {inner!r}")
    if max_rounds is not None and (isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1):
        raise ValueError(f"max_rounds must be a positive int or None, got {max_rounds!r}")

    def run(net: Value) -> tuple[Value, Trace]:
        records: list[Record] = []
        seen = {net}
        limit = round_limit(net) if max_rounds is None else max_rounds
        for _ in range(limit):
            result, trace = inner.traced(net)
            if result is net:  # its trace holds only rules that did not fire
                return net, Trace((*records, *trace)).once()
            records.extend(trace)
            if result in seen:
                raise NoFixpointError(
                    f"fixpoint({inner.name}) loops: a network came back after {len(records)} rewrites; "
                    f"last: {'; '.join(map(str, records[-3:]))}"
                )
            seen.add(result)
            net = result
        raise NoFixpointError(
            f"fixpoint({inner.name}) did not converge in {limit} rounds; "
            f"last rewrites: {'; '.join(map(str, records[-3:]))}"
        )

    return Pass(f"fixpoint({inner.name})", run)


def round_limit(net: Value) -> int:
    """``fixpoint``'s default round limit for ``net``: 1000 plus 2 per leg slot (over all terms of a sum).

    Rule sets such as ``simplify``'s make a bounded number of rewrites per
    tensor and leg, so a fixed limit would stop a large network that does
    converge (one rewrite per round under ``first``: 1600 rounds for a conv
    with 800 size-1 dims); the 1000 keeps small networks' limit as it was.
    """
    terms = net.terms if isinstance(net, NetworkSum) else (net,)
    return 1000 + 2 * sum(len(entry.legs) for term in terms for entry in term.entries)


def checked(inner: Pass) -> Pass:
    """``inner`` followed by ``tnconv.verify`` of its result, every term of a sum (raises ``InvariantError``)."""

    def run(net: Value) -> tuple[Value, Trace]:
        result, trace = inner.traced(net)
        for term in result.terms if isinstance(result, NetworkSum) else (result,):
            verify(term)
        return result, trace

    return Pass(f"checked({inner.name})", run)


