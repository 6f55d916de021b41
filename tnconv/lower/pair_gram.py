"""Pattern-pair Grams: ``sum_{n,o} A[i] Pi[k,o,i] Pi[k',o,i'] B[i']`` by windowed cross-correlations (no patches).

A network of two data tensors ``A``, ``B`` and, per spatial dim, a *pattern pair*: two
equal index patterns ``Pi[k, o, i]``, ``Pi[k', o, i']`` sharing their ``o`` leg, which
is on them only and summed (KFAC-expand's ``sum_{n,o} U U^T``, as ``fuse`` builds it and
``simplify`` leaves it), any stride, dilation and padding mode. The pairs are found
here, in the network as it is: the IR has no pair kind, so the einsum stage plans the
same network with its two patterns per dim (the gather/Gram path) where the planner
does not choose this plan. With ``Ap``/``Bp``
padded by ``(P_left, P_right)`` in the pattern's mode (zeros, or the fold of
reflect/replicate/circular; negative amounts crop), tap ``k`` of output ``o``
reads padded pixel ``S*o + D*k``, so per dim

    ``G[k, k'] = sum_{n, o} Ap[S*o + D*k] Bp[S*o + D*k']``.

**Stride phases.** Write ``D*k = S*q_k + phi_k`` (``0 <= phi_k < S``): tap ``k``
reads pixel ``m = o + q_k`` of phase ``phi_k``, ``Ap_phi[m] = Ap[S*m + phi]``,
so ``G[k, k'] = sum_{n, m in W_k} Ap_phi[m] Bp[S*m + phi + D*(k' - k)]`` over the
window ``W_k = [q_k, q_k + O)`` of its phase. Per phase, the breakpoints ``q_k``
and ``q_k + O`` of its taps cut the phase pixels into segments (stride 1: one
phase, the core ``[D*(K-1), O)`` and thin borders); every window is a union of
whole segments, and a segment's *holders* are the taps whose windows hold it.

**One call per segment product** (one segment per dim, each of some phase):
the weight VJP of a convolution (``aten.convolution_backward``, weight only) with
stride ``S``, dilation ``D``, the network's groups, ``grad_output = Ap_phi`` on the
segments and ``input = Bp`` from ``S*start + phi - D*k_hi`` gives, for every shift
``k' - k`` the holders need (``k`` in ``[k_lo, k_hi]``, the first and last holder;
``k'`` any tap: ``K + k_hi - k_lo`` shifts) at once,

    ``R_s[c, c', e] = sum_{n, m in s} Ap_phi[c, m] Bp[c', S*m + phi + D*(e - k_hi)]``.

These reads stay inside ``Bp`` (no halo), and the shifts are exactly those of
one stride-1 call per pair of phases (``Bp`` split into phases too), in one call
per phase of ``A`` instead of ``S`` (and no copy of ``Bp`` by phases; measured
no slower on CPU). Then

    ``G[c, c', k, k'] = sum_s prod_dims [s_d held by k_d] R_s[c, c', k' - k + k_hi]``,

added as each ``R_s`` comes: for each holder tuple ``k``, ``G[c, c', k, :]`` += the
slice ``e_d in [k_hi - k_d, k_hi - k_d + K_d)`` of ``R_s`` (a view).

FLOPs (``_cost``, exact): ``2 * N * C_A * C_B/G * prod_d sum_s (K + k_hi - k_lo) * |s|``
for the calls plus one per element added, against ``2 * N * T * (C K^N)^2 / G`` for the
im2col Gram. Per dim, away from the borders, that is ``(2 s K - s^2) / K^2`` of it with
``s = S / gcd(D, S)`` (the taps of a phase step ``s`` apart) where ``K >= s``, else 1: at
stride 1 ``(2K - 1) / K^2`` (with the borders 0.32x for a 3x3 'same' conv at 56x56, 0.08x
for 7x7), for 3x3 stride 2 (8/9)^2 = 0.79x in 2D, for ``K <= s`` no gain: ``match`` then
offers no plan, and the planner (``tnconv.lower.plan``) compares the count of one it offers
with the einsum plan's and runs the cheaper.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from tnconv.ir.network import Network
from tnconv.ir.tensors import PADDING_MODES, Data, IndexPattern
from tnconv.lower.layout import Arrange, Restore, arrange, restore
from tnconv.lower.window import Window


@dataclass(frozen=True)
class PairPart:
    """One segment ``[start, stop)`` of stride phase ``phase`` of one dim (phase pixels: padded pixel
    ``S*m + phase``), and its ``holders``: the taps (ascending) whose windows hold it."""

    phase: int
    start: int
    stop: int
    holders: tuple[int, ...]

    @property
    def pixels(self) -> int:
        return self.stop - self.start

    def shifts(self, kernel: int) -> int:
        """``K + k_hi - k_lo``: the shifts ``k' - k`` its call computes (``k`` a holder, ``k'`` any tap)."""
        return kernel + self.holders[-1] - self.holders[0]

    def a_pixels(self, stride: int) -> slice:
        """The padded pixels of ``A`` the call reads: the segment, every ``S``-th from ``S*start + phase``."""
        first = stride * self.start + self.phase
        return slice(first, first + stride * (self.pixels - 1) + 1, stride)

    def b_pixels(self, window: Window) -> slice:
        """The padded pixels of ``B`` the call reads: shifts from ``-D*k_hi`` to ``D*(K - 1 - k_lo)``."""
        first = window.stride * self.start + self.phase - window.dilation * self.holders[-1]
        span = window.stride * (self.pixels - 1) + window.dilation * (self.shifts(window.kernel_size) - 1) + 1
        return slice(first, first + span)

    def source(self, tap: int, kernel: int) -> slice:
        """The shifts of its call that holder ``tap`` adds to ``G[tap, :]``: ``e in [k_hi - tap, k_hi - tap + K)``."""
        first = self.holders[-1] - tap
        return slice(first, first + kernel)


@dataclass(frozen=True)
class PairDim:
    """One spatial dim: its index pattern's integer hyper-parameters (``window``: kernel, stride, dilation,
    padding and mode) and its parts, the segments of every stride phase (phase by phase, in pixel order)."""

    window: Window
    parts: tuple[PairPart, ...]

    @property
    def call_pixels(self) -> int:
        """``sum_s shifts * |s|``: this dim's factor of the calls' multiply-adds."""
        return sum(part.shifts(self.window.kernel_size) * part.pixels for part in self.parts)

    @property
    def held(self) -> int:
        """``sum_s |holders(s)|``: this dim's factor of the additions into the Gram."""
        return sum(len(part.holders) for part in self.parts)


