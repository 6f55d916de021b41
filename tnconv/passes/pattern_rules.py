"""Index-pattern rewrite rules, each applied only where its condition is proven from the (symbolic) sizes.

``Pi[k, o, i] = [i == S*o + D*k - P_left]`` (legs ``(k, o, i)``). Let
``O`` be the output size. Each rule is a ``tnconv.passes.sweep.Rule`` that
looks at ``IndexPattern`` tensors; ``tnconv.passes.simplify.RULES`` orders
them (and says why):

- ``unused_pixels``: with no left padding (``P_left <= 0``) and no tap ever
  reading padding (``S*(O-1) + D*(K-1) - P_left <= I-1``), pixels before
  ``-P_left`` and after the last block are never read: slice ``i`` down to
  them (a ``Slice`` view on each data tensor on ``i``), giving a pattern
  with ``P = 0`` and ``I' = S*O`` (when blocks do not overlap) or
  ``I' = S*(O-1) + D*(K-1) + 1``. This is the ``I % S != 0`` rule.
- pattern -> taps: with ``P = 0`` and no padding read, ``Pi`` relabels
  pixels whenever one output's taps never overlap the next one's: each data
  tensor on ``i`` then reads ``i`` as the taps ``(o, k)`` of ``Pi`` (a
  ``Taps`` view, realised as torch views) and ``Pi`` disappears. Four
  layouts, tried in this order on each pattern, name the rule in the trace:
  * ``strided_slice``: ``K == 1``: ``i = S*o``, a strided slice of ``O``
    pixels (*1x1* when ``S == 1``, else *downsampling*);
  * ``blocks``: ``D*(K-1) < S`` and ``I == S*O``: ``i = S*o + D*k``, blocks
    of ``S`` pixels. ``K == S, D == 1`` is *dense* (patchify, ViT stems),
    ``S > K`` is *downsampling*, ``D > 1`` *dilated blocks*;
  * ``covering_slice``: ``O == 1``: ``i = D*k``, a strided slice of ``K``
    pixels (the *kernel covers the input*);
  * ``partial_blocks``: the last block cut short (``I < S*O``): windows.
  Where the relabelling is a plain reshape with a size-1 leg (``K == S ==
  1``, or ``O == 1`` with ``K == I``, ``D == 1``) the view is an
  ``Unflatten`` instead: that conv is the matrix product it looks like, and
  ``squeeze`` then drops the size-1 leg. The legs of a ``Taps`` view stay
  pattern legs (``squeeze`` and ``merge_parallel`` leave them alone), so the
  native matcher reads the pattern in the view (``tnconv.lower.reading``).
- ``pattern_sum``: when ``o`` is on ``Pi`` only and not an output leg,
  ``sum_o Pi`` is the small ``(K, I)`` ``PatternSum`` (KFAC-reduce).
- ``padding`` (zeros mode): where padding is read but the taps of one output
  do not overlap the next (``D*(K-1) < S``, or ``K == 1``, or ``O == 1``),
  the data reads ``i`` as the taps of the padded ``Pi`` (a ``Taps`` view that
  pads: a copy) and ``Pi`` disappears. Overlapping patterns keep their padding.
- ``one_by_one_identity``, ``covering_identity``: ``K == S == 1, P == 0``
  gives ``delta[o, i]`` and a kernel covering the unpadded input gives
  ``delta[k, i]``, whatever the legs join (input VJPs, whose ``i`` is an
  output leg).

Where sizes are symbolic, a rule fires only where its condition is proven for
all values of the symbols. The whole-blocks layout says in the trace when its
defining condition ``I % S == 0`` holds for some sizes but is not proven for
all: ``dense: Pi1 not applied [not proven for all sizes: H % 2 == 0]`` (the
partial-blocks layout then takes the pattern, for every ``H``).

Every rule needs the legs to connect as it assumes: ``Pi``'s three legs are
distinct and, for the rules that change views, ``i`` is not an output leg
and every other tensor on it is a data tensor carrying it once (so views can
express the rewrite).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, equal, proven_equal, proven_le, proven_lt
from tnconv.ir.tensors import Data, Identity, IndexPattern, PatternSum
from tnconv.ir.views import Slice, Taps, Unflatten, View
from tnconv.passes.core import Record, Rewrite, unproven
from tnconv.passes.sweep import Rule
from tnconv.passes.viewchain import append_views

_is, _le, _lt = proven_equal, proven_le, proven_lt  # short names: the conditions read like the maths


@dataclass(frozen=True)
class _Site:
    """An index pattern whose ``i`` leg joins only data tensors, each carrying ``i`` once."""

    position: int
    entry: Tensor
    pattern: IndexPattern
    k: str
    o: str
    i: str
    size_i: Size
    size_o: Size
    readers: tuple[tuple[int, int], ...]  # (position, slot of i) of each data tensor on i
    names: str  # the readers' names, for the trace


def _pattern(net: Network, position: int) -> Optional[tuple[Tensor, IndexPattern]]:
    """The tensor at ``position`` and its pattern, when it is an index pattern with three distinct legs."""
    entry = net.entries[position]
    if not isinstance(entry.kind, IndexPattern) or len(set(entry.legs)) != 3:
        return None
    return entry, entry.kind


def _site(net: Network, position: int) -> Optional[_Site]:
    """The pattern at ``position`` as a ``_Site`` when only data tensors (carrying it once) share its ``i`` leg."""
    found = _pattern(net, position)
    if found is None:
        return None
    entry, pattern = found
    k, o, i = entry.legs
    if i in net.output_set:
        return None
    readers = []
    for other in net.tensors_on(i):
        if other == position:
            continue
        carrier = net.entries[other]
        if carrier.structured or i in carrier.repeated_legs:
            return None
        readers.append((other, carrier.legs.index(i)))
    if not readers:
        return None
    names = ", ".join(dict.fromkeys(net.entries[p].name for p, _ in readers))
    return _Site(position, entry, pattern, k, o, i, net.size(i), net.size(o), tuple(readers), names)


def _reads_no_padding(site: _Site) -> tuple[bool, Size]:
    """Whether ``P_left <= 0`` and no tap reads past ``I - 1``; and the first pixel read, ``-P_left``."""
    p = site.pattern
    start = -p.pad_left
    last = start + p.stride * (site.size_o - 1) + p.dilation * (p.kernel_size - 1)
    return _le(0, start) and _le(last, site.size_i - 1), start


def _rewrite_readers(net: Network, site: _Site, views: tuple[View, ...], new_legs: tuple[str, ...]) -> list[Tensor]:
    """The tensors of ``net`` with each reader's ``i`` slot seen through ``views`` (slot index 0) as ``new_legs``."""
    entries = list(net.entries)
    for position, slot in site.readers:
        entry = entries[position]
        assert isinstance(entry.kind, Data)  # a reader (``_site``)
        shifted = tuple(_at(view, slot) for view in views)
        legs = entry.legs[:slot] + new_legs + entry.legs[slot + 1 :]
        entries[position] = Tensor(entry.name, legs, append_views(entry.kind, shifted))
    return entries


