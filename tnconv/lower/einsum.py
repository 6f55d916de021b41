"""The einsum stage: a concrete network -> an ``Einsum`` plan (``tnconv.lower.nodes``).

A dense index pattern ``Pi[k, o, i]`` multiplies a convolution's cost by about
the input size. Each pattern is classified by how it meets the rest of the
network (``tnconv.lower.classify``) and run without ever being built:

- *gather*: its input leg ``i`` joins exactly one other tensor ``T`` (and not
  the output). ``T`` contracted with ``Pi`` is ``T`` read as the taps of
  ``Pi``: ``i`` replaced by ``(o, k)``, exactly what a ``Taps`` view does (the
  backend realises both alike: strided views of ``T``, padded where padding is
  read), with ``k`` last. The contraction is planned over the gathered tensor,
  so the path sees the cost model "``X`` with ``Pi`` = ``X``'s legs with
  ``i -> (o, k)``".
- *fold*: ``i`` is an output leg on no other tensor and ``o`` joins other
  tensors: the rest is contracted keeping ``(k, o)``, then a scatter-add
  sends each ``(k, o)`` to its pixel ``i``.
- *scatter*: otherwise, when ``o`` joins exactly one other tensor ``T`` (and
  not the output), ``T``'s ``o`` is scattered onto ``(k, i)`` before the
  contraction (the im2col of a transposed convolution, when its ``i`` meets
  another pattern as in KFAC of a transposed layer).
- anything else is built densely (a ``DenseTensor`` constant), and
  ``Einsum.dense`` names it.

A ``PatternSum`` whose ``i`` joins exactly one data tensor (and not the output)
runs as a *window sum* (``tnconv.lower.window_sum``). Each working tensor's
preparation (gathers, scatters, window sums) is fixed and costed; the rest is
planned as pairwise steps (``tnconv.lower.path``) over the prepared tensors;
folds run on the result. Index maps and window-sum weights are computed here,
in pure Python, and described as constants for the backend to build.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from tnconv.ir.names import fresh_name
from tnconv.ir.network import Network
from tnconv.ir.tensors import IndexPattern, PatternSum
from tnconv.lower.classify import classify
from tnconv.lower.cost import CostTerms, Term
from tnconv.lower.nodes import Constant, DenseTensor, Einsum, Fold, Gather, IndexMap, Preparation, Read, Weights
from tnconv.lower.optimize import Optimize
from tnconv.lower.path import Contraction, contraction
from tnconv.lower.steps import as_gram
from tnconv.lower.window import Window
from tnconv.lower.window_sum import split_columns

SPLIT_SUMS_ABOVE = 1 << 18
"""Elements of a first window sum's result above which its pieces are not joined (``apply_window_sums``):
joining copies them once (measured ~0.9 ms for 1.6 M elements in float32 on this machine's CPU, page
faults included), while not joining costs a few torch calls (~5 us each) per piece and later window sum."""


def plan_einsum(net: Network, optimize: Optimize, share: bool = True) -> Einsum:
    """The einsum plan of a concrete network; with an explicit path every structured tensor is built densely.

    ``share``: a working tensor that is an earlier one's operand prepared alike is that
    tensor (prepared once), and a step that computes what an earlier one did (the same
    equation on the same operands - the two halves of a Gram matrix ``X X^T``) reuses its
    result. Only valid when equal operands get equal tensors, so slicing (which narrows
    each occurrence of an operand on its own legs) turns it off.
    """
    entries = net.entries
    sizes = {leg: int(size) for leg, size in net.sizes.items()}
    classes = classify(net) if not optimize.explicit else None
    gathered, folds, scattered, summed = classes if classes is not None else ([], [], [], [])
    splits = {}
    for position, host in sorted(summed, key=lambda pair: _on_last_axis(net, *pair)):
        kind = entries[position].kind
        assert isinstance(kind, PatternSum)  # classify's window sums
        split = split_columns(kind.counts(), int(kind.pattern.stride))
        if split is not None:
            splits[position] = (host, split)
    consumed = {p for p, _ in gathered} | set(folds) | {p for p, _ in scattered}
    data = tuple(p for p, e in enumerate(entries) if not e.structured)
    built_positions = tuple(p for p, e in enumerate(entries) if e.structured and p not in consumed)
    built = tuple((p, entries[p].kind, tuple(sizes[l] for l in entries[p].legs)) for p in built_positions)
    order = sorted(data + built_positions)
    slot = {position: n for n, position in enumerate(order)}
    sources = tuple((p in data, data.index(p) if p in data else built_positions.index(p)) for p in order)
    legs = [list(entries[p].legs) for p in order]
    constants: list[Constant] = [
        Weights(splits[p][1].weights) if p in splits else DenseTensor(kind, shape) for p, kind, shape in built
    ]
    operations: list[dict[str, list[Any]]] = [{"gathers": [], "scatters": [], "sums": []} for _ in order]
    applied: list[list[object]] = [[] for _ in order]
    first_sums: dict[int, int] = {}  # slot -> elements of its first window sum's result
    cost, largest = 0, 0
    flop_terms: list[Term] = []  # the same costs over leg names (``tnconv.lower.cost``)
    size_terms: list[Term] = []
    plan_sizes: list[tuple[str, int]] = []
    for position, host in gathered:
        k, o, i = entries[position].legs
        window = Window.of(entries[position].kind)  # type: ignore[arg-type]
        index = -1
        if window.mode != "zeros":
            constants.append(IndexMap(pad_index(window)))
            index = len(constants) - 1
        host_legs = legs[slot[host]]
        axis = host_legs.index(i)
        operations[slot[host]]["gathers"].append(Gather(axis, window, index))
        applied[slot[host]].append(("gather", axis, window))
        host_legs[axis] = o
        host_legs.append(k)
        size = _size(host_legs, sizes)
        cost, largest = cost + size, max(largest, size)
        flop_terms.append((1, tuple(host_legs)))
        size_terms.append((1, tuple(host_legs)))
    for position, host in scattered:
        k, o, i = entries[position].legs
        window = Window.of(entries[position].kind)  # type: ignore[arg-type]
        target, selection = _fold_constants(constants, window, keep_k=True)
        host_legs = legs[slot[host]]
        source = _size(host_legs, sizes) * window.kernel_size
        flop_terms.append((1, (*host_legs, k)))
        size_terms.append((1, (*host_legs, k)))
        operations[slot[host]]["scatters"].append(Fold(host_legs.index(o), -1, True, window, target, selection))
        applied[slot[host]].append(("scatter", host_legs.index(o), window))
        host_legs.remove(o)
        host_legs.extend((k, i))
        cost, largest = cost + source, max(largest, source, _size(host_legs, sizes))
        size_terms.append((1, tuple(host_legs)))
    for position, (host, split) in splits.items():
        k, i = entries[position].legs
        kept = fresh_name(f"{i}:kept", sizes)  # the kept rows of the window sum over i
        sizes[kept] = split.kept
        plan_sizes.append((kept, split.kept))
        legs[slot[position]] = [k, kept]
        host_legs = legs[slot[host]]
        axis = host_legs.index(i)
        operations[slot[host]]["sums"].append(split.selection(axis))
        applied[slot[host]].append(("sum", axis, entries[position].kind))
        read = _size(host_legs, sizes)
        flop_terms.append((1, tuple(host_legs)))
        host_legs.pop(axis)
        host_legs.insert(0, kept)
        cost, largest = cost + read, max(largest, _size(host_legs, sizes))
        size_terms.append((1, tuple(host_legs)))
        if len(operations[slot[host]]["sums"]) == 1:
            first_sums[slot[host]] = _size(host_legs, sizes)
    signatures = _signatures(net, order, applied, legs, sizes)
    preparations = []
    for n, done in enumerate(operations):
        alias = signatures.index(signatures[n]) if share and not net.entries[order[n]].structured else n
        if any(done.values()) or alias != n:
            split_first = first_sums.get(n, 0) > SPLIT_SUMS_ABOVE
            preparations.append(Preparation(
                n, tuple(done["gathers"]), tuple(done["scatters"]), tuple(done["sums"]), alias if alias != n else -1,
                split_first,
            ))
    rest_output = _rest_output(net, folds, legs)
    path = contraction([tuple(l) for l in legs], rest_output, sizes, optimize)
    same, path = _shared_steps(signatures, path) if share else ((), path)
    cost, largest = cost + path.flops, max(largest, path.largest_intermediate)
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
        source_legs = (*current, *(() if k in current else (k,)))
        flop_terms.append((1, source_legs))
        current = [leg for leg in current if leg not in (k, o)] + ([k, i] if keep_k else [i])
        cost, largest = cost + source, max(largest, source, _size(current, sizes))
        size_terms.extend(((1, source_legs), (1, tuple(current))))
    permutation = tuple(current.index(leg) for leg in net.output)
    dense = tuple(entries[p].name for p in built_positions if isinstance(entries[p].kind, IndexPattern))
    operands = {name: n for n, name in enumerate(net.operands)}
    reads = tuple(Read(operands[entries[p].name], entries[p].views) for p in data)
    return Einsum(
        reads, sources, tuple(preparations), path, tuple(fold_ops),
        None if permutation == tuple(range(len(permutation))) else permutation,
        tuple(constants), cost, largest, dense, same,
        CostTerms(tuple(flop_terms), tuple(size_terms), tuple(plan_sizes)) + path.cost,
    )


def _on_last_axis(net: Network, pattern_sum: int, host: int) -> bool:
    """Whether a pattern sum's ``i`` is its host's last leg. Those window sums go last: a strided sum
    along the last axis is several times slower than along another, and by then the other window
    sums have shrunk the tensor."""
    return net.entries[pattern_sum].legs[1] == net.entries[host].legs[-1]


def _fold_constants(constants: list[Constant], window: Window, keep_k: bool) -> tuple[int, int]:
    """Add a scatter's index maps to ``constants``: the numbers of its target and selection (-1: none)."""
    constants.append(IndexMap(fold_target(window, keep_k)))
    target = len(constants) - 1
    if window.mode == "zeros" and not _all_inside(window):
        constants.append(IndexMap(fold_selection(window)))
        return target, len(constants) - 1
    return target, -1