@dataclass(frozen=True)
class PairGram:
    """The plan of a pattern-pair Gram (see the module docstring).

    ``a``, ``b``: the operands as ``(batch, G*C, *I)``; ``out``: the result ``(G*C_A, C_B, K.., K'..)`` (``C_B``
    per group) back into the network's output legs. One weight-VJP call per product of the dims' parts.
    ``flops``: 2 per multiply-add of the weight-VJP calls, 1 per element added into the result (exact).
    ``gram_flops``: 2 per multiply-add of the im2col Gram ``sum_{n,o} U U^T`` (``U`` the patches), the products
    the gather/Gram path makes: ``2 * N * C_A * C_B/G * prod_d K_d^2 O_d``.
    ``sizes``: ``(batch, G, C_A, C_B)``: the summed batch, the groups, A's and B's channels per group (what
    ``tnconv.lower.pair_choice`` estimates the time from).
    """

    a: Arrange
    b: Arrange
    out: Restore
    groups: int
    dims: tuple[PairDim, ...]
    flops: int
    gram_flops: int
    largest_intermediate: int
    sizes: tuple[int, int, int, int]
    name: str = "pair_gram"

    @property
    def dense(self) -> tuple[str, ...]:
        return ()

    @property
    def calls(self) -> int:
        """How many weight-VJP calls a run makes."""
        return math.prod(len(d.parts) for d in self.dims)


