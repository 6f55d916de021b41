"""Index-pattern rewrites, each applied only where its condition is proven from the (symbolic) sizes.

``Pi[k, o, i] = [i == S*o + D*k - P_left]`` (legs ``(k, o, i)``). Let
``O`` be the output size. The rules, in the order ``simplify`` tries them:

- **unused pixels**: with no left padding (``P_left <= 0``) and no tap ever
  reading padding (``S*(O-1) + D*(K-1) - P_left <= I-1``), pixels before
  ``-P_left`` and after the last block are never read: slice ``i`` down to
  them (a ``Slice`` view on each data tensor on ``i``), giving a pattern
  with ``P = 0`` and ``I' = S*O`` (when blocks do not overlap) or
  ``I' = S*(O-1) + D*(K-1) + 1``. This is the ``I % S != 0`` rule.
- **dense / downsampling / 1x1 / kernel covers input** (pattern -> views):
  with ``P = 0`` and no padding read, ``Pi`` is a relabelling of pixels
  whenever one output's taps never overlap the next one's:
  * blocks: ``D*(K-1) < S`` and ``I == S*O``: ``i = S*o + D*k`` is
    ``i -> (o, s)`` (an ``Unflatten``) then ``s = D*k`` (a ``Slice`` with
    step ``D`` keeping ``K`` taps). ``K == S, D == 1`` is *dense* (patchify,
    ViT stems), ``S > K`` is *downsampling*, ``K == S == 1`` is *1x1*;
  * ``K == 1``: ``i = S*o`` is a strided slice of ``O`` pixels;
  * ``O == 1``: ``i = D*k`` is a strided slice of ``K`` pixels (the kernel
    covers the whole input);
  * the last block cut short (``I < S*O``): ``i -> (o, s)`` as windows
    (``Tensor.unfold``, a strided view) then the ``D``-step slice.
  Each data tensor on ``i`` then carries ``(o, k)`` in place of ``i`` and
  ``Pi`` disappears: the identities ``delta[o, o'] delta[k, k']`` left by
  the reshape are removed by using the same leg names directly.
- **pattern sum**: when ``o`` is on ``Pi`` only and not an output leg,
  ``sum_o Pi`` is the small ``(K, I)`` ``PatternSum`` (KFAC-reduce).
- **padding** (zeros mode): where padding is read but the taps of one output
  do not overlap the next (``D*(K-1) < S``, or ``K == 1``, or ``O == 1``),
  zero-pad the data (a ``Pad`` view, a copy) and drop the pattern's padding;
  the view rules then apply. Overlapping patterns keep their padding.
- **pattern identity**: ``K == S == 1, P == 0`` gives ``delta[o, i]`` and a
  kernel covering the unpadded input gives ``delta[k, i]``, whatever the
  legs join (input VJPs, whose ``i`` is an output leg).

Every rule needs the legs to connect as it assumes: ``Pi``'s three legs are
distinct and, for the rules that change views, ``i`` is not an output leg
and every other tensor on it is a data tensor carrying it once (so views can
express the rewrite).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, proven_equal, proven_le, proven_lt
from tnconv.ir.tensors import Identity, IndexPattern, PatternSum
from tnconv.ir.views import Pad, Slice, Unflatten, View, Windows
from tnconv.passes.core import Record, Rewrite
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


def _sites(net: Network):
    """Every index pattern with distinct legs whose ``i`` leg only data tensors (carrying it once) share."""
    for position, entry in enumerate(net.entries):
        if not isinstance(entry.kind, IndexPattern) or len(set(entry.legs)) != 3:
            continue
        k, o, i = entry.legs
        if i in net.output:
            continue
        readers = []
        for other in net.tensors_on(i):
            if other == position:
                continue
            carrier = net.entries[other]
            if carrier.structured or carrier.legs.count(i) != 1:
                break
            readers.append((other, carrier.legs.index(i)))
        else:
            if readers:
                names = ", ".join(dict.fromkeys(net.entries[p].name for p, _ in readers))
                yield _Site(position, entry, entry.kind, k, o, i, net.size(i), net.size(o), tuple(readers), names)


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
        shifted = tuple(_at(view, slot) for view in views)
        legs = entry.legs[:slot] + new_legs + entry.legs[slot + 1 :]
        entries[position] = Tensor(entry.name, legs, append_views(entry.kind, shifted))  # type: ignore[arg-type]
    return entries


def _at(view: View, slot: int) -> View:
    """``view`` written for axis 0 moved to axis ``slot``."""
    return replace(view, axis=view.axis + slot)


def _describe(p: IndexPattern, size_o: Size) -> str:
    return f"I={p.input_size}, K={p.kernel_size}, S={p.stride}, P=({p.pad_left},{p.pad_right}), D={p.dilation}, O={size_o}"


def unused_pixels(net: Network) -> Optional[Rewrite]:
    """Slice away pixels no tap reads (leading ones when ``P_left < 0``, trailing ones when ``I % S != 0``)."""
    for site in _sites(net):
        p = site.pattern
        clean, start = _reads_no_padding(site)
        if not clean:
            continue
        S, K, D, O, I = p.stride, p.kernel_size, p.dilation, site.size_o, site.size_i
        blocked = _le(D * (K - 1) + 1, S) and _le(start + S * O, I)
        length = S * O if blocked else S * (O - 1) + D * (K - 1) + 1
        if not (_lt(0, start) or _lt(length, I)):
            continue
        views: tuple[View, ...] = (Slice(0, start, 1, length, I),)
        entries = _rewrite_readers(net, site, views, (site.i,))
        entries[site.position] = Tensor(site.entry.name, site.entry.legs, IndexPattern(length, K, S, 0, 0, D))
        result = net.replace(tensors=entries, sizes={**net.sizes, site.i: length})
        last = start + S * (O - 1) + D * (K - 1)
        condition = f"{_describe(p, O)}: taps read pixels {start}..{last} only"
        effect = f"slice {site.i} to pixels [{start}, {start + length}) on {site.names}"
        return result, Record("unused pixels", (site.entry.name,), (site.i,), condition, effect)
    return None


def pattern_to_view(net: Network) -> Optional[Rewrite]:
    """Replace ``Pi`` by views on the data tensors it reads (dense, downsampling, 1x1, kernel covers input)."""
    for site in _sites(net):
        p = site.pattern
        clean, start = _reads_no_padding(site)
        if not clean or not _is(start, 0):
            continue
        S, K, D, O, I = p.stride, p.kernel_size, p.dilation, site.size_o, site.size_i
        views: tuple[View, ...]
        if _is(K, 1):
            views = (Slice(0, 0, S, O, I), Unflatten(0, (O, 1)))
            rule, condition = ("1x1", f"K=S=1, P=0, I=O={I}") if _is(S, 1) else (
                "downsampling", f"K=1, S={S}, P=0: i = {S}*o, O={O}"
            )
        elif _le(D * (K - 1) + 1, S) and _is(S * O, I):
            views = (Unflatten(0, (O, S)), Slice(1, 0, D, K, S))
            if _is(K, S) and _is(D, 1):
                rule, condition = "dense", f"K=S={K}, P=0, D=1, I%K==0 (I={I}=S*O)"
            elif _is(D, 1):
                rule, condition = "downsampling", f"S={S} > K={K}, P=0, D=1, I={I}=S*O"
            else:
                rule, condition = "dilated blocks", f"D*(K-1)={D * (K - 1)} < S={S}, P=0, I={I}=S*O"
        elif _is(O, 1):
            views = (Slice(0, 0, D, K, I), Unflatten(0, (1, K)))
            rule, condition = "kernel covers input", f"O=1, P=0: i = {D}*k, K={K}, I={I}"
        elif _le(D * (K - 1) + 1, S):
            span = D * (K - 1) + 1
            views = (Windows(0, span, S, O, I), Slice(1, 0, D, K, span))
            name = "downsampling" if _is(D, 1) else "dilated blocks"
            rule, condition = name, f"D*(K-1)+1={span} <= S={S}, P=0, I={I} (last block partial)"
        else:
            continue
        entries = _rewrite_readers(net, site, views, (site.o, site.k))
        del entries[site.position]
        effect = f"reshape {site.i} into ({site.o}, {site.k}) on {site.names} + identities; drop {site.entry.name}"
        return net.replace(tensors=entries), Record(rule, (site.entry.name,), (site.i,), condition, effect)
    return None


def pattern_sum(net: Network) -> Optional[Rewrite]:
    """``sum_o Pi[k, o, i]`` -> ``PatternSum[k, i]`` where ``o`` is on ``Pi`` only and not an output leg."""
    for position, entry in enumerate(net.entries):
        if not isinstance(entry.kind, IndexPattern) or len(set(entry.legs)) != 3:
            continue
        k, o, i = entry.legs
        if o in net.output or net.tensors_on(o) != (position,):
            continue
        entries = list(net.entries)
        entries[position] = Tensor(entry.name, (k, i), PatternSum(entry.kind))
        condition = f"{o} on {entry.name} only, not an output leg"
        effect = f"sum over {o}: {entry.name} becomes the ({k}, {i}) pattern sum"
        return net.replace(tensors=entries), Record("pattern sum", (entry.name,), (o,), condition, effect)
    return None


def padding(net: Network) -> Optional[Rewrite]:
    """Zero padding read by a pattern whose outputs' taps do not overlap -> a ``Pad`` view on the data.

    ``sum_i Pi[k, o, i] X[i] = X'[S*o + D*k]`` with ``X'`` = ``X`` zero-padded
    by ``P_left`` on the left (and cropped or padded on the right to the
    pixels read): the pattern loses its padding and the view rules apply.
    Overlapping patterns (``D*(K-1) >= S``) keep theirs: a copy of the padded
    input would not pay for itself there.
    """
    for site in _sites(net):
        p = site.pattern
        if p.mode != "zeros":
            continue
        S, K, D, O, I = p.stride, p.kernel_size, p.dilation, site.size_o, site.size_i
        last = S * (O - 1) + D * (K - 1) - p.pad_left
        if not (_lt(0, p.pad_left) or _lt(I - 1, last)):
            continue
        blocked = _le(D * (K - 1) + 1, S)
        if not (blocked or _is(K, 1) or _is(O, 1)):
            continue
        length = S * O if blocked else S * (O - 1) + D * (K - 1) + 1
        left, right = p.pad_left, length - p.pad_left - I
        entries = _rewrite_readers(net, site, (Pad(0, left, right, I),), (site.i,))
        entries[site.position] = Tensor(site.entry.name, site.entry.legs, IndexPattern(length, K, S, 0, 0, D))
        result = net.replace(tensors=entries, sizes={**net.sizes, site.i: length})
        condition = f"{_describe(p, O)}: reads zero padding; taps of one output do not overlap the next"
        effect = f"zero-pad {site.i} by ({left}, {right}) on {site.names} (a copy); {site.entry.name} unpadded, I={length}"
        return result, Record("padding", (site.entry.name,), (site.i,), condition, effect)
    return None


def pattern_identity(net: Network) -> Optional[Rewrite]:
    """``Pi`` as an identity, whatever its legs join (also where ``i`` is an output leg, as in input VJPs).

    - 1x1: ``K == 1, S == 1, P == 0``: ``Pi[0, o, i] = delta[o, i]``;
    - kernel covers input: ``O == 1, D == 1, P == 0, K == I``: ``Pi[k, 0, i] = delta[k, i]``.
    The size-1 leg left over (``k``, resp. ``o``) stays on the other tensors
    that carry it; where only ``Pi`` carries it, it must be summed (not an output leg).
    """
    for position, entry in enumerate(net.entries):
        if not isinstance(entry.kind, IndexPattern) or len(set(entry.legs)) != 3:
            continue
        p, (k, o, i) = entry.kind, entry.legs
        no_padding = _is(p.pad_left, 0) and _is(p.pad_right, 0)
        if not no_padding:
            continue
        if _is(p.kernel_size, 1) and _is(p.stride, 1):
            rule, kept, spare, condition = "1x1", (o, i), k, f"K=S=1, P=0: {entry.name}[0, o, i] = delta[o, i]"
        elif _is(net.size(o), 1) and _is(p.dilation, 1) and _is(p.kernel_size, p.input_size):
            rule, kept, spare = "kernel covers input", (k, i), o
            condition = f"K=I={p.input_size}, P=0, D=1: {entry.name}[k, 0, i] = delta[k, i]"
        else:
            continue
        if spare in net.output and net.tensors_on(spare) == (position,):
            continue
        entries = list(net.entries)
        entries[position] = Tensor(entry.name, kept, Identity())
        effect = f"{entry.name} becomes the identity on ({', '.join(kept)}); size-1 leg {spare} summed"
        return net.replace(tensors=entries), Record(rule, (entry.name,), (i,), condition, effect)
    return None


RULES = (unused_pixels, pattern_to_view, pattern_sum, padding, pattern_identity)
