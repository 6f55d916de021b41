"""KFAC's output factor ``B`` from columns at a conv layer's output, on both of its evaluation paths.

``output_factor`` multiplies ``(c, T)`` slices chunk by chunk when there are at least as many
locations ``T`` as channels per group ``c``, and copies the columns once for one batched
product when there are fewer; both must give ``sum_{m,n,t} v v^T`` per group (or with
``sum_t v`` for KFAC-reduce).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnconv.curvature.factors import Geometry, output_factor


@settings(max_examples=40, deadline=None)
@given(
    columns=st.integers(1, 3), batch=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 9),
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3), reduce=st.booleans(),
)
def test_output_factor_is_the_per_group_gram_of_the_columns(columns, batch, groups, per_group, spatial, reduce):
    generator = torch.Generator().manual_seed(columns * 1000 + batch * 100 + groups * 10 + per_group)
    shape = (columns, batch, groups * per_group, *spatial)
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    layer = Geometry("conv", groups, groups * per_group)
    flat = v.reshape(columns * batch, groups, per_group, -1)
    if reduce:
        flat = flat.sum(-1, keepdim=True)
    expected = torch.einsum("bgct,bgdt->gcd", flat, flat)
    torch.testing.assert_close(output_factor(v, layer, reduce), expected, rtol=1e-12, atol=1e-12)


def test_few_and_many_locations_per_channel_give_the_definition():
    """Fewer locations than channels (a deep layer: one batched product) and more (chunked products)."""
    layer = Geometry("conv", 1, 16)
    for spatial in ((2, 2), (8, 8)):  # T = 4 < c = 16, then T = 64 >= c
        v = torch.randn(2, 3, 16, *spatial, dtype=torch.float64)
        flat = v.reshape(6, 1, 16, -1)
        torch.testing.assert_close(output_factor(v, layer, False), torch.einsum("bgct,bgdt->gcd", flat, flat))