def match(net: Network) -> PairGram | None:
    """The pattern-pair Gram plan of a concrete ``net`` where its FLOPs are below the im2col Gram's, else None.

    Where every stride phase of every dim holds one tap (``K <= S / gcd(D, S)``, or ``O == 1``) the taps
    share no pixels: the calls make exactly the im2col Gram's products, plus the assembly, so the
    gather/Gram path (one GEMM) is left to run them.
    """
    plan = lower(net)
    return plan if plan is not None and plan.flops < plan.gram_flops else None


def lower(net: Network) -> PairGram | None:
    """The pattern-pair Gram plan of a concrete ``net`` whatever its FLOPs, or None where its form does not fit."""
    if not net.is_concrete:
        return None
    entries = net.entries
    data = [p for p, e in enumerate(entries) if isinstance(e.kind, Data)]
    if len(data) != 2 or any(len(set(e.legs)) != len(e.legs) for e in entries):
        return None
    pairs = _pairs(net)
    if not pairs or len(data) + 2 * len(pairs) != len(entries) or any(int(s) < 1 for s in net.sizes.values()):
        return None
    sides = _sides(net, pairs)
    if sides is None:
        return None
    a, b = sides
    legs = _other_legs(net, a, b, pairs)
    if legs is None:
        return None
    groups, only_a, only_b, batch = legs
    sizes = {leg: int(size) for leg, size in net.sizes.items()}
    ks = [entries[pair.first].legs[0] for pair in pairs]
    k2s = [entries[pair.second].legs[0] for pair in pairs]
    is_a = [entries[pair.first].legs[2] for pair in pairs]
    is_b = [entries[pair.second].legs[2] for pair in pairs]
    dims = tuple(_dim(Window.of(pair.pattern)) for pair in pairs)
    operand = net.operands.index
    a_in = arrange(entries[a], operand(entries[a].name), [batch, groups + only_a, *([leg] for leg in is_a)], sizes)
    b_in = arrange(entries[b], operand(entries[b].name), [batch, groups + only_b, *([leg] for leg in is_b)], sizes)
    out = restore([groups, only_a, only_b, *([k] for k in ks), *([k] for k in k2s)], net.output, sizes)
    size = _product(batch, sizes), _product(groups, sizes), _product(only_a, sizes), _product(only_b, sizes)
    flops, largest = _cost(*size, dims)
    gram = 2 * math.prod(size) * math.prod(d.window.kernel_size ** 2 * d.window.output_size for d in dims)
    return PairGram(a_in, b_in, out, size[1], dims, flops, gram, largest, size)


@dataclass(frozen=True)
class _Pair:
    """Two equal index patterns sharing their ``o`` leg, on them only and not an output leg: ``first`` (the
    earlier position; legs ``(k, o, i)``, the side of ``A``) and ``second`` (legs ``(k', o, i')``, of ``B``)."""

    first: int
    second: int
    pattern: IndexPattern


def _pairs(net: Network) -> list[_Pair] | None:
    """The pattern pairs of ``net`` in the order of their first patterns, when every index pattern is in one."""
    pairs = []
    for position, entry in enumerate(net.entries):
        kind = entry.kind
        if not isinstance(kind, IndexPattern):
            continue
        o = entry.legs[1]
        on = net.tensors_on(o)
        if o in net.output_set or len(on) != 2 or any(net.entries[q].kind != kind or net.entries[q].legs[1] != o
                                                      for q in on):
            return None
        if on[0] == position:
            pairs.append(_Pair(position, on[1], kind))
    return pairs


