"""Symmetric Gram products (``tnconv.routines.gram``): values, exact symmetry, in-place scaling, FLOPs, errors.

The panel size and the thresholds between the paths are shrunk (``small_panels``) so that
small shapes run every path: several panels, one symmetrized panel, per-sample products, the
one layout copy, and the dense product of shallow matrices.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.flops import counted_products

from tnconv.conv.hyper import conv_hyper
from tnconv.routines import TABLE
from tnconv.routines import gram as gram_module
from tnconv.routines.gram import accumulate_gram, gram
from tnconv.routines.run import patch_rows, run_part

TOL = dict(rtol=1e-12, atol=1e-12)


@contextmanager
def small_panels(panel: int = 3, dense_below: int = 20, per_sample: int = 5) -> Iterator[None]:
    with mock.patch.multiple(gram_module, PANEL=panel, DENSE_BELOW=dense_below, PER_SAMPLE_DEPTH=per_sample,
                             SYMMETRIZE_CHUNK=20):
        yield


def reference(rows: torch.Tensor) -> torch.Tensor:
    return torch.einsum("sgat,sgbt->gab", rows.double(), rows.double())


def draw_rows(shape: tuple[int, ...], seed: int, transposed: bool) -> torch.Tensor:
    """Random ``(S, G, d, T)`` rows, laid out with T outermost when ``transposed`` (a strided view)."""
    generator = torch.Generator().manual_seed(seed)
    if not transposed:
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    return torch.randn(shape[3], *shape[:3], generator=generator, dtype=torch.float64).permute(1, 2, 3, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 12), st.integers(1, 9), st.booleans(),
    st.sampled_from([(1.0, 0.0), (0.25, 0.0), (0.3, 0.7), (1.0, 1.0)]), st.integers(0, 2**16),
)
def test_accumulated_gram_equals_the_dense_formula_and_is_exactly_symmetric(
    samples, groups, d, depth, transposed, scales, seed
):
    alpha, beta = scales
    rows = draw_rows((samples, groups, d, depth), seed, transposed)
    start = draw_rows((1, groups, d, d), seed + 1, False)[0]
    start = start + start.mT
    out = start.clone() if beta else torch.full_like(start, float("nan"))  # out is not read with beta = 0
    with small_panels():
        result = accumulate_gram(rows, out, alpha, beta)
        dense = d >= 6 and gram_module.dense(d, gram_module.products(samples, depth)[1])
    assert result is out
    torch.testing.assert_close(out, beta * start + alpha * reference(rows), **TOL)
    if dense:  # one dense product: symmetric to rounding
        torch.testing.assert_close(out, out.mT, **TOL)
    else:
        assert torch.equal(out, out.mT)


@pytest.mark.parametrize("panel", [3, 8])
def test_a_view_of_a_larger_factor_is_written_in_place_and_nothing_else(panel):
    """KFAC's A with the bias folded in: the Gram goes into the leading (G, d, d) block of (G, d + 1, d + 1), by
    panels (d = 7 >= 2 * 3) and as one symmetrized product (d = 7 < 2 * 8)."""
    rows = draw_rows((2, 2, 7, 3), 0, False)
    joined = torch.full((2, 8, 8), 5.0, dtype=torch.float64)
    with small_panels(panel):
        accumulate_gram(rows, joined[:, :7, :7], 2.0, 0.0)
    torch.testing.assert_close(joined[:, :7, :7], 2.0 * reference(rows), **TOL)
    assert (joined[:, 7] == 5).all() and (joined[:, :, 7] == 5).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rows_accumulate_into_float32(dtype):
    """Sums of 4,000 products of ~64 overflow float16; in float32 they are the exact sum rounded once per add."""
    rows = (8 + torch.randn(2, 1, 5, 2000, generator=torch.Generator().manual_seed(0))).to(dtype)
    result = gram(rows, 0.5)
    assert result.dtype == torch.float32 and result.isfinite().all()
    torch.testing.assert_close(result.double(), 0.5 * reference(rows), rtol=1e-5, atol=0)
    with pytest.raises(TypeError, match="dtype"):
        accumulate_gram(rows, torch.zeros(1, 5, 5, dtype=torch.float64))


def test_a_new_gram_takes_the_rows_dtype():
    rows = draw_rows((1, 2, 4, 3), 1, True).float()
    result = gram(rows)
    assert result.dtype == torch.float32 and result.shape == (2, 4, 4)
    torch.testing.assert_close(result.double(), reference(rows), rtol=1e-6, atol=1e-6)


def multiply_adds(rows: torch.Tensor) -> int:
    """The multiply-adds of the products ``gram(rows)`` runs (counted where they run: ``support.flops``)."""
    with counted_products() as products:
        result = gram(rows)
    torch.testing.assert_close(result.double(), reference(rows), rtol=1e-5, atol=1e-5)
    return products.multiply_adds


def test_panels_halve_the_products():
    """d = 12 in panels of 3 (4 panels): 4 + 3 + 2 + 1 = 10 of 16 blocks, 5/8 of the dense product's multiply-adds;
    one layout copy where the per-sample products would be thin; the dense product for shallow Grams."""
    with small_panels():
        deep = torch.randn(1, 1, 12, 10)
        assert multiply_adds(deep) == 10 * 3 * 3 * 10  # (p + 1) / (2p) of 12 * 12 * 10
        per_sample = torch.randn(4, 1, 12, 6)  # T >= PER_SAMPLE_DEPTH: one product per sample
        assert multiply_adds(per_sample) == 4 * 10 * 3 * 3 * 6
        shallow = torch.randn(1, 1, 12, 1)  # d * T < DENSE_BELOW: one dense product
        assert multiply_adds(shallow) == 12 * 12 * 1
        under_two_panels = torch.randn(1, 1, 5, 10)  # d < 2 * PANEL: one product, however deep
        assert multiply_adds(under_two_panels) == 5 * 5 * 10
    panel = gram_module.PANEL  # the real thresholds: two panels from DENSE_BELOW on, one dense product below
    deep_enough = gram_module.DENSE_BELOW // (2 * panel) + 1
    assert multiply_adds(torch.randn(1, 2, 2 * panel, deep_enough, dtype=torch.float64)) == 2 * 3 * panel**2 * deep_enough
    assert multiply_adds(torch.randn(1, 2, 2 * panel, 8)) == 2 * (2 * panel) ** 2 * 8


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 14), st.integers(1, 9))
def test_flops_are_those_of_the_products_that_run(samples, groups, d, depth):
    """``gram.flops`` and ``gram.strategy`` against the products ``accumulate_gram`` runs, on every path (several
    panels, per-sample products, the layout copy, the dense product of large shallow Grams)."""
    rows = torch.randn(samples, groups, d, depth, dtype=torch.float64)
    with small_panels():
        assert gram_module.flops((samples, groups, d, depth)) == 2 * multiply_adds(rows)
        words = gram_module.strategy((samples, groups, d, depth))
        deep = depth if samples > 1 and depth >= 5 else samples * depth  # PER_SAMPLE_DEPTH 5
        panels = -(-d // 3)  # PANEL 3
        if d < 6:  # fewer than two full panels of 3
            assert words == "gram symmetrized"
        else:
            assert words == ("gram dense" if d * deep < 20 else f"gram by {panels} panels")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 3\)"):
        accumulate_gram(torch.zeros(1, 2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"out must have contiguous rows \(last stride 1\), got strides \(9, 1, 3\)"):
        accumulate_gram(torch.zeros(1, 2, 3, 4), torch.zeros(2, 3, 3).mT)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 2]), st.integers(1, 3), st.integers(2, 3), st.integers(2, 3),
       st.integers(0, 2**16))
def test_patch_rows_of_strided_patches_lay_samples_next_to_locations(batch, groups, per_group, dims, stride, seed):
    """A strided 1x1 layer's patches in 2+ dims are a strided view of ``x`` (not viewable as ``(N, G, d, T)``):
    one copy puts them in the ``(G, d, N, T)`` layout, whose ``(N, G, d, T)`` view holds the same rows, and the Gram's one deep
    product reads it without a second copy."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, groups * per_group, *(5,) * dims, generator=generator, dtype=torch.float64)
    hyper = conv_hyper(tuple(x.shape), 1, stride=stride, groups=groups)
    patches = run_part(TABLE["kfac_expand"], hyper, {"X": x})
    rows = patch_rows(patches, hyper)
    expected = x[(..., *(slice(None, None, stride),) * dims)].reshape(batch, groups, per_group, -1)
    assert torch.equal(rows, expected)
    if batch > 1:
        assert rows.stride(0) == expected.shape[-1] and rows.stride(-1) == 1  # samples next to locations
    torch.testing.assert_close(gram(rows), reference(rows), **TOL)
