"""The torch realisation of a pattern-pair Gram plan (``tnconv.lower.pair_gram``): both operands padded in the
patterns' modes, then one strided weight-VJP call per product of the dims' parts (segments of stride phases), its
shifts added into the Gram for each tuple of taps holding the segments."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from tnconv.backends.torch.kernels import arrangement, restoration
from tnconv.backends.torch.views import pad_index, signed_pad
from tnconv.limits import check_allocation
from tnconv.lower.pair_gram import PairDim, PairGram
from tnconv.lower.window import Window

Operands = Sequence[torch.Tensor]
Call = Callable[[torch.Tensor], torch.Tensor]


def pair_gram(plan: PairGram) -> Callable[[Operands], torch.Tensor]:
    """The callable of ``plan`` on the operands (every slice fixed here, once)."""
    a_of, b_of, out = arrangement(plan.a), arrangement(plan.b), restoration(plan.out)
    dims, groups = plan.dims, plan.groups
    pad = _padding(dims)
    stride = tuple(d.window.stride for d in dims)
    dilation = tuple(d.window.dilation for d in dims)
    taps = tuple(d.window.kernel_size for d in dims)
    everything = (slice(None), slice(None))
    # per product of parts: the pixels of A and B it reads, its shifts, and per tap tuple holding it
    # (target taps, source shifts)
    calls = []
    for parts in itertools.product(*(d.parts for d in dims)):
        windows = tuple(d.window for d in dims)
        a_index = everything + tuple(part.a_pixels(w.stride) for part, w in zip(parts, windows))
        b_index = everything + tuple(part.b_pixels(w) for part, w in zip(parts, windows))
        shifts = tuple(part.shifts(w.kernel_size) for part, w in zip(parts, windows))
        held = itertools.product(*(part.holders for part in parts))
        adds = tuple(
            (ks, tuple(part.source(k, w.kernel_size) for part, k, w in zip(parts, ks, windows))) for ks in held
        )
        calls.append((a_index, b_index, shifts, adds))
    zeros = (0,) * len(dims)

    def run(operands: Operands) -> torch.Tensor:
        check_allocation(plan.largest_intermediate, operands[0].dtype.itemsize,
                         lambda: "the largest tensor of a pattern-pair Gram (a padded operand, a call's result or the "
                         f"Gram) on operands of shapes {[tuple(operand.shape) for operand in operands]}")
        a, b = pad(a_of(operands)), pad(b_of(operands))
        shape = (a.shape[1], b.shape[1] // groups)
        blank = a.new_empty(1)
        gram = a.new_zeros(*taps, *taps, *shape)  # k.., k'.., c, c': each add runs over whole (c, c') blocks
        for a_index, b_index, shifts, adds in calls:
            shifted = torch.ops.aten.convolution_backward(
                a[a_index], b[b_index], blank.expand(*shape, *shifts), None, stride, zeros, dilation, False, zeros,
                groups, (False, True, False),
            )[1].movedim((0, 1), (-2, -1)).contiguous()  # e.., c, c'
            for target, source in adds:
                gram[target] += shifted[source]
        return out(gram.movedim((-2, -1), (0, 1)))

    return run


def _padding(dims: tuple[PairDim, ...]) -> Call:
    """``x (batch, C, *I)`` padded by each dim's ``(P_left, P_right)`` in its mode (negative amounts crop): zeros
    by ``F.pad``, the other modes through their fold's index map (``pad_index``, built once per device)."""
    folded = [(axis, d.window) for axis, d in enumerate(dims, start=2) if _folds(d.window)]
    amounts = tuple(
        amount for d in reversed(dims) for amount in ((0, 0) if _folds(d.window) else (d.window.pad_left, d.window.pad_right))
    )
    maps: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}

    def pad(x: torch.Tensor) -> torch.Tensor:
        if folded:
            found = maps.get(x.device)
            if found is None:
                found = maps[x.device] = [(axis, pad_index(window, x.device)) for axis, window in folded]
            for axis, index in found:
                x = x.index_select(axis, index)
        return signed_pad(x, amounts)

    return pad


def _folds(window: Window) -> bool:
    """Whether the dim pads in a mode other than zeros (a fold of the input's pixels)."""
    return window.mode != "zeros" and (window.pad_left > 0 or window.pad_right > 0)
