"""Leg-level rewrite rules that hold for any network: identities, size-1 legs, parallel legs.

Each is a ``tnconv.passes.sweep.Rule``; ``tnconv.passes.simplify.RULES`` orders them.

- **identity**: ``delta[a, b, ...]`` joined to other tensors is a renaming:
  call all its legs by one name and drop it (at most one of them may be an
  output leg; the merged leg must stay on some other tensor).
- **squeeze**: a summed leg of size 1 indexes nothing: drop it from the data
  tensors (a ``Squeeze`` view), all-ones tensors and identities carrying it
  (only where no index pattern, whose kind fixes its legs, carries it too,
  and no data tensor reads it as a tap of a pattern - a ``Taps`` view's leg:
  then the leg would stay and nothing is gained, or the pattern be lost).
- **ones**: an all-ones tensor whose legs all sit on other tensors too
  multiplies by 1: drop it.
- **merge parallel legs**: two summed legs that sit next to each other, in
  the same order, on exactly the same tensors (data or all-ones) act as one
  leg of the product size: merge them (a ``Flatten`` view); never a pattern
  leg of a ``Taps`` view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tnconv.ir.names import fresh_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import proven_equal
from tnconv.ir.tensors import Data, Identity, Ones
from tnconv.ir.views import Flatten, Squeeze
from tnconv.passes.core import Record, Rewrite
from tnconv.passes.sweep import LEGS, Rule
from tnconv.passes.viewchain import append_views, squeeze_views


@dataclass(frozen=True)
class _Renaming:
    """Drop the identity at ``position``, calling its legs ``target``."""

    position: int
    target: str
    an_output: bool


def _match_identity(net: Network, position: int) -> Optional[_Renaming]:
    """Distinct legs of proven-equal sizes, at most one an output leg, and some leg on another tensor too."""
    entry = net.entries[position]
    if not isinstance(entry.kind, Identity) or len(set(entry.legs)) != len(entry.legs):
        return None
    sizes = [net.size(leg) for leg in entry.legs]
    if any(not proven_equal(size, sizes[0]) for size in sizes[1:]):
        return None
    outputs = [leg for leg in entry.legs if leg in net.output_set]
    if len(outputs) > 1:
        return None
    if not any(carrier != position for leg in entry.legs for carrier in net.tensors_on(leg)):
        return None
    return _Renaming(position, outputs[0] if outputs else entry.legs[0], bool(outputs))


def _rename_through(net: Network, match: _Renaming) -> Rewrite:
    entry, target = net.entries[match.position], match.target
    mapping = {leg: target for leg in entry.legs if leg != target}
    entries = [
        Tensor(e.name, tuple(mapping.get(l, l) for l in e.legs), e.kind)
        for p, e in enumerate(net.entries)
        if p != match.position
    ]
    result = net.replace(tensors=entries, sizes={leg: s for leg, s in net.sizes.items() if leg not in mapping})
    renames = ", ".join(f"{old}->{target}" for old in mapping)
    condition = f"legs {entry.legs} of size {net.size(entry.legs[0])}" + (f", {target} an output leg" if match.an_output else "")
    return result, Record("identity", (entry.name,), entry.legs, condition, f"rename {renames}; drop {entry.name}")


remove_identity: Rule[_Renaming] = Rule("identity", Identity, _match_identity, _rename_through)
"""Drop an identity tensor by renaming its legs to one leg."""


def _match_squeeze(net: Network, leg: str) -> Optional[str]:
    """``leg`` itself when it is summed, of size 1, and no index pattern (whose kind fixes its legs) carries it."""
    if leg in net.output_set or not proven_equal(net.size(leg), 1):
        return None
    carriers = [net.entries[p] for p in net.tensors_on(leg)]
    if any(e.structured and not isinstance(e.kind, (Ones, Identity)) for e in carriers):
        return None  # a pattern keeps the leg: squeezing the others gains nothing
    if any(_is_tap(e, leg) for e in carriers):
        return None  # the leg of a pattern read as taps: squeezing it would lose the pattern
    return leg


def _squeeze(net: Network, leg: str) -> Rewrite:
    result, (record,) = _squeeze_all(net, (leg,))
    return result, record


def _squeeze_all(net: Network, legs: Sequence[str]) -> tuple[Network, tuple[Record, ...]]:
    """``_squeeze`` of each of ``legs`` in turn (all matched on ``net``: squeezing one leg changes no other leg's
    match), on the tensors alone: one network is built at the end, not one per leg (a tensor may carry
    thousands of size-1 legs). The same tensors and records as squeezing them one network at a time.

    A data tensor only loses legs and gains squeezes, so its legs are squeezed all at once
    (``squeeze_views``); the others (identities, all-ones tensors, which may vanish) leg by leg.
    """
    squeezed = set(legs)
    data = {p: _squeeze_data(e, legs, squeezed) for p, e in enumerate(net.entries) if isinstance(e.kind, Data)}
    entries = [data.get(p, e) for p, e in enumerate(net.entries)]
    records = []
    for leg in legs:
        names = tuple(dict.fromkeys(net.entries[p].name for p in net.tensors_on(leg)))  # squeezing keeps the others'
        entries = _squeeze_structured(entries, leg)
        effect = f"drop {leg} from {', '.join(names)}"
        records.append(Record("squeeze", names, (leg,), f"{leg} has size 1, summed", effect))
    return net.replace(tensors=entries), tuple(records)


def _squeeze_data(entry: Tensor, legs: Sequence[str], squeezed: set[str]) -> Tensor:
    """The data tensor ``entry`` with ``legs`` squeezed in turn: each leg's axes, last first, in the axes left
    by the legs before it (the squeezes one rewrite per leg appends), with each one's original axis."""
    if squeezed.isdisjoint(entry.legs):
        return entry
    slots: dict[str, list[int]] = {}
    for slot, leg in enumerate(entry.legs):
        if leg in squeezed:
            slots.setdefault(leg, []).append(slot)
    squeezes: list[tuple[int, Squeeze]] = []
    highest = -1  # the last axis squeezed so far: the usual order squeezes legs from the first axis on
    for leg in legs:
        if leg not in slots:
            continue
        if slots[leg][0] < highest:
            return _squeeze_data_in_any_order(entry, legs)
        squeezes += [(slot, Squeeze(slot - len(squeezes))) for slot in reversed(slots[leg])]
        highest = slots[leg][-1]
    assert isinstance(entry.kind, Data)  # the caller's choice
    kept = tuple(leg for leg in entry.legs if leg not in squeezed)
    return Tensor(entry.name, kept, squeeze_views(entry.kind, squeezes))


