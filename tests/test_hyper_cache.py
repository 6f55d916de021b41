"""``cached_conv_hyper``: the layer of ``conv_hyper``, validated once per typed spelling of the arguments."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from tnconv.conv import hyper_cache
from tnconv.conv.hyper import conv_hyper
from tnconv.conv.hyper_cache import cached_conv_hyper, typed
from tnconv.curvature import kfac_reduce_factor


def test_the_cached_layer_is_conv_hyper_s_and_validated_once() -> None:
    hyper_cache._validated.cache_clear()
    arguments = dict(kernel_size=(3, 2), stride=2, padding=((1, 0), 1), groups=2, out_channels=4)
    spy = mock.Mock(wraps=conv_hyper)
    with mock.patch.object(hyper_cache, "conv_hyper", spy):
        first = cached_conv_hyper((3, 4, 7, 6), arguments)
        second = cached_conv_hyper((3, 4, 7, 6), dict(arguments))
        assert spy.call_count == 1
        cached_conv_hyper((2, 4, 7, 6), arguments)  # another batch size: another layer
        assert spy.call_count == 2
        cached_conv_hyper((3, 4, 7, 6), {**arguments, "kernel_size": [3, 2]})  # a list is no key: validated afresh
        cached_conv_hyper((3, 4, 7, 6), {**arguments, "kernel_size": [3, 2]})
        assert spy.call_count == 4
    assert first is second and first == conv_hyper((3, 4, 7, 6), **arguments)


def test_true_is_not_served_the_layer_of_one_and_errors_are_not_cached() -> None:
    good = cached_conv_hyper((1, 2, 5, 5), dict(kernel_size=3, stride=1))
    assert good.stride == (1, 1)
    for _ in range(2):
        with pytest.raises(TypeError, match="stride"):
            cached_conv_hyper((1, 2, 5, 5), dict(kernel_size=3, stride=True))
        with pytest.raises(ValueError, match="padding"):
            cached_conv_hyper((1, 2, 5, 5), dict(kernel_size=3, padding=-1))


def test_typed_keys() -> None:
    assert typed((1, "a", None, (True,))) == ((int, 1), (str, "a"), (type(None), None), ((bool, True),))
    assert typed((1, [2])) is None and typed(1.0) is None
    assert typed(True) != typed(1)


def test_curvature_routines_validate_every_spelling() -> None:
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    expected = kfac_reduce_factor(x, 3, padding=1)
    torch.testing.assert_close(kfac_reduce_factor(x, (3, 3), padding=(1, 1)), expected)
    for _ in range(2):
        with pytest.raises(TypeError, match="stride"):
            kfac_reduce_factor(x, 3, stride=True)