def pad_index(window: Window) -> tuple[int, ...]:
    """For each padded position ``j`` in ``[0, I + P_left + P_right)``, the input pixel it reads."""
    pattern = window.pattern()
    return tuple(pattern.fold(j - window.pad_left) for j in range(window.input_size + window.pad_left + window.pad_right))


def fold_target(window: Window, keep_k: bool) -> tuple[int, ...]:
    """For each ``(k, o)`` inside the input (flattened), its pixel ``i`` (``k * I + i`` when ``k`` is kept)."""
    rows = window.pattern().read_positions()
    size = window.input_size
    return tuple((k * size if keep_k else 0) + i for k, row in enumerate(rows) for i in row if i >= 0)


def fold_selection(window: Window) -> tuple[int, ...]:
    """The flattened ``(k, o)`` that read a pixel inside the input (zero padding drops the rest)."""
    rows = window.pattern().read_positions()
    return tuple(n for n, i in enumerate(i for row in rows for i in row) if i >= 0)


def _signatures(
    net: Network, order: Sequence[int], applied: Sequence[Sequence[object]], legs: Sequence[Sequence[str]],
    sizes: dict[str, int],
) -> list[object]:
    """Each working tensor's signature: its operand name, views, preparation and shape (data), or its
    kind and shape (built). Equal signatures mean equal values laid out alike."""
    signatures: list[object] = []
    for n, position in enumerate(order):
        entry = net.entries[position]
        shape = tuple(sizes[leg] for leg in legs[n])
        if entry.structured:
            signatures.append(("built", entry.kind, shape))
        else:
            signatures.append(("data", entry.name, entry.views, tuple(applied[n]), shape))
    return signatures


def _shared_steps(signatures: Sequence[object], plan: Contraction) -> tuple[tuple[int, ...], Contraction]:
    """For each step, an earlier step with the same inputs and equation (its result is reused), or -1;
    and the plan with steps whose two inputs are equal turned into Gram products (``as_gram``).

    A step's signature is its equation and its inputs' signatures (``_signatures``).
    """
    working = list(signatures)
    seen: dict[object, int] = {}
    same = []
    steps = []
    for number, step in enumerate(plan.steps):
        inputs = tuple(working[p] for p in step.positions)
        signature = (step.equation, inputs)
        same.append(seen.setdefault(signature, number) if signature in seen else -1)
        seen.setdefault(signature, number)
        working = [t for p, t in enumerate(working) if p not in step.positions] + [signature]
        if len(inputs) == 2 and inputs[0] == inputs[1]:
            step = replace(step, recipe=as_gram(step.recipe))
        steps.append(step)
    return (tuple(same) if any(n >= 0 for n in same) else ()), replace(plan, steps=tuple(steps))


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
