"""Leg-level rewrites that hold for any network: identities, size-1 legs, parallel legs.

- **identity**: ``delta[a, b, ...]`` joined to other tensors is a renaming:
  call all its legs by one name and drop it (at most one of them may be an
  output leg; the merged leg must stay on some other tensor).
- **squeeze**: a summed leg of size 1 indexes nothing: drop it from the data
  tensors (a ``Squeeze`` view), all-ones tensors and identities carrying it
  (only where no index pattern, whose kind fixes its legs, carries it too:
  then the leg would stay and nothing is gained).
- **ones**: an all-ones tensor whose legs all sit on other tensors too
  multiplies by 1: drop it.
- **merge parallel legs**: two summed legs that sit next to each other, in
  the same order, on exactly the same tensors (data or all-ones) act as one
  leg of the product size: merge them (a ``Flatten`` view).
"""

from __future__ import annotations

from typing import Optional

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import proven_equal
from tnconv.ir.tensors import Data, Identity, Ones
from tnconv.ir.views import Flatten, Squeeze
from tnconv.passes.core import Record, Rewrite, fresh_leg
from tnconv.passes.viewchain import append_views


def remove_identity(net: Network) -> Optional[Rewrite]:
    """Drop an identity tensor by renaming its legs to one leg."""
    for position, entry in enumerate(net.entries):
        if not isinstance(entry.kind, Identity) or len(set(entry.legs)) != len(entry.legs):
            continue
        sizes = [net.size(leg) for leg in entry.legs]
        if any(not proven_equal(size, sizes[0]) for size in sizes[1:]):
            continue
        outputs = [leg for leg in entry.legs if leg in net.output]
        if len(outputs) > 1:
            continue
        target = outputs[0] if outputs else entry.legs[0]
        others = [e for p, e in enumerate(net.entries) if p != position]
        if not any(leg in e.legs for e in others for leg in entry.legs):
            continue
        mapping = {leg: target for leg in entry.legs if leg != target}
        entries = [Tensor(e.name, tuple(mapping.get(l, l) for l in e.legs), e.kind) for e in others]
        sizes_left = {leg: size for leg, size in net.sizes.items() if leg not in mapping}
        result = Network(entries, net.output, {leg: s for leg, s in sizes_left.items() if any(leg in e.legs for e in entries)})
        renames = ", ".join(f"{old}->{target}" for old in mapping)
        condition = f"legs {entry.legs} of size {sizes[0]}" + (f", {target} an output leg" if outputs else "")
        return result, Record("identity", (entry.name,), entry.legs, condition, f"rename {renames}; drop {entry.name}")
    return None


def squeeze(net: Network) -> Optional[Rewrite]:
    """Drop a summed size-1 leg from the data, all-ones and identity tensors that carry it."""
    for leg, size in net.sizes.items():
        if leg in net.output or not proven_equal(size, 1):
            continue
        carriers = [net.entries[p] for p in net.tensors_on(leg)]
        if any(e.structured and not isinstance(e.kind, (Ones, Identity)) for e in carriers):
            continue  # a pattern keeps the leg: squeezing the others gains nothing
        entries: list[Tensor] = []
        changed: list[str] = []
        for entry in net.entries:
            if leg not in entry.legs:
                entries.append(entry)
                continue
            legs = tuple(l for l in entry.legs if l != leg)
            changed.append(entry.name)
            if isinstance(entry.kind, Data):
                slots = [slot for slot, l in enumerate(entry.legs) if l == leg]
                views = [Squeeze(slot) for slot in reversed(slots)]
                entries.append(Tensor(entry.name, legs, append_views(entry.kind, views)))
            elif isinstance(entry.kind, Identity) and len(legs) >= 2:
                entries.append(Tensor(entry.name, legs, entry.kind))
            elif legs or len(net.entries) == 1:
                entries.append(Tensor(entry.name, legs, Ones()))
        if not entries:
            entries.append(Tensor(fresh_leg("ones", set(net.tensors)), (), Ones()))
        effect = f"drop {leg} from {', '.join(dict.fromkeys(changed))}"
        result = net.replace(tensors=entries)
        return result, Record("squeeze", tuple(dict.fromkeys(changed)), (leg,), f"{leg} has size 1, summed", effect)
    return None


def drop_ones(net: Network) -> Optional[Rewrite]:
    """Drop an all-ones tensor whose legs other tensors carry too (a factor of 1 everywhere)."""
    for position, entry in enumerate(net.entries):
        if not isinstance(entry.kind, Ones) or len(net.entries) == 1:
            continue
        if all(len(net.tensors_on(leg)) > 1 for leg in entry.legs):
            entries = [e for p, e in enumerate(net.entries) if p != position]
            condition = f"legs {entry.legs} on other tensors too" if entry.legs else "no legs"
            return net.replace(tensors=entries), Record("ones", (entry.name,), entry.legs, condition, f"drop {entry.name}")
    return None


def merge_parallel(net: Network) -> Optional[Rewrite]:
    """Merge two adjacent summed legs that appear together on the same data / all-ones tensors."""
    for first in net.all_legs:
        if first in net.output:
            continue
        carriers = net.tensors_on(first)
        entry = net.entries[carriers[0]]
        if entry.legs.count(first) != 1:
            continue
        slot = entry.legs.index(first)
        if slot + 1 >= len(entry.legs):
            continue
        second = entry.legs[slot + 1]
        if second == first or second in net.output or net.tensors_on(second) != carriers:
            continue
        if not all(_adjacent(net.entries[p], first, second) for p in carriers):
            continue
        merged = fresh_leg(f"({first},{second})", set(net.all_legs))
        sizes = (net.size(first), net.size(second))
        entries = list(net.entries)
        for p in carriers:
            e = entries[p]
            at = e.legs.index(first)
            legs = e.legs[:at] + (merged,) + e.legs[at + 2 :]
            kind = append_views(e.kind, [Flatten(at, sizes)]) if isinstance(e.kind, Data) else e.kind
            entries[p] = Tensor(e.name, legs, kind)
        new_sizes = {**net.sizes, merged: sizes[0] * sizes[1]}
        result = net.replace(tensors=entries, sizes=new_sizes)
        names = tuple(dict.fromkeys(net.entries[p].name for p in carriers))
        condition = f"{first}, {second} adjacent on exactly {', '.join(names)}, summed"
        return result, Record("merge parallel legs", names, (first, second), condition, f"one leg {merged}")
    return None


def _adjacent(entry: Tensor, first: str, second: str) -> bool:
    """Whether ``entry`` is data or all-ones and carries ``first`` then ``second`` once each, next to each other."""
    if not isinstance(entry.kind, (Data, Ones)) or entry.legs.count(first) != 1 or entry.legs.count(second) != 1:
        return False
    at = entry.legs.index(first)
    return at + 1 < len(entry.legs) and entry.legs[at + 1] == second


RULES = (remove_identity, squeeze, drop_ones, merge_parallel)