def _sides(net: Network, pairs: list[_Pair]) -> tuple[int, int] | None:
    """``(A, B)``: the data tensors every pair's ``i`` and ``i'`` join (the same for all), when the pairs fit."""
    found = None
    for pair in pairs:
        pattern = pair.pattern
        if pattern.mode not in PADDING_MODES or min(int(pattern.stride), int(pattern.dilation)) < 1:
            return None
        if int(pattern.kernel_size) < 1 or int(pattern.output_size) < 1:
            return None
        (k, _, i), (k2, _, i2) = net.entries[pair.first].legs, net.entries[pair.second].legs
        if any(leg not in net.output or net.tensors_on(leg) != (p,) for leg, p in ((k, pair.first), (k2, pair.second))):
            return None
        on_i = [q for q in net.tensors_on(i) if q != pair.first]
        on_i2 = [q for q in net.tensors_on(i2) if q != pair.second]
        if i in net.output or i2 in net.output or len(on_i) != 1 or len(on_i2) != 1 or on_i == on_i2:
            return None
        if found is not None and found != (on_i[0], on_i2[0]):
            return None
        found = (on_i[0], on_i2[0])
    return found


def _other_legs(net: Network, a: int, b: int, pairs: list[_Pair]) -> tuple[list[str], ...] | None:
    """The legs of ``A`` and ``B`` other than pixels: (group: both + out, A + out, B + out, batch: both summed)."""
    pixels = {net.entries[p].legs[2] for pair in pairs for p in (pair.first, pair.second)}
    legs_a, legs_b, out = net.entries[a].legs, net.entries[b].legs, set(net.output)
    groups: list[str] = []
    only_a: list[str] = []
    only_b: list[str] = []
    batch: list[str] = []
    for leg in legs_a:
        if leg in pixels:
            continue
        if leg in legs_b:
            (groups if leg in out else batch).append(leg)
        elif leg in out:
            only_a.append(leg)
        else:
            return None
    for leg in legs_b:
        if leg not in pixels and leg not in legs_a:
            if leg not in out:
                return None
            only_b.append(leg)
    return groups, only_a, only_b, batch


def _dim(window: Window) -> PairDim:
    """The parts of one dim: per stride phase, the segments between its taps' window breakpoints
    ``q_k`` and ``q_k + O`` (``D*k = S*q_k + phase``), each kept with the taps whose windows hold it."""
    K, S, D, O = window.kernel_size, window.stride, window.dilation, window.output_size
    parts = []
    for phase in sorted({D * k % S for k in range(K)}):
        starts = {k: (D * k - phase) // S for k in range(K) if D * k % S == phase}
        cuts = sorted({q for q in starts.values()} | {q + O for q in starts.values()})
        for start, stop in itertools.pairwise(cuts):
            holders = tuple(k for k, q in starts.items() if q <= start and stop <= q + O)
            if holders:
                parts.append(PairPart(phase, start, stop, holders))
    return PairDim(window, tuple(parts))


def _cost(batch: int, groups: int, c_a: int, c_b: int, dims: tuple[PairDim, ...]) -> tuple[int, int]:
    """FLOPs (see ``PairGram``) and the largest tensor made: one call's result, the Gram, or a padded operand.

    The calls are the products of the dims' parts, so their multiply-adds and additions factor per dim.
    """
    channels = groups * c_a * c_b
    taps = math.prod(d.window.kernel_size for d in dims)
    calls = math.prod(d.call_pixels for d in dims)
    adds = math.prod(d.held for d in dims)  # (segment product, holder tuple) pairs, each adding C^2 * K^N
    widest = math.prod(max(part.shifts(d.window.kernel_size) for part in d.parts) for d in dims)
    padded = batch * groups * max(c_a, c_b) * math.prod(d.window.input_size + d.window.pad_left + d.window.pad_right
                                                        for d in dims)
    return 2 * batch * channels * calls + adds * channels * taps, max(channels * max(widest, taps * taps), padded)


def _product(legs: list[str], sizes: dict[str, int]) -> int:
    return math.prod(sizes[leg] for leg in legs)