def _squeeze_data_in_any_order(entry: Tensor, legs: Sequence[str]) -> Tensor:
    """``_squeeze_data`` where a leg's axes come before those of a leg squeezed earlier: one squeeze at a time."""
    current = list(entry.legs)
    views: list[Squeeze] = []
    for leg in legs:
        for slot in reversed([slot for slot, l in enumerate(current) if l == leg]):
            views.append(Squeeze(slot))
            del current[slot]
    assert isinstance(entry.kind, Data)  # the caller's choice
    return Tensor(entry.name, tuple(current), append_views(entry.kind, views))


def _squeeze_structured(entries: list[Tensor], leg: str) -> list[Tensor]:
    """``entries`` with ``leg`` dropped from the identities and all-ones tensors that carry it (an identity of one
    leg becomes all-ones, an all-ones tensor of none goes, unless it is the only tensor)."""
    result: list[Tensor] = []
    for entry in entries:
        if isinstance(entry.kind, Data) or leg not in entry.legs:
            result.append(entry)
            continue
        legs = _without(entry.legs, leg)
        if isinstance(entry.kind, Identity) and len(legs) >= 2:
            result.append(Tensor(entry.name, legs, entry.kind))
        elif legs or len(entries) == 1:
            result.append(Tensor(entry.name, legs, Ones()))
    if not result:
        result.append(Tensor(fresh_name("ones", {entry.name for entry in entries}), (), Ones()))
    return result


squeeze: Rule[str] = Rule("squeeze", LEGS, _match_squeeze, _squeeze, _squeeze_all)
"""Drop a summed size-1 leg from the data, all-ones and identity tensors that carry it (the legs of one round
at once: squeezing a leg changes no other leg's match)."""