def _unpadded_reading(net: Network, site: _Site, view: View, length: Size) -> Network:
    """``net`` with the readers' ``i`` seen through ``view`` (``length`` pixels) and ``Pi`` unpadded on them."""
    p = site.pattern
    entries = _rewrite_readers(net, site, (view,), (site.i,))
    entries[site.position] = Tensor(
        site.entry.name, site.entry.legs, IndexPattern(length, p.kernel_size, p.stride, 0, 0, p.dilation)
    )
    return net.replace(tensors=entries, sizes={**net.sizes, site.i: length})


def _at(view: View, slot: int) -> View:
    """``view`` written for axis 0 moved to axis ``slot``."""
    return replace(view, axis=view.axis + slot)


def _describe(p: IndexPattern, size_o: Size) -> str:
    return f"I={p.input_size}, K={p.kernel_size}, S={p.stride}, P=({p.pad_left},{p.pad_right}), D={p.dilation}, O={size_o}"


def _taps_fit_in_stride(p: IndexPattern) -> bool:
    """``D*(K-1) + 1 <= S``: one output's taps end before the next output's begin."""
    return _le(p.dilation * (p.kernel_size - 1) + 1, p.stride)


# --- unused pixels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Crop:
    """Keep pixels ``[start, start + length)`` of ``site.i``."""

    site: _Site
    start: Size
    length: Size


def _match_unused_pixels(net: Network, position: int) -> Optional[_Crop]:
    site = _site(net, position)
    if site is None:
        return None
    p = site.pattern
    clean, start = _reads_no_padding(site)
    if not clean:
        return None
    S, K, D, O, I = p.stride, p.kernel_size, p.dilation, site.size_o, site.size_i
    blocked = _taps_fit_in_stride(p) and _le(start + S * O, I)
    length = S * O if blocked else S * (O - 1) + D * (K - 1) + 1
    if not (_lt(0, start) or _lt(length, I)):
        return None
    return _Crop(site, start, length)


