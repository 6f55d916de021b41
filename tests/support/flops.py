"""Counting the products that ``tnconv.routines.gram`` runs, where they run.

The Gram's in-place ``addmm_``/``baddbmm_`` escape torch's FLOP counter, so
``counted_products`` wraps ``gram._product`` (every product of ``accumulate_gram``):
an independent count of what ran, against which the FLOP figures are checked.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator
from unittest import mock

from tnconv.routines import gram as gram_module


class Products:
    """The multiply-adds of the products run so far (``(G, a, T) x (G, b, T)^T``: ``G*a*b*T`` each)."""

    def __init__(self) -> None:
        self.multiply_adds = 0
        self.counting = True  # off: products run uncounted

    @property
    def flops(self) -> int:
        return 2 * self.multiply_adds


@contextmanager
def counted_products() -> Iterator[Products]:
    """Count every product ``tnconv.routines.gram`` runs inside the block (while ``counting``)."""
    products = Products()
    product = gram_module._product

    def counted(out, left, right, alpha, beta):  # noqa: ANN001, ANN202 - gram._product's signature
        if products.counting:
            products.multiply_adds += left.shape[0] * left.shape[1] * right.shape[1] * left.shape[2]
        product(out, left, right, alpha, beta)

    with mock.patch.object(gram_module, "_product", counted):
        yield products
