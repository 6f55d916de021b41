"""A network's canonical form: its legs and tensors renamed by their order of appearance.

Two networks that differ only in the names of their legs and tensors (the same
kinds, legs in the same places, the same sizes, entries and output in the same
order) have one canonical form, so that whatever is derived from a network's
structure alone - its plan - is found again for a renamed network
(``tnconv.programs.plans``). Canonical names are tokens no user name holds;
``named`` writes them back as one network's names in any plain data made from
the canonical form (a plan's legs, the tensors built densely, derived legs such
as ``o:<leg>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Mapping, TypeVar

from tnconv.ir.network import Network, Tensor

MARK = "\u2063"
"""Brackets a canonical name (INVISIBLE SEPARATOR): ``MARK + "L3" + MARK`` is the fourth leg."""
NAMES = re.compile(f"{MARK}[LT][0-9]+{MARK}")
T = TypeVar("T")


@dataclass(frozen=True)
class Canonical:
    """A network's canonical form, and for each canonical name the network's own (``names``)."""

    network: Network
    names: Mapping[str, str]


def canonical(net: Network) -> Canonical:
    """``net`` with its legs renamed in their order of first appearance (entries, then the output) and its tensors
    in the order of their first occurrence; kinds, views and sizes as they are."""
    legs = {leg: f"{MARK}L{n}{MARK}" for n, leg in enumerate(net.all_legs)}
    tensors = {name: f"{MARK}T{n}{MARK}" for n, name in enumerate(dict.fromkeys(net.tensors))}
    entries = [Tensor(tensors[e.name], tuple(legs[leg] for leg in e.legs), e.kind) for e in net.entries]
    form = Network(entries, [legs[leg] for leg in net.output], {legs[leg]: size for leg, size in net.sizes.items()})
    names = {token: name for name, token in (*legs.items(), *tensors.items())}
    return Canonical(form, names)


def named(value: T, names: Mapping[str, str]) -> T:
    """``value`` (frozen dataclasses, tuples and strings, nested) with every canonical name in its strings written
    as ``names`` says; the parts holding none are kept as they are (no copies)."""

    def write(match: re.Match[str]) -> str:
        return names[match.group(0)]

    def walk(item: object) -> object:
        if isinstance(item, str):
            return NAMES.sub(write, item) if MARK in item else item
        if type(item) is tuple:
            parts = tuple(walk(part) for part in item)
            return item if all(new is old for new, old in zip(parts, item)) else parts
        if is_dataclass(item) and not isinstance(item, type):
            changed = {}
            for field in fields(item):
                if field.init:
                    old = getattr(item, field.name)
                    new = walk(old)
                    if new is not old:
                        changed[field.name] = new
            return replace(item, **changed) if changed else item
        return item

    result: T = walk(value)  # type: ignore[assignment]
    return result