def _without(legs: tuple[str, ...], leg: str) -> tuple[str, ...]:
    """``legs`` without ``leg`` (slicing where it occurs once: tensors may carry thousands of legs)."""
    if legs.count(leg) == 1:
        at = legs.index(leg)
        return legs[:at] + legs[at + 1 :]
    return tuple(l for l in legs if l != leg)


def _match_ones(net: Network, position: int) -> Optional[int]:
    """The position itself when the all-ones tensor there is not alone and other tensors carry all its legs."""
    entry = net.entries[position]
    if not isinstance(entry.kind, Ones) or len(net.entries) == 1:
        return None
    return position if all(len(net.tensors_on(leg)) > 1 for leg in entry.legs) else None


def _drop_ones(net: Network, position: int) -> Rewrite:
    entry = net.entries[position]
    entries = [e for p, e in enumerate(net.entries) if p != position]
    condition = f"legs {entry.legs} on other tensors too" if entry.legs else "no legs"
    return net.replace(tensors=entries), Record("ones", (entry.name,), entry.legs, condition, f"drop {entry.name}")


drop_ones: Rule[int] = Rule("ones", Ones, _match_ones, _drop_ones)
"""Drop an all-ones tensor whose legs other tensors carry too (a factor of 1 everywhere)."""


@dataclass(frozen=True)
class _Parallel:
    """Summed legs ``first``, ``second``, adjacent in that order on exactly the tensors at ``carriers``."""

    first: str
    second: str
    carriers: tuple[int, ...]


def _match_parallel(net: Network, first: str) -> Optional[_Parallel]:
    """``first`` and the leg after it on its first carrier, when both are summed and sit together everywhere."""
    if first in net.output_set:
        return None
    carriers = net.tensors_on(first)
    entry = net.entries[carriers[0]]
    if entry.legs.count(first) != 1:
        return None
    slot = entry.legs.index(first)
    if slot + 1 >= len(entry.legs):
        return None
    second = entry.legs[slot + 1]
    if second == first or second in net.output_set or net.tensors_on(second) != carriers:
        return None
    if not all(_adjacent(net.entries[p], first, second) for p in carriers):
        return None
    return _Parallel(first, second, carriers)


def _merge(net: Network, match: _Parallel) -> Rewrite:
    first, second = match.first, match.second
    merged = fresh_name(f"{first}*{second}", set(net.all_legs))
    sizes = (net.size(first), net.size(second))
    entries = list(net.entries)
    for p in match.carriers:
        e = entries[p]
        at = e.legs.index(first)
        legs = e.legs[:at] + (merged,) + e.legs[at + 2 :]
        kind = append_views(e.kind, [Flatten(at, sizes)]) if isinstance(e.kind, Data) else e.kind
        entries[p] = Tensor(e.name, legs, kind)
    result = net.replace(tensors=entries, sizes={**net.sizes, merged: sizes[0] * sizes[1]})
    names = tuple(dict.fromkeys(net.entries[p].name for p in match.carriers))
    condition = f"{first}, {second} adjacent on exactly {', '.join(names)}, summed"
    return result, Record("merge parallel legs", names, (first, second), condition, f"one leg {merged}")


merge_parallel: Rule[_Parallel] = Rule("merge parallel legs", LEGS, _match_parallel, _merge)
"""Merge two adjacent summed legs that appear together on the same data / all-ones tensors."""


def _adjacent(entry: Tensor, first: str, second: str) -> bool:
    """Whether ``entry`` is data or all-ones and carries ``first`` then ``second`` once each, next to each other,
    neither of them a pattern leg of a ``Taps`` view."""
    if not isinstance(entry.kind, (Data, Ones)) or entry.legs.count(first) != 1 or entry.legs.count(second) != 1:
        return False
    at = entry.legs.index(first)
    return at + 1 < len(entry.legs) and entry.legs[at + 1] == second and not (
        _is_tap(entry, first) or _is_tap(entry, second)
    )


def _is_tap(entry: Tensor, leg: str) -> bool:
    """Whether ``entry`` is a data tensor that reads ``leg`` through a ``Taps`` view (a pattern leg)."""
    return leg in entry.tap_legs