def _crop(net: Network, match: _Crop) -> Rewrite:
    site, start, length = match.site, match.start, match.length
    p = site.pattern
    S, K, D, O = p.stride, p.kernel_size, p.dilation, site.size_o
    result = _unpadded_reading(net, site, Slice(0, start, 1, length, site.size_i), length)
    last = start + S * (O - 1) + D * (K - 1)
    condition = f"{_describe(p, O)}: taps read pixels {start}..{last} only"
    effect = f"slice {site.i} to pixels [{start}, {start + length}) on {site.names}"
    return result, Record("unused pixels", (site.entry.name,), (site.i,), condition, effect)


unused_pixels: Rule[_Crop] = Rule("unused pixels", IndexPattern, _match_unused_pixels, _crop)
"""Slice away pixels no tap reads (leading ones when ``P_left < 0``, trailing ones when ``I % S != 0``)."""


# --- pattern -> taps: four layouts -------------------------------------------------------------


@dataclass(frozen=True)
class _Relabel:
    """``Pi`` read as taps ``(o, k)`` of its readers' ``i`` slot; ``rule`` and ``condition`` for the trace."""

    site: _Site
    rule: str
    condition: str


def _relabel_site(net: Network, position: int) -> Optional[_Site]:
    """The pattern at ``position`` when it reads pixels from 0 on and no padding (``P = 0`` in effect)."""
    site = _site(net, position)
    if site is None:
        return None
    clean, start = _reads_no_padding(site)
    return site if clean and _is(start, 0) else None


def _match_strided_slice(net: Network, position: int) -> Optional[_Relabel]:
    """``K == 1``: ``i = S*o``, the strided slice of ``O`` pixels (``1x1`` when ``S == 1``)."""
    site = _relabel_site(net, position)
    if site is None or not _is(site.pattern.kernel_size, 1):
        return None
    S, O, I = site.pattern.stride, site.size_o, site.size_i
    if _is(S, 1):
        return _Relabel(site, "1x1", f"K=S=1, P=0, I=O={I}")
    return _Relabel(site, "downsampling", f"K=1, S={S}, P=0: i = {S}*o, O={O}")


def _match_blocks(net: Network, position: int) -> Union[_Relabel, Record, None]:
    """``D*(K-1) < S``, ``I == S*O``: ``i = S*o + D*k`` (dense, downsampling, dilated blocks).

    With the taps inside one stride and no padding, ``I == S*O`` is ``I % S == 0``: the trace says
    so where that is not proven for all sizes.
    """
    site = _relabel_site(net, position)
    if site is None or not _taps_fit_in_stride(site.pattern):
        return None
    S, K, D, O, I = site.pattern.stride, site.pattern.kernel_size, site.pattern.dilation, site.size_o, site.size_i
    name = "dense" if _is(K, S) and _is(D, 1) else "downsampling" if _is(D, 1) else "dilated blocks"
    whole = equal(S * O, I)
    if whole is None:
        return unproven(name, (site.entry.name,), (site.i,), f"{I} % {S} == 0")
    if not whole:
        return None
    if name == "dense":
        return _Relabel(site, name, f"K=S={K}, P=0, D=1, I%K==0 (I={I}=S*O)")
    if name == "downsampling":
        return _Relabel(site, name, f"S={S} > K={K}, P=0, D=1, I={I}=S*O")
    return _Relabel(site, name, f"D*(K-1)={D * (K - 1)} < S={S}, P=0, I={I}=S*O")


def _match_covering_slice(net: Network, position: int) -> Optional[_Relabel]:
    """``O == 1``: ``i = D*k``, the strided slice of ``K`` pixels (the kernel covers the input)."""
    site = _relabel_site(net, position)
    if site is None or not _is(site.size_o, 1):
        return None
    K, D, I = site.pattern.kernel_size, site.pattern.dilation, site.size_i
    return _Relabel(site, "kernel covers input", f"O=1, P=0: i = {D}*k, K={K}, I={I}")


def _match_partial_blocks(net: Network, position: int) -> Optional[_Relabel]:
    """``D*(K-1) < S`` with the last block cut short: windows of ``D*(K-1)+1`` pixels every ``S``."""
    site = _relabel_site(net, position)
    if site is None or not _taps_fit_in_stride(site.pattern):
        return None
    S, K, D, I = site.pattern.stride, site.pattern.kernel_size, site.pattern.dilation, site.size_i
    name = "downsampling" if _is(D, 1) else "dilated blocks"
    return _Relabel(site, name, f"D*(K-1)+1={D * (K - 1) + 1} <= S={S}, P=0, I={I} (last block partial)")


