"""Index patterns: the dense tensor, its output size, the padding-mode variants and their errors."""

from __future__ import annotations

import pytest
import sympy
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.backends.torch.constants import dense as build
from tnconv.conv.index_pattern import pattern
from tnconv.ir.tensors import IndexPattern, PatternSum


@st.composite
def patterns_1d(draw: st.DrawFn, mode: str = "zeros") -> dict:
    """1-d hyper-parameters whose kernel fits the padded input (padding within PyTorch's limits for ``mode``)."""
    kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    left, right = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    lowest = max(1, dilation * (kernel - 1) + 1 - left - right)
    if mode == "reflect":
        lowest = max(lowest, left + 1, right + 1)
    if mode == "circular":
        lowest = max(lowest, left, right)
    size = draw(st.integers(lowest, lowest + 6))
    return dict(I=size, K=kernel, stride=stride, padding=(left, right), dilation=dilation)


def brute_force(I: int, K: int, stride: int, padding: tuple[int, int], dilation: int) -> torch.Tensor:
    """``Pi[k, o, i] = [i == stride*o + dilation*k - left]`` by loops."""
    left, right = padding
    outputs = (I + left + right - dilation * (K - 1) - 1) // stride + 1
    result = torch.zeros(K, outputs, I, dtype=torch.float64)
    for k in range(K):
        for o in range(outputs):
            i = stride * o + dilation * k - left
            if 0 <= i < I:
                result[k, o, i] = 1
    return result


@settings(max_examples=60, deadline=None)
@given(patterns_1d())
def test_index_pattern_matches_definition(params: dict) -> None:
    dense = tnconv.index_pattern(**params, dtype=torch.float64)
    torch.testing.assert_close(dense, brute_force(**params), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(patterns_1d(), st.integers(1, 3))
def test_index_pattern_output_size_is_conv1d_output_size(params: dict, channels: int) -> None:
    x = torch.randn(1, channels, params["I"], dtype=torch.float64)
    w = torch.randn(1, channels, params["K"], dtype=torch.float64)
    y = F.conv1d(F.pad(x, params["padding"]), w, stride=params["stride"], dilation=params["dilation"])
    assert tnconv.index_pattern(**params).shape == (params["K"], y.shape[-1], params["I"])
    # and contracting with Pi is that conv
    dense = tnconv.index_pattern(**params, dtype=torch.float64)
    torch.testing.assert_close(torch.einsum("nci,koi,dck->ndo", x, dense, w), y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_padding_mode_variants_match_f_pad(mode: str, data: st.DataObject) -> None:
    """``sum_i Pi[k,o,i] x[i]`` reads ``F.pad(x, mode)[stride*o + dilation*k]``, for every padding mode."""
    params = data.draw(patterns_1d(mode))
    size = params["I"]
    x = torch.arange(1, size + 1, dtype=torch.float64).reshape(1, 1, size)
    padded = F.pad(x, params["padding"], mode="constant" if mode == "zeros" else mode)[0, 0]
    dense = tnconv.index_pattern(**params, mode=mode, dtype=torch.float64)
    taps, outputs, _ = dense.shape
    o = torch.arange(outputs)
    k = torch.arange(taps)
    expected = padded[params["stride"] * o[None, :] + params["dilation"] * k[:, None]]
    torch.testing.assert_close(torch.einsum("koi,i->ko", dense, x[0, 0]), expected, rtol=0, atol=0)
    # the structured PatternSum is sum_o of the same pattern
    kind = pattern(**params, mode=mode)
    summed = build(PatternSum(kind), (taps, size), torch.float64, torch.device("cpu"))
    torch.testing.assert_close(summed, dense.sum(1), rtol=0, atol=0)


def test_index_pattern_example_and_defaults() -> None:
    dense = tnconv.index_pattern(5, 3, stride=2, padding=1)
    assert dense.dtype == torch.get_default_dtype() and dense.shape == (3, 3, 5)
    assert dense[0].nonzero().tolist() == [[1, 1], [2, 3]]  # o=0 reads i=-1 (padding): nothing
    assert dense[1].nonzero().tolist() == [[0, 0], [1, 2], [2, 4]]
    assert tnconv.index_pattern(4, 1).squeeze(0).equal(torch.eye(4))
    assert tnconv.index_pattern(3, 2, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_same_padding_puts_the_extra_pixel_on_the_right() -> None:
    same = tnconv.index_pattern(6, 4, padding="same")
    assert same.shape == (4, 6, 6)
    torch.testing.assert_close(same, tnconv.index_pattern(6, 4, padding=(1, 2)))
    assert tnconv.index_pattern(6, 4, padding="valid").shape == (4, 3, 6)
    assert tnconv.index_pattern(5, 3, padding="same", dilation=2).shape == (3, 5, 5)


def test_kernel_as_large_as_padded_input() -> None:
    dense = tnconv.index_pattern(3, 5, padding=1)
    assert dense.shape == (5, 1, 3)
    assert dense[:, 0].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_symbolic_index_pattern_substitutes_to_concrete() -> None:
    size = sympy.Symbol("I", integer=True, positive=True)
    kind = IndexPattern(size, 3, 2, 1, 1, 1)
    assert not isinstance(kind.output_size, int)
    concrete = kind.substitute({size: 9})
    assert concrete.output_size == 5 == IndexPattern(9, 3, 2, 1, 1, 1).output_size


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((True, 3), TypeError, ["I", "True"]),
        ((5, 3.0), TypeError, ["K", "3.0"]),
        ((5, "3"), TypeError, ["K", "'3'"]),
        ((0, 1), ValueError, ["I", "0"]),
        ((5, 0), ValueError, ["K", "0"]),
        ((5, 3, 0), ValueError, ["stride", "0"]),
        ((5, 3, 1, -1), ValueError, ["padding", "-1"]),
        ((5, 3, 1, 0, 0), ValueError, ["dilation", "0"]),
        ((5, 3, 2, "same"), ValueError, ["same", "stride"]),
        ((5, 3, 1, "full"), ValueError, ["padding", "'full'"]),
        ((5, 3, 1, (1, 2, 3)), ValueError, ["padding", "(1, 2, 3)"]),
        ((2, 3), ValueError, ["K=3", "padding"]),
        ((3, 3, 1, 0, 2), ValueError, ["K=3", "dilation=2"]),
    ],
)
def test_bad_arguments_name_argument_and_value(args: tuple, error: type, words: list[str]) -> None:
    with pytest.raises(error) as raised:
        tnconv.index_pattern(*args)
    for word in words:
        assert word in str(raised.value)


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode.*'mirror'"):
        tnconv.index_pattern(5, 3, mode="mirror")
    with pytest.raises(TypeError, match="mode"):
        tnconv.index_pattern(5, 3, mode=None)
