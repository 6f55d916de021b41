"""KFAC's output factor ``B`` from columns at a conv layer's output, on both of its evaluation paths.

``output_factor`` multiplies the ``(c, T)`` slices of each ``(m, n)`` pair where there are many
locations (``T >= tnconv.routines.gram.PER_SAMPLE_DEPTH``), and copies the columns once for one
product where there are few; both must give ``sum_{m,n,t} v v^T`` per group (or with ``sum_t v``
for KFAC-reduce), into a given factor in place too.
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


def test_few_and_many_locations_give_the_definition_in_place():
    """Few locations (one product after a copy) and many (one product per column and sample), each blended into a
    running factor: ``beta * running + alpha * B``."""
    layer = Geometry("conv", 1, 16)
    for spatial in ((2, 2), (64, 65)):  # T = 4, then T = 4160 >= PER_SAMPLE_DEPTH
        v = torch.randn(2, 2, 16, *spatial, dtype=torch.float64)
        flat = v.reshape(4, 1, 16, -1)
        expected = torch.einsum("bgct,bgdt->gcd", flat, flat)
        torch.testing.assert_close(output_factor(v, layer, False), expected)
        running = expected.clone()
        assert output_factor(v, layer, False, running, 0.5, 2.0) is running
        torch.testing.assert_close(running, 2.5 * expected)