def _relabelling(match: _Relabel) -> tuple[View, Record]:
    """The view that reads ``match``'s ``i`` as ``(o, k)`` (for axis 0), and the record of the rewrite."""
    site = match.site
    p, O, I = site.pattern, site.size_o, site.size_i
    one_to_one = _is(p.kernel_size, 1) and _is(p.stride, 1) and _is(O, I)
    reshape = one_to_one or (_is(O, 1) and _is(p.kernel_size, I) and _is(p.dilation, 1))
    if reshape:  # i = o, or i = k: a plain reshape, whose size-1 leg ``squeeze`` drops
        view: View = Unflatten(0, (O, p.kernel_size))
        effect = f"reshape {site.i} into ({site.o}, {site.k}) on {site.names} + identities; drop {site.entry.name}"
    else:
        view = Taps(0, p)
        effect = f"read {site.i} as taps ({site.o}, {site.k}) of {site.names}; drop {site.entry.name}"
    return view, Record(match.rule, (site.entry.name,), (site.i,), match.condition, effect)


def _relabel(net: Network, match: _Relabel) -> Rewrite:
    result, (record,) = _relabel_many(net, (match,))
    return result, record


def _relabel_many(net: Network, matches: Sequence[_Relabel]) -> tuple[Network, tuple[Record, ...]]:
    """``_relabel`` at each of ``matches`` (all found on ``net``, in site order) as one network.

    The same network as relabelling one site at a time: each reader's legs and
    views are rewritten in the same order (a site's ``i`` slot is found where the
    earlier sites left it), but its tensor is built once for all of its sites, and
    the patterns are dropped at the end (a conv with thousands of 1x1 dims was
    otherwise rebuilt once per dim, each time copying the reader's thousands of legs).
    """
    entries = list(net.entries)
    rewritten: dict[int, tuple[list[str], list[View]]] = {}
    records = []
    for match in matches:
        view, record = _relabelling(match)
        site = match.site
        for position, _ in site.readers:
            legs, views = rewritten.setdefault(position, (list(entries[position].legs), []))
            slot = legs.index(site.i)
            legs[slot : slot + 1] = [site.o, site.k]
            views.append(_at(view, slot))
        records.append(record)
    for position, (legs, views) in rewritten.items():
        entry = entries[position]
        assert isinstance(entry.kind, Data)  # a reader (``_site``)
        entries[position] = Tensor(entry.name, tuple(legs), append_views(entry.kind, views))
    dropped = {match.site.position for match in matches}
    kept = [entry for position, entry in enumerate(entries) if position not in dropped]
    return net.replace(tensors=kept), tuple(records)


strided_slice: Rule[_Relabel] = Rule("strided slice", IndexPattern, _match_strided_slice, _relabel, _relabel_many)
blocks: Rule[_Relabel] = Rule("blocks", IndexPattern, _match_blocks, _relabel, _relabel_many)
covering_slice: Rule[_Relabel] = Rule("covering slice", IndexPattern, _match_covering_slice, _relabel, _relabel_many)
partial_blocks: Rule[_Relabel] = Rule("partial blocks", IndexPattern, _match_partial_blocks, _relabel, _relabel_many)


# --- pattern sum -------------------------------------------------------------------------------


def _match_pattern_sum(net: Network, position: int) -> Optional[tuple[int, IndexPattern]]:
    """The position and pattern when ``o`` is on ``Pi`` only and not an output leg."""
    found = _pattern(net, position)
    if found is None:
        return None
    o = found[0].legs[1]
    return (position, found[1]) if o not in net.output_set and net.tensors_on(o) == (position,) else None


def _sum_over_o(net: Network, match: tuple[int, IndexPattern]) -> Rewrite:
    position, pattern = match
    entry = net.entries[position]
    k, o, i = entry.legs
    entries = list(net.entries)
    entries[position] = Tensor(entry.name, (k, i), PatternSum(pattern))
    condition = f"{o} on {entry.name} only, not an output leg"
    effect = f"sum over {o}: {entry.name} becomes the ({k}, {i}) pattern sum"
    return net.replace(tensors=entries), Record("pattern sum", (entry.name,), (o,), condition, effect)


pattern_sum: Rule[tuple[int, IndexPattern]] = Rule("pattern sum", IndexPattern, _match_pattern_sum, _sum_over_o)
"""``sum_o Pi[k, o, i]`` -> ``PatternSum[k, i]`` where ``o`` is on ``Pi`` only and not an output leg."""


# --- padding -----------------------------------------------------------------------------------


