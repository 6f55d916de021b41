"""Structured lowering: index patterns run as strided views, gathers and scatters, never dense.

A dense index pattern ``Pi[k, o, i]`` multiplies a convolution's cost by about
the input size. Here each pattern is classified by how it meets the rest of
the network and lowered without ever being built:

- *gather*: its input leg ``i`` joins exactly one other tensor ``T`` (and not
  the output). ``T`` contracted with ``Pi`` is ``T`` with ``i`` replaced by
  ``(o, k)``: a pad (zeros, or an index map for reflect/replicate/circular)
  followed by ``Tensor.unfold`` and a dilation slice - a strided view of the
  padded ``T``. It is applied before the pairwise contraction, and the
  contraction is planned over the gathered tensor, so the planner sees the
  cost model "``X`` with ``Pi`` = ``X``'s legs with ``i -> (k, o)``".
- *fold*: ``i`` is an output leg on no other tensor and ``o`` joins other
  tensors: the rest is contracted keeping ``(k, o)``, then a scatter-add
  (``index_add``) sends each ``(k, o)`` to its pixel ``i``.
- *scatter*: otherwise, when ``o`` joins exactly one other tensor ``T`` (and
  not the output), ``T``'s ``o`` is scattered onto ``(k, i)`` before the
  contraction (the im2col of a transposed convolution, when its ``i`` meets
  another pattern as in KFAC of a transposed layer).
- anything else (a leg shared with another pattern in a way none of these
  handles, an empty pattern) is materialized densely, and ``Lowering.dense``
  names it.

``PatternSum`` tensors are the small banded ``(K, I)`` matrices of tap counts:
they are materialized (``K * I`` numbers) and contracted like any tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from tnconv.ir.network import Network
from tnconv.ir.tensors import IndexPattern
from tnconv.lower.plan import Optimize, Plan, plan_pairwise
from tnconv.lower.steps import as_gram

@dataclass(frozen=True)
class Window:
    """An index pattern with integer hyper-parameters (what a gather or fold needs)."""

    input_size: int
    kernel_size: int
    output_size: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int
    mode: str

    @classmethod
    def of(cls, pattern: IndexPattern) -> "Window":
        return cls(
            int(pattern.input_size), int(pattern.kernel_size), int(pattern.output_size), int(pattern.stride),
            int(pattern.dilation), int(pattern.pad_left), int(pattern.pad_right), pattern.mode,
        )

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel_size - 1) + 1

    def pattern(self) -> IndexPattern:
        return IndexPattern(
            self.input_size, self.kernel_size, self.stride, self.pad_left, self.pad_right, self.dilation, self.mode
        )


@dataclass(frozen=True)
class Gather:
    """Replace leg ``i`` of working tensor ``slot`` (at ``axis``) by ``o`` there and ``k`` appended last.

    ``index`` is the constant holding the padded-position map (modes other than zeros), or -1.
    """

    slot: int
    axis: int
    window: Window
    index: int


@dataclass(frozen=True)
class Fold:
    """Scatter-add ``(k, o)`` of the result onto ``i``: drop ``o`` (and ``k``), append ``(k, i)`` or ``i``.

    ``k_axis`` is -1 when the result has no ``k`` (it is broadcast); ``target`` and
    ``selection`` are constant numbers (``selection`` -1 when every ``(k, o)`` is inside).
    """

    o_axis: int
    k_axis: int
    keep_k: bool
    window: Window
    target: int
    selection: int


@dataclass(frozen=True)
class Lowering:
    """How a concrete network runs: working tensors, gathers, pairwise steps, folds, a final permutation.

    Working slots follow the network's order, less the gathered and folded patterns: each
    holds a data entry (``data`` gives their network positions, ``execute`` gets their
    tensors in that order) or a densely built structured tensor (the first constants).
    """

    data: tuple[int, ...]
    sources: tuple[tuple[bool, int], ...]
    gathers: tuple[Gather, ...]
    scatters: tuple[tuple[int, Fold], ...]
    plan: Plan
    folds: tuple[Fold, ...]
    permutation: tuple[int, ...] | None
    constants: tuple[tuple[str, object], ...] = field(compare=False)
    flops: int
    largest_intermediate: int
    dense: tuple[str, ...]
    same: tuple[int, ...] = ()

    def make_constants(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The dense structured tensors (in ``dtype``) and the index maps (int64), on ``device``.

        Index maps were computed when lowering (on the CPU, outside any trace), so that
        building constants under ``torch.compile`` runs no data-dependent operation.
        """
        made = []
        for what, payload in self.constants:
            if what == "dense":
                kind, shape = payload  # type: ignore[misc]
                made.append(kind.materialize(shape, dtype, device))
            else:
                made.append(payload.to(device))  # type: ignore[union-attr]
        return tuple(made)

    def execute(self, data: Sequence[torch.Tensor], constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run on the data entries' tensors (views applied), in ``self.data`` order."""
        working = [data[n] if is_data else constants[n] for is_data, n in self.sources]
        for gather in self.gathers:
            index = constants[gather.index] if gather.index >= 0 else None
            working[gather.slot] = apply_gather(working[gather.slot], gather.axis, gather.window, index)
        for slot, fold in self.scatters:
            selection = constants[fold.selection] if fold.selection >= 0 else None
            working[slot] = apply_fold(working[slot], fold, constants[fold.target], selection)
        results: list[torch.Tensor] = []
        for number, step in enumerate(self.plan.steps):
            inputs = [working[p] for p in step.positions]
            working = [t for p, t in enumerate(working) if p not in step.positions]
            earlier = self.same[number] if self.same else -1
            results.append(step(*inputs) if earlier < 0 else results[earlier])
            working.append(results[-1])
        result = working[0]
        for fold in self.folds:
            selection = constants[fold.selection] if fold.selection >= 0 else None
            result = apply_fold(result, fold, constants[fold.target], selection)
        if self.permutation is not None:
            result = result.permute(self.permutation)
        return result


# --- the operations -----------------------------------------------------------------------
def signed_pad(x: torch.Tensor, pad: Sequence[int], mode: str = "constant") -> torch.Tensor:
    """``F.pad`` (``pad`` in its order: last dim first) where negative amounts crop - also when a
    crop reaches past the other side's padding, which ``F.pad`` refuses."""
    grow = [max(amount, 0) for amount in pad]
    if any(grow):
        x = F.pad(x, grow, mode=mode)
    for n in range(len(pad) // 2):
        left, right = pad[2 * n], pad[2 * n + 1]
        if left < 0 or right < 0:
            dim = x.ndim - 1 - n
            x = x.narrow(dim, max(-left, 0), x.shape[dim] - grow[2 * n] - grow[2 * n + 1] + left + right)
    return x


def apply_gather(x: torch.Tensor, axis: int, window: Window, pad_index: torch.Tensor | None) -> torch.Tensor:
    """``x`` with axis ``axis`` (pixels ``i``) replaced by ``o`` there and ``k`` appended last.

    ``result[..., o, ..., k] = x[..., S*o + D*k - P, ...]`` (zero outside for mode zeros): a
    pad (a copy; none when there is no padding) and then strided views.
    """
    if pad_index is not None:
        x = x.index_select(axis, pad_index)
    elif window.pad_left or window.pad_right:
        x = signed_pad(x, [0, 0] * (x.ndim - 1 - axis) + [window.pad_left, window.pad_right])
    x = x.unfold(axis, window.span, window.stride)
    if window.dilation > 1:
        x = x[..., :: window.dilation]
    return x


def apply_fold(
    y: torch.Tensor, fold: Fold, target: torch.Tensor, selection: torch.Tensor | None
) -> torch.Tensor:
    """Scatter-add ``y[..., k, o]`` onto ``i = S*o + D*k - P`` (folded back for padding modes)."""
    window = fold.window
    if fold.k_axis >= 0:
        y = y.movedim((fold.k_axis, fold.o_axis), (-2, -1))
    else:
        y = y.movedim(fold.o_axis, -1).unsqueeze(-2)
        y = y.expand(*y.shape[:-2], window.kernel_size, window.output_size)
    y = y.reshape(*y.shape[:-2], window.kernel_size * window.output_size)
    if selection is not None:
        y = y.index_select(-1, selection)
    size = window.input_size * (window.kernel_size if fold.keep_k else 1)
    result = y.new_zeros(*y.shape[:-1], size).index_add(-1, target, y)
    if fold.keep_k:
        result = result.unflatten(-1, (window.kernel_size, window.input_size))
    return result


def _pad_index(window: Window) -> torch.Tensor:
    """For each padded position ``j`` in ``[0, I + P_left + P_right)``, the input pixel it reads."""
    padded = window.input_size + window.pad_left + window.pad_right
    whole = IndexPattern(window.input_size, padded, 1, window.pad_left, window.pad_right, 1, window.mode)
    index, _ = whole.positions(torch.device("cpu"))
    return index[:, 0].contiguous()


def _fold_target(window: Window, keep_k: bool) -> torch.Tensor:
    """For each ``(k, o)`` inside the input (flattened), its pixel ``i`` (``k * I + i`` when ``k`` is kept)."""
    index, valid = window.pattern().positions(torch.device("cpu"))
    if keep_k:
        index = index + window.input_size * torch.arange(window.kernel_size)[:, None]
    return index.flatten()[valid.flatten()].contiguous()


def _fold_selection(window: Window) -> torch.Tensor:
    """The flattened ``(k, o)`` that read a pixel inside the input (zero padding drops the rest)."""
    _, valid = window.pattern().positions(torch.device("cpu"))
    return valid.flatten().nonzero().flatten()


# --- planning -----------------------------------------------------------------------------
def lower(net: Network, optimize: Optimize, share: bool = True) -> Lowering:
    """Lower a concrete network; with an explicit path every structured tensor is built densely.

    ``share``: a step that computes what an earlier one did (the same equation on the same
    operand, seen the same way - the two halves of a Gram matrix ``X X^T``) reuses its result.
    Only valid when equal operands get equal tensors, so slicing (which narrows each
    occurrence of an operand on its own legs) turns it off.
    """
    entries = net.entries
    sizes = {leg: int(size) for leg, size in net.sizes.items()}
    gathered, folds, scattered = _classify(net) if not isinstance(optimize, tuple) else ([], [], [])
    consumed = {p for p, _ in gathered} | set(folds) | {p for p, _ in scattered}
    data = tuple(p for p, e in enumerate(entries) if not e.structured)
    built_positions = tuple(p for p, e in enumerate(entries) if e.structured and p not in consumed)
    built = tuple((p, entries[p].kind, tuple(sizes[l] for l in entries[p].legs)) for p in built_positions)
    order = sorted(data + built_positions)
    slot = {position: n for n, position in enumerate(order)}
    sources = tuple((p in data, data.index(p) if p in data else built_positions.index(p)) for p in order)
    legs = [list(entries[p].legs) for p in order]
    constants: list[tuple[str, object]] = [("dense", (kind, shape)) for _, kind, shape in built]
    gathers, cost, largest = [], 0, 0
    for position, host in gathered:
        k, o, i = entries[position].legs
        window = Window.of(entries[position].kind)  # type: ignore[arg-type]
        index = -1
        if window.mode != "zeros":
            constants.append(("index", _pad_index(window)))
            index = len(constants) - 1
        host_legs = legs[slot[host]]
        axis = host_legs.index(i)
        gathers.append(Gather(slot[host], axis, window, index))
        host_legs[axis] = o
        host_legs.append(k)
        size = _size(host_legs, sizes)
        cost, largest = cost + size, max(largest, size)
    scatters = []
    for position, host in scattered:
        k, o, i = entries[position].legs
        window = Window.of(entries[position].kind)  # type: ignore[arg-type]
        target, selection = _fold_constants(constants, window, keep_k=True)
        host_legs = legs[slot[host]]
        source = _size(host_legs, sizes) * window.kernel_size
        scatters.append((slot[host], Fold(host_legs.index(o), -1, True, window, target, selection)))
        host_legs.remove(o)
        host_legs.extend((k, i))
        cost, largest = cost + source, max(largest, source, _size(host_legs, sizes))
    rest_output = _rest_output(net, folds, legs)
    plan = plan_pairwise([tuple(l) for l in legs], rest_output, sizes, optimize)
    same, plan = _shared_steps(net, order, gathers, scatters, legs, sizes, plan) if share else ((), plan)
    cost, largest = cost + plan.flops, max(largest, plan.largest_intermediate)
    current = list(rest_output)
    fold_ops = []
    for position in folds:
        k, o, i = entries[position].legs
        window = Window.of(entries[position].kind)  # type: ignore[arg-type]
        keep_k = k in net.output
        target, selection = _fold_constants(constants, window, keep_k)
        k_axis = current.index(k) if k in current else -1
        fold_ops.append(Fold(current.index(o), k_axis, keep_k, window, target, selection))
        source = _size(current, sizes) * (1 if k in current else window.kernel_size)
        current = [leg for leg in current if leg not in (k, o)] + ([k, i] if keep_k else [i])
        cost, largest = cost + source, max(largest, source, _size(current, sizes))
    permutation = tuple(current.index(leg) for leg in net.output)
    dense = tuple(entries[p].name for p in built_positions if isinstance(entries[p].kind, IndexPattern))
    return Lowering(
        data, sources, tuple(gathers), tuple(scatters), plan, tuple(fold_ops),
        None if permutation == tuple(range(len(permutation))) else permutation,
        tuple(constants), cost, largest, dense, same,
    )


def _fold_constants(constants: list[tuple[str, object]], window: Window, keep_k: bool) -> tuple[int, int]:
    """Add a scatter's index maps to ``constants``: the numbers of its target and selection (-1: none)."""
    constants.append(("index", _fold_target(window, keep_k)))
    target = len(constants) - 1
    if window.mode == "zeros" and not _all_inside(window):
        constants.append(("index", _fold_selection(window)))
        return target, len(constants) - 1
    return target, -1


def _shared_steps(
    net: Network, order: Sequence[int], gathers: Sequence[Gather], scatters: Sequence[tuple[int, Fold]],
    legs: Sequence[Sequence[str]], sizes: dict[str, int], plan: Plan,
) -> tuple[tuple[int, ...], Plan]:
    """For each step, an earlier step with the same inputs and equation (its result is reused), or -1;
    and the plan with steps whose two inputs are equal turned into Gram products (``as_gram``).

    A working tensor's signature is its operand name, views, gathers and shape (data), or
    its kind and shape (built); a step's is its equation and its inputs' signatures, so equal
    signatures mean equal values laid out alike.
    """
    signatures: list[object] = []
    for n, position in enumerate(order):
        entry = net.entries[position]
        applied = tuple((g.axis, g.window) for g in gathers if g.slot == n)
        applied += tuple((f.o_axis, f.window) for s, f in scatters if s == n)
        shape = tuple(sizes[leg] for leg in legs[n])
        if entry.structured:
            signatures.append(("built", entry.kind, shape))
        else:
            signatures.append(("data", entry.name, entry.kind.views, applied, shape))  # type: ignore[attr-defined]
    seen: dict[object, int] = {}
    same = []
    steps = []
    for number, step in enumerate(plan.steps):
        inputs = tuple(signatures[p] for p in step.positions)
        signature = (step.equation, inputs)
        same.append(seen.setdefault(signature, number) if signature in seen else -1)
        seen.setdefault(signature, number)
        signatures = [t for p, t in enumerate(signatures) if p not in step.positions] + [signature]
        if len(inputs) == 2 and inputs[0] == inputs[1]:
            step = replace(step, torch_calls=as_gram(step.torch_calls))
        steps.append(step)
    return (tuple(same) if any(n >= 0 for n in same) else ()), replace(plan, steps=tuple(steps))


def _classify(net: Network) -> tuple[list[tuple[int, int]], list[int], list[tuple[int, int]]]:
    """Which patterns gather into which tensor (in application order), which fold at the end, and
    which scatter into which tensor before the contraction; the rest are dense.

    Gathers are found repeatedly, following each host's legs as gathers change them, so
    that a pattern whose input leg is another pattern's output (a chain) gathers too.
    A pattern that neither gathers nor folds scatters its host's ``o`` onto ``(k, i)``
    when ``o`` joins only that host (a transposed conv's im2col met by another pattern).
    """
    entries = net.entries
    hosts = {p: list(e.legs) for p, e in enumerate(entries) if not isinstance(e.kind, IndexPattern)}
    patterns = [p for p, e in enumerate(entries) if isinstance(e.kind, IndexPattern)]
    pending = [p for p in patterns if len(set(entries[p].legs)) == 3 and min(net.size(l) for l in entries[p].legs) >= 1]
    stuck = [p for p in patterns if p not in pending]
    gathers: list[tuple[int, int]] = []

    def on_other_patterns(leg: str, position: int) -> bool:
        return any(leg in entries[q].legs for q in pending + stuck if q != position)

    changed = True
    while changed:
        changed = False
        for p in list(pending):
            k, o, i = entries[p].legs
            on = [q for q, legs in hosts.items() if i in legs]
            if i in net.output or len(on) != 1 or on_other_patterns(i, p):
                continue
            host = hosts[on[0]]
            if host.count(i) != 1 or k in host or o in host:
                continue
            host[host.index(i)] = o
            host.append(k)
            gathers.append((p, on[0]))
            pending.remove(p)
            changed = True
    folds = []
    for p in pending:
        k, o, i = entries[p].legs
        if any(on_other_patterns(leg, p) for leg in (k, o, i)) or i not in net.output or o in net.output:
            continue
        if any(i in legs for legs in hosts.values()) or not any(o in legs for legs in hosts.values()):
            continue
        folds.append(p)
    scatters: list[tuple[int, int]] = []
    changed = True
    while changed:
        changed = False
        for p in [q for q in pending if q not in folds]:
            k, o, i = entries[p].legs
            on = [q for q, legs in hosts.items() if o in legs]
            if o in net.output or len(on) != 1 or on_other_patterns(o, p) or on_other_patterns(k, p):
                continue
            host = hosts[on[0]]
            if host.count(o) != 1 or k in host or i in host:
                continue
            host.remove(o)
            host.extend((k, i))
            scatters.append((p, on[0]))
            pending.remove(p)
            changed = True
    return gathers, folds, scatters


def _rest_output(net: Network, folds: list[int], legs: list[list[str]]) -> tuple[str, ...]:
    """The legs the pairwise contraction keeps: the output with each fold's ``i`` replaced by its ``(k, o)``."""
    present = {leg for term in legs for leg in term}
    replaced = {net.entries[p].legs[2]: net.entries[p].legs for p in folds}
    result: list[str] = []
    for leg in net.output:
        if leg in replaced:
            k, o, _ = replaced[leg]
            result.extend(l for l in (k, o) if l in present and l not in result)
        elif leg in present and leg not in result:
            result.append(leg)
    return tuple(result)


def _all_inside(window: Window) -> bool:
    return window.pad_left <= 0 and (
        window.stride * (window.output_size - 1) + window.span - window.pad_left <= window.input_size
    )


def _size(legs: Sequence[str], sizes: dict[str, int]) -> int:
    size = 1
    for leg in legs:
        size *= sizes[leg]
    return size
