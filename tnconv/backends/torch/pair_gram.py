"""The torch realisation of a pattern-pair Gram plan (``tnconv.lower.pair_gram``): one weight-VJP call per
segment product, its shifts added into the Gram for each tap tuple whose windows hold the segments."""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

from tnconv.backends.torch.kernels import arrangement, restoration
from tnconv.backends.torch.views import signed_pad
from tnconv.lower.pair_gram import PairGram

Operands = Sequence[torch.Tensor]


def pair_gram(plan: PairGram) -> Callable[[Operands], torch.Tensor]:
    """The callable of ``plan`` on the operands (every slice fixed here, once)."""
    a_of, b_of, out = arrangement(plan.a), arrangement(plan.b), restoration(plan.out)
    dims, groups = plan.dims, plan.groups
    n = len(dims)
    pad_a = tuple(amount for d in reversed(dims) for amount in d.pad)
    pad_b = tuple(amount + d.halo for d in reversed(dims) for amount in d.pad)
    dilation = tuple(d.dilation for d in dims)
    shifts = tuple(2 * d.kernel - 1 for d in dims)
    taps = tuple(d.kernel for d in dims)
    # per segment product: its (start, length) per dim, and per tap tuple holding it (target, source) indices
    calls = []
    for numbers in itertools.product(*(range(len(d.segments)) for d in dims)):
        segments = tuple(d.segments[s] for d, s in zip(dims, numbers))
        held = itertools.product(*(d.holders()[s] for d, s in zip(dims, numbers)))
        adds = tuple((ks, tuple(slice(d.kernel - 1 - k, 2 * d.kernel - 1 - k) for d, k in zip(dims, ks))) for ks in held)
        calls.append((segments, adds))
    zeros, ones = (0,) * n, (1,) * n

    def run(operands: Operands) -> torch.Tensor:
        a = signed_pad(a_of(operands), pad_a)
        b = signed_pad(b_of(operands), pad_b)
        shape = (a.shape[1], b.shape[1] // groups)
        blank = a.new_empty(1).expand(*shape, *shifts)
        gram = a.new_zeros(*taps, *taps, *shape)  # k.., k'.., c, c': each add runs over whole (c, c') blocks
        for segments, adds in calls:
            a_part, b_part = a, b
            for axis, ((start, stop), d) in enumerate(zip(segments, dims), start=2):
                a_part = a_part.narrow(axis, start, stop - start)
                b_part = b_part.narrow(axis, start, stop - start + 2 * d.halo)
            shifted = torch.ops.aten.convolution_backward(
                a_part, b_part, blank, None, ones, zeros, dilation, False, zeros, groups, (False, True, False),
            )[1].movedim((0, 1), (-2, -1)).contiguous()  # e.., c, c'
            for target, source in adds:
                gram[target] += shifted[source]
        return out(gram.movedim((-2, -1), (0, 1)))

    return run