def _match_padding(net: Network, position: int) -> Optional[tuple[_Site, Size]]:
    """Zero padding is read and the taps of one output do not overlap the next (or ``K == 1``, or ``O == 1``).

    Returns the site and the pixels its readers are padded to. ``sum_i Pi[k, o, i] X[i]
    = X'[S*o + D*k]`` with ``X'`` = ``X`` zero-padded by ``P_left`` on the left (and
    cropped or padded on the right to the pixels read): the readers read ``i`` as the
    taps of ``Pi``, padding included. Overlapping patterns (``D*(K-1) >= S``) keep
    theirs: a copy of the padded input would not pay for itself there.
    """
    site = _site(net, position)
    if site is None or site.pattern.mode != "zeros":
        return None
    p = site.pattern
    S, K, D, O, I = p.stride, p.kernel_size, p.dilation, site.size_o, site.size_i
    last = S * (O - 1) + D * (K - 1) - p.pad_left
    if not (_lt(0, p.pad_left) or _lt(I - 1, last)):
        return None
    blocked = _taps_fit_in_stride(p)
    if not (blocked or _is(K, 1) or _is(O, 1)):
        return None
    return site, S * O if blocked else S * (O - 1) + D * (K - 1) + 1


def _pad(net: Network, match: tuple[_Site, Size]) -> Rewrite:
    site, length = match
    p = site.pattern
    entries = _rewrite_readers(net, site, (Taps(0, p),), (site.o, site.k))
    del entries[site.position]
    condition = f"{_describe(p, site.size_o)}: reads zero padding; taps of one output do not overlap the next"
    effect = (
        f"read {site.i} as taps ({site.o}, {site.k}) of {site.names}, zero-padded by "
        f"({p.pad_left}, {length - p.pad_left - site.size_i}) (a copy); drop {site.entry.name}"
    )
    return net.replace(tensors=entries), Record("padding", (site.entry.name,), (site.i,), condition, effect)


padding: Rule[tuple[_Site, Size]] = Rule("padding", IndexPattern, _match_padding, _pad)


# --- pattern as an identity --------------------------------------------------------------------


@dataclass(frozen=True)
class _AsIdentity:
    """``Pi`` at ``position`` is the identity on ``kept``; its size-1 leg ``spare`` is summed."""

    position: int
    kept: tuple[str, str]
    spare: str
    rule: str
    condition: str


def _summable(net: Network, position: int, spare: str) -> bool:
    """Whether ``spare`` may be summed away: not an output leg that only the pattern carries."""
    return not (spare in net.output_set and net.tensors_on(spare) == (position,))


def _unpadded(p: IndexPattern) -> bool:
    return _is(p.pad_left, 0) and _is(p.pad_right, 0)


def _match_one_by_one_identity(net: Network, position: int) -> Optional[_AsIdentity]:
    """``K == S == 1, P == 0``: ``Pi[0, o, i] = delta[o, i]``, whatever ``i`` joins (input VJPs)."""
    found = _pattern(net, position)
    if found is None:
        return None
    (entry, p), (k, o, i) = found, found[0].legs
    if not (_unpadded(p) and _is(p.kernel_size, 1) and _is(p.stride, 1) and _summable(net, position, k)):
        return None
    return _AsIdentity(position, (o, i), k, "1x1", f"K=S=1, P=0: {entry.name}[0, o, i] = delta[o, i]")


def _match_covering_identity(net: Network, position: int) -> Optional[_AsIdentity]:
    """``O == 1, D == 1, K == I, P == 0``: ``Pi[k, 0, i] = delta[k, i]``, whatever ``i`` joins."""
    found = _pattern(net, position)
    if found is None:
        return None
    (entry, p), (k, o, i) = found, found[0].legs
    covers = _is(net.size(o), 1) and _is(p.dilation, 1) and _is(p.kernel_size, p.input_size)
    if not (_unpadded(p) and covers and _summable(net, position, o)):
        return None
    condition = f"K=I={p.input_size}, P=0, D=1: {entry.name}[k, 0, i] = delta[k, i]"
    return _AsIdentity(position, (k, i), o, "kernel covers input", condition)


def _as_identity(net: Network, match: _AsIdentity) -> Rewrite:
    entry = net.entries[match.position]
    entries = list(net.entries)
    entries[match.position] = Tensor(entry.name, match.kept, Identity())
    effect = f"{entry.name} becomes the identity on ({', '.join(match.kept)}); size-1 leg {match.spare} summed"
    record = Record(match.rule, (entry.name,), (entry.legs[2],), match.condition, effect)
    return net.replace(tensors=entries), record


one_by_one_identity: Rule[_AsIdentity] = Rule("1x1 identity", IndexPattern, _match_one_by_one_identity, _as_identity)
covering_identity: Rule[_AsIdentity] = Rule("covering identity", IndexPattern, _match_covering_identity, _as_identity)
