"""Rules with a declared match, and ``sweep``: the pass that applies them in one visit per site and round.

A ``Rule`` is a declared match plus a rewrite:

- ``looks_at``: the kind of tensor whose position is its *site*
  (``IndexPattern``, ``Identity``, ``Ones``, ...), or ``LEGS`` for a rule
  whose site is a leg name;
- ``match(net, site)``: proves the rule's condition at that site from the
  sizes (symbolically where they are symbols, through
  ``tnconv.ir.sizes.proven_*``) and returns what the rewrite needs, or
  ``None`` when the condition does not hold, or a not-fired ``Record``
  (``tnconv.passes.core.unproven``) when it holds for some values of the
  size symbols but is not proven for all: the trace then says which
  condition was not proven (once per tensor and condition);
- ``rewrite(net, match)``: the new network and the ``Record`` of the trace.

A rule is also a rule function ``net -> (net', record) | None`` (it
rewrites the first site, in order, where it matches), so ``first`` and
``fixpoint`` take rules as they take any such function.

``sweep(name, phases)`` applies ordered *phases*, each a tuple of rules
about the same sites that are alternatives (the first that matches a site
rewrites it). One call is one round: each phase in turn visits its sites
once, in order. At a site it tries the rules of this and the earlier
phases, in order, and after a rewrite tries them again on the same site
(each rule at most once per visit), so a rewrite that enables an earlier
rule there is followed at once, as if all rules had been tried from the
first again; then it moves on (or stays, when the rewrite removed the site
and the next one took its place). ``fixpoint(sweep(...))`` repeats rounds
until one changes nothing. A round costs one visit per site and phase plus
its rewrites; it never rescans the network from the first rule after a
rewrite, which made simplifying a conv with hundreds of size-1 dims
cubic in the number of dims.

Contract for rules that ``sweep`` relies on (the driver stays correct
without it, only slower): a tensor rule's rewrite may change or remove the
tensor at its site and change other tensors, but neither adds tensors nor
moves the others; a leg rule's rewrite neither adds legs nor reorders the
legs before its site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

from tnconv.ir.network import Network
from tnconv.ir.tensors import Kind
from tnconv.passes.core import NoFixpointError, Pass, Record, Rewrite, Trace, termwise

LEGS = "legs"
"""``Rule.looks_at`` for a rule whose site is a leg (by name) rather than a tensor (by position)."""

Site = Union[int, str]
M = TypeVar("M")


@dataclass(frozen=True)
class Rule(Generic[M]):
    """A rewrite rule: ``match(net, site)`` proves its condition at a site, ``rewrite(net, match)`` applies it.

    Args:
        name: what the rule does, for messages and tests (its records name
            the rule as the trace shows it, which several rules may share).
        looks_at: the ``Kind`` subclass of the tensors it matches, or ``LEGS``.
        match: ``(net, site) -> M | Record | None``; ``site`` is a tensor position
            (of a tensor of kind ``looks_at``) or a leg name; a ``Record`` (``unproven``)
            says that the rule did not fire because its condition is not proven for all sizes.
        rewrite: ``(net, match) -> (network, Record)``.
        rewrite_many: ``(net, matches) -> (network, records)``, the rewrites at several sites whose matches
            were all found on ``net``, in site order, as one network (one record each, as ``rewrite``
            would give them one network at a time); or None. Only for a rule whose rewrite removes its
            site and never changes whether it matches at another site; where all rules of its phase share
            it (and no earlier phase's rule matches a site), the sweep matches all of the phase's sites on
            one network and builds the result once (a network with thousands of such sites is otherwise
            rebuilt thousands of times).
    """

    name: str
    looks_at: Union[type[Kind], str]
    match: Callable[[Network, Any], Union[M, Record, None]]
    rewrite: Callable[[Network, M], Rewrite]
    rewrite_many: Optional[Callable[[Network, Sequence[M]], tuple[Network, tuple[Record, ...]]]] = None

    def __post_init__(self) -> None:
        if self.looks_at != LEGS and not (isinstance(self.looks_at, type) and issubclass(self.looks_at, Kind)):
            raise TypeError(f"looks_at of rule {self.name!r} must be a tnconv Kind class or LEGS, got {self.looks_at!r}")

    @property
    def on_legs(self) -> bool:
        """Whether the rule's sites are legs (else tensor positions)."""
        return self.looks_at == LEGS

    def looks_at_site(self, net: Network, site: Site) -> bool:
        """Whether ``site`` of ``net`` is one this rule declares it matches (a leg, or a tensor of its kind)."""
        kind = self.looks_at
        if isinstance(kind, str):
            return isinstance(site, str)
        return isinstance(site, int) and isinstance(net.entries[site].kind, kind)

    def sites(self, net: Network) -> tuple[Site, ...]:
        """The sites of ``net`` the rule looks at, in order."""
        kind = self.looks_at
        if isinstance(kind, str):
            return net.all_legs
        return tuple(p for p, entry in enumerate(net.entries) if isinstance(entry.kind, kind))

    def __call__(self, net: Network) -> Optional[Rewrite]:
        """The rewrite at the first site where the rule matches, or ``None`` (a rule function for ``first``)."""
        for site in self.sites(net):
            found = self.match(net, site)
            if found is not None and not isinstance(found, Record):
                return self.rewrite(net, found)
        return None


Phase = tuple[Rule[Any], ...]


def sweep(name: str, phases: Sequence[Phase]) -> Pass:
    """The pass that applies ``phases`` in one round (see the module docstring); a ``NetworkSum`` term by term.

    Returns the same network when no rule matched anywhere.
    """
    phases = tuple(tuple(phase) for phase in phases)
    for phase in phases:
        if not phase or not all(isinstance(rule, Rule) for rule in phase):
            raise TypeError(f"each phase of sweep {name!r} must be a non-empty tuple of Rule objects, got {phase!r}")
        if len({rule.on_legs for rule in phase}) != 1:
            raise ValueError(f"the rules of one phase must all look at legs or all at tensors, got {[r.name for r in phase]}")
    tried = tuple(
        tuple(rule for earlier in phases[: number + 1] for rule in earlier if rule.on_legs == phase[0].on_legs)
        for number, phase in enumerate(phases)
    )

    def run(net: Network) -> tuple[Network, Trace]:
        records: list[Record] = []
        for phase, rules in zip(phases, tried):
            net = _visit_all(name, net, phase, rules, records)
        return net, Trace(records).once()

    return Pass(name, termwise(run))


def _visit_all(name: str, net: Network, phase: Phase, rules: Phase, records: list[Record]) -> Network:
    """Visit each site of ``phase`` once, rewriting it with ``rules`` (appends to ``records``)."""
    at_once = _visit_at_once(net, phase, rules, records)
    if at_once is not None:
        return at_once
    on_legs = phase[0].on_legs
    count = _count(net, on_legs)
    visits, budget = 0, 2 * count + 1  # a site is revisited only after a rewrite removed one
    cursor = 0
    while cursor < count:
        visits += 1
        if visits > budget:
            raise NoFixpointError(f"sweep {name!r}: the rules {[r.name for r in phase]} keep adding sites")
        site = _site(net, cursor, on_legs)
        if not any(rule.looks_at_site(net, site) for rule in phase):
            cursor += 1
            continue
        net, removed = _rewrite_site(net, site, cursor, on_legs, rules, records)
        count = _count(net, on_legs)
        if not removed:
            cursor += 1
    return net


def _visit_at_once(net: Network, phase: Phase, rules: Phase, records: list[Record]) -> Optional[Network]:
    """``_visit_all`` of a phase whose rules share one ``rewrite_many``: every site matched on ``net``, rewritten at
    once; None (and nothing recorded) where the phase has no such rewrite or a rule of an earlier phase matches.

    Equal to visiting the sites one network at a time, records in the same order: at each site the
    rules are tried in the same order, the first that matches is the phase's (whose rewrites remove
    their sites, so the visit moves on, and change no other site's match).
    """
    many = {rule.rewrite_many for rule in phase}
    rewrite_many = many.pop() if len(many) == 1 else None
    if rewrite_many is None:
        return None
    found: list[Any] = []
    order: list[Union[Record, int]] = []  # a not-fired record, or the index of a match, in site order
    for site in phase[0].sites(net):
        for rule in rules:
            if not rule.looks_at_site(net, site):
                continue
            match = rule.match(net, site)
            if isinstance(match, Record):
                order.append(match)
            elif match is not None:
                if rule.rewrite_many is not rewrite_many:
                    return None  # an earlier phase's rule: the sites are visited one at a time
                order.append(len(found))
                found.append(match)
                break
    if found:
        net, done = rewrite_many(net, found)
        records.extend(done[item] if isinstance(item, int) else item for item in order)
    else:
        records.extend(item for item in order if isinstance(item, Record))
    return net


def _rewrite_site(
    net: Network, site: Site, cursor: int, on_legs: bool, rules: Phase, records: list[Record]
) -> tuple[Network, bool]:
    """Apply the first of ``rules`` that matches ``site``, again until none does (each once); whether it went.

    A rule whose condition is not proven for all sizes leaves its not-fired record in ``records``.
    """
    fired: set[int] = set()
    while True:
        for number, rule in enumerate(rules):
            if number in fired or not rule.looks_at_site(net, site):
                continue
            found = rule.match(net, site)
            if isinstance(found, Record):
                records.append(found)
            elif found is not None:
                break
        else:
            return net, False
        before = _count(net, on_legs)
        net, record = rule.rewrite(net, found)
        records.append(record)
        fired.add(number)
        if _count(net, on_legs) < before:
            return net, True
        site = _site(net, cursor, on_legs)


def _count(net: Network, on_legs: bool) -> int:
    return len(net.sizes) if on_legs else len(net.entries)


def _site(net: Network, cursor: int, on_legs: bool) -> Site:
    return net.all_legs[cursor] if on_legs else cursor
