"""Sizes are checked as results: what cannot fit is refused by name at every entry point, before any allocation."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tnconv import curvature
from tnconv import functional as TF
from tnconv.conv.hyper import MAX_ELEMENTS

X = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
W = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

REFUSED = [
    (lambda: TF.conv(X, W, padding=10**12), ["padding=1000000000000", "padded input"]),
    (lambda: TF.conv(X, W, padding=(0, 10**12)), ["padding=(0, 1000000000000)", "padded input"]),
    (lambda: TF.conv_transpose(X, W.transpose(0, 1), stride=10**7), ["stride=10000000", "output"]),
    (lambda: TF.unfold(X, 3, padding=10**12), ["padding=1000000000000"]),
    (lambda: curvature.kfac_reduce_factor(X, 3, padding=10**12), ["padding=1000000000000", "padded input"]),
    (lambda: curvature.kfac_expand_factor(X, 3, padding=10**12), ["padding=1000000000000", "padded input"]),
    (lambda: tnconv.conv_network("forward", (1, 2, 4, 4), 3, 3, padding=10**12), ["padding=1000000000000"]),
    (lambda: TF.conv(X, W, stride=2**64), ["stride", "int64"]),
    (lambda: tnconv.index_pattern(10**6, 3), ["I=1000000", "2999994000000 elements"]),
]


@pytest.mark.parametrize("call, words", REFUSED)
def test_what_cannot_fit_is_refused_by_name(call, words):
    with pytest.raises(ValueError) as raised:
        call()
    for word in [*words, "MAX_ELEMENTS"] if "int64" not in words else words:
        assert word in str(raised.value), (word, str(raised.value))


def test_transposed_conv_refuses_same_padding_at_every_entry_point():
    for call in (
        lambda: TF.conv_transpose(X, W.transpose(0, 1), padding="same"),
        lambda: curvature.kfac_expand_factor(X, 3, padding="same", transposed=True),
        lambda: tnconv.conv_network("transpose_forward", (1, 2, 4, 4), 3, 3, padding="same"),
        lambda: tnconv.nn.ConvTranspose2d(2, 3, 3, padding="same"),
    ):
        with pytest.raises(ValueError, match=r"transposed convolution.*padding='same'|padding='same'.*transposed"):
            call()
    valid = TF.conv_transpose(X, W.transpose(0, 1), padding="valid")
    torch.testing.assert_close(valid, torch.nn.functional.conv_transpose2d(X, W.transpose(0, 1)))


def test_a_large_padding_that_fits_is_computed_without_laying_it_out():
    """KFAC-reduce with padding 10**5 on a 4x4 input: T = (2*10**5 + 2)**2 locations, never formed.

    Every tap reads every pixel once (stride 1, padding >= K - 1), so ``sum_t u`` is the
    pixel sum of each channel for every tap and ``A = s s^T / T^2``.
    """
    padding = 10**5
    assert (2 * 4 + 2 * padding) ** 2 * 2 <= MAX_ELEMENTS
    factor = curvature.kfac_reduce_factor(X, 3, padding=padding)
    locations = float((4 + 2 * padding - 2) ** 2)
    sums = X[0].sum((1, 2)).repeat_interleave(9)  # (c_in, k1, k2) flattened
    torch.testing.assert_close(factor[0], torch.outer(sums, sums) / locations**2, rtol=1e-10, atol=0)
