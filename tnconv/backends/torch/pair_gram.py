"""The torch realisation of a pattern-pair Gram plan (``tnconv.lower.pair_gram``): weight-VJP calls per
segment product, then per spatial dim the sum over segments (0/1 membership) and a gather of the shifts."""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

from tnconv.backends.torch.kernels import arrangement, restoration
from tnconv.backends.torch.views import signed_pad
from tnconv.lower.pair_gram import PairGram

Operands = Sequence[torch.Tensor]


def pair_gram(plan: PairGram) -> Callable[[Operands], torch.Tensor]:
    """The callable of ``plan`` on the operands (memberships and shift indices made once on the CPU)."""
    a_of, b_of, out = arrangement(plan.a), arrangement(plan.b), restoration(plan.out)
    dims, groups = plan.dims, plan.groups
    n = len(dims)
    pad_a = tuple(amount for d in reversed(dims) for amount in d.pad)
    pad_b = tuple(amount + d.halo for d in reversed(dims) for amount in d.pad)
    dilation = tuple(d.dilation for d in dims)
    shifts = tuple(2 * d.kernel - 1 for d in dims)
    products = tuple(itertools.product(*(d.segments for d in dims)))
    members = tuple(torch.tensor(d.membership(size), dtype=torch.float64) for d, size in zip(dims, plan.output))
    shift_of = tuple(
        torch.tensor([[k2 - k + d.kernel - 1 for k2 in range(d.kernel)] for k in range(d.kernel)]) for d in dims
    )  # [k, k'] -> e
    zeros, ones = (0,) * n, (1,) * n

    def run(operands: Operands) -> torch.Tensor:
        a = signed_pad(a_of(operands), pad_a)
        b = signed_pad(b_of(operands), pad_b)
        shape = (a.shape[1], b.shape[1] // groups, *shifts)
        blank = a.new_empty(1).expand(shape)
        results = []
        for segments in products:
            a_part, b_part = a, b
            for axis, ((start, stop), d) in enumerate(zip(segments, dims), start=2):
                a_part = a_part.narrow(axis, start, stop - start)
                b_part = b_part.narrow(axis, start, stop - start + 2 * d.halo)
            results.append(torch.ops.aten.convolution_backward(
                a_part, b_part, blank, None, ones, zeros, dilation, False, zeros, groups, (False, True, False),
            )[1])
        stacked = torch.stack(results).reshape(*(len(d.segments) for d in dims), *shape)
        # axes: s_1..s_n, c, c', e_1..e_n; turn (s_d, e_d) into (k_d, k'_d) dim by dim
        result = stacked.movedim(tuple(range(n)), tuple(range(2, 2 + n)))  # c, c', s.., e..
        for axis in range(n):
            member = members[axis].to(dtype=result.dtype, device=result.device)
            # left: c, c', s_axis.., e_axis.., then (k, k') of the dims done; e_axis is at 2 + n - axis - 1 after
            # the sum over s_axis (at 2), which appends k
            summed = torch.tensordot(result, member, dims=([2], [1])).movedim(1 + n - axis, -2)  # .., e, k
            picked = summed[..., shift_of[axis].to(result.device), :]  # .., k, k', k (the last: the sum's k)
            result = torch.diagonal(picked, dim1=-3, dim2=-1).movedim(-1, -2)  # .., k, k'
        # now: c, c', k_1, k'_1, ..., k_n, k'_n
        order = (0, 1, *(2 + 2 * d for d in range(n)), *(3 + 2 * d for d in range(n)))
        return out(result.permute(order))

    return run
