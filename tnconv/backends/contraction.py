"""An einsum plan's working tensors and pairwise steps, run the same way on any backend's arrays.

An ``Einsum`` plan (``tnconv.lower.nodes``) lists its working tensors (data
tensors read through their views, and constants), how each is prepared (taps
gathers, scatters, window sums) and its pairwise steps along the path, each a
pair of positions in the shrinking list of working tensors. ``contraction``
walks that list with a backend's own calls for a preparation and a step, and
leaves the one tensor the steps make; the backend then applies the plan's
folds and final permutation (``tnconv.backends.torch.einsum``,
``tnconv.backends.numpy.einsum``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from tnconv.lower.nodes import Einsum, Preparation
from tnconv.lower.path import Step

A = TypeVar("A")
Prepare = Callable[[A, Sequence[Any]], A]  # (working tensor, constants) -> prepared tensor


def contraction(
    plan: Einsum, prepare: Callable[[Preparation], Prepare[A]], step: Callable[[Step], Callable[..., A]]
) -> Callable[[Sequence[A], Sequence[Any]], A]:
    """``run(data, constants)``: the plan's working tensors (``data``: its data tensors, read through their views;
    ``constants``: those it builds) prepared with ``prepare``'s calls and contracted with ``step``'s, made once
    here; the result before the folds."""
    sources = plan.sources
    preparations = [(p.slot, p.alias, prepare(p)) for p in plan.preparations]
    steps = [(s.positions, step(s)) for s in plan.contraction.steps]
    same = plan.same

    def run(data: Sequence[A], constants: Sequence[Any]) -> A:
        working = [data[n] if is_data else constants[n] for is_data, n in sources]
        for slot, alias, prepared in preparations:
            working[slot] = working[alias] if alias >= 0 else prepared(working[slot], constants)
        results: list[A] = []
        for number, (positions, call) in enumerate(steps):
            inputs = [working[p] for p in positions]
            working = [t for p, t in enumerate(working) if p not in positions]
            earlier = same[number] if same else -1
            results.append(call(*inputs) if earlier < 0 else results[earlier])
            working.append(results[-1])
        return working[0]

    return run
