"""The ``kfac_expand_diag`` routine (the squared patches summed: KFAC-expand's diagonal) and what derives and runs
it: the ``pattern square`` rule (two copies of a pattern that read one pixel are one), and products that contract
nothing run as a broadcast ``*``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers
from support.networks import assert_close, dense_value, operands

import tnconv
from tnconv.conv.hyper import conv_hyper
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.passes.pattern_square import square_patterns, square_patterns_traced
from tnconv.routines import TABLE, derive, run_routine
from tnconv.routines.references import kfac_expand

MODES = ("zeros", "reflect", "replicate", "circular")
ROUTINE = TABLE["kfac_expand_diag"]


def hyper_of(layer: ConvLayer):
    return conv_hyper(layer.x_shape, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode,
                      output_padding=layer.output_padding, transposed=layer.transposed)


@st.composite
def layers(draw: st.DrawFn) -> ConvLayer:
    return draw(conv_layers(max_dims=3, transposed=draw(st.booleans()), padding_modes=MODES, max_batch=3))


@settings(max_examples=60, deadline=None)
@given(layers(), st.integers(0, 2**16))
def test_the_routine_is_the_diagonal_of_kfac_expand(layer: ConvLayer, seed: int) -> None:
    """Every layer (1-3 dims, transposed, groups, padding modes, asymmetric and "same" padding), float64."""
    hyper = hyper_of(layer)
    x = torch.randn(layer.x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    got = run_routine(ROUTINE, hyper, {"X": x})
    expected = torch.diagonal(kfac_expand(hyper)({"X": x}), dim1=1, dim2=2)
    assert got.shape == (layer.groups, hyper.patch_size)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_half_inputs_are_summed_in_float32() -> None:
    hyper = conv_hyper((2, 3, 9, 9), 3, padding=1)
    x = torch.randn(2, 3, 9, 9).mul_(60)  # the squares fit float16, their sums do not, their means do
    got = run_routine(ROUTINE, hyper, {"X": x.half()})
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), run_routine(ROUTINE, hyper, {"X": x.half().float()}), rtol=2e-3, atol=0)


def test_the_derivation_squares_the_input_read_through_pattern_sums() -> None:
    """After ``pattern square`` both copies of X read the same pixels; simplify then sums the locations on each
    pattern alone: the patch sums of the squared input, no index pattern and no unfolded tensor left."""
    hyper = conv_hyper((8, 16, 14, 14), 3, padding=1)
    stages = derive(ROUTINE, hyper)
    assert [len(stage.rewrites or ()) for stage in stages] == [0, 1, 2, 2]
    squared = stages[2].network
    xs = [entry for entry in squared.entries if entry.name == "X"]
    assert len(xs) == 2 and xs[0].legs == xs[1].legs == ("n", "g", "c_in", "i1", "i2")
    final = stages[-1].network
    assert sorted(type(entry.kind).__name__ for entry in final.entries) == ["Data", "Data", "PatternSum", "PatternSum"]
    program = tnconv.compile(final)
    assert program.largest_intermediate <= 16 * 14 * 14  # the squared input summed over samples, nothing larger


def test_the_command_line_derives_and_checks_it(capsys: pytest.CaptureFixture[str]) -> None:
    from tnconv.cli import main

    assert main(["derive", "kfac-expand-diag", "--input", "2,4,7,6", "--padding", "1", "--padding-mode", "reflect",
                 "--no-diagram", "--check"]) == 0
    out = capsys.readouterr().out
    assert "pattern square: Pi1, Pi1" in out and "pattern sum: Pi2" in out and "PASSED" in out


# --- the pattern square rule ---------------------------------------------------------------------


def _copies(pattern: IndexPattern, shared: str) -> Network:
    """``X[i] Pi[k,o,i] Pi[k,o',i'] Y[i']`` (``o`` shared when ``shared == "o"``, else ``i``), output ``(k,)``."""
    if shared == "o":
        entries = [Tensor("X", ("i",), Data()), Tensor("Pi", ("k", "o", "i"), pattern),
                   Tensor("Pi", ("k", "o", "j"), pattern), Tensor("Y", ("j",), Data())]
    else:
        entries = [Tensor("X", ("o",), Data()), Tensor("Pi", ("k", "o", "i"), pattern),
                   Tensor("Pi", ("k", "p", "i"), pattern), Tensor("Y", ("p",), Data())]
    sizes = {"k": pattern.kernel_size, "o": pattern.output_size, "p": pattern.output_size, "i": pattern.input_size,
             "j": pattern.input_size}
    return Network(entries, ("k",), {leg: size for leg, size in sizes.items() if any(leg in e.legs for e in entries)})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),
       st.integers(1, 2), st.sampled_from(MODES), st.sampled_from(("o", "i")), st.integers(0, 2**16))
def test_pattern_square_preserves_the_value_where_it_fires(
    size: int, kernel: int, stride: int, left: int, right: int, dilation: int, mode: str, shared: str, seed: int
) -> None:
    """Two copies sharing ``(k, o)`` always merge; sharing ``(k, i)`` only in zeros mode (folded padding reads one
    pixel from several outputs); where it fires the value is that of the dense network."""
    padded = size + left + right - dilation * (kernel - 1)
    limit = size - 1 if mode == "reflect" else size
    if padded < 1 or (mode != "zeros" and max(left, right) > limit):
        left = right = 0
        size = max(size, dilation * (kernel - 1) + 1)
    pattern = IndexPattern(size, kernel, stride, left, right, dilation, mode)
    net = _copies(pattern, shared)
    squared, trace = square_patterns_traced(net)
    fires = shared == "o" or mode == "zeros"
    assert trace.rules() == (("pattern square",) if fires else ())
    assert sum(isinstance(entry.kind, IndexPattern) for entry in squared.entries) == (1 if fires else 2)
    values = operands(net, seed)
    assert_close(dense_value(squared, values), dense_value(net, values))


def test_pattern_square_keeps_an_output_leg_and_unequal_patterns() -> None:
    """An output leg ``i'`` is not summed (the copies' product is not the pattern there); copies of unequal patterns
    (another stride) read different pixels: neither is rewritten."""
    net = _copies(IndexPattern(6, 3, 1, 1, 1), "o")
    assert square_patterns_traced(net)[1].rules() == ("pattern square",)
    with_output = net.replace(output=("k", "j"))
    assert square_patterns(with_output) is with_output
    strided = [Tensor(e.name, e.legs, IndexPattern(6, 3, 2, 1, 1)) if n == 2 else e for n, e in enumerate(net.entries)]
    unequal = net.replace(tensors=strided, sizes={**net.sizes, "o": 6})
    assert square_patterns(unequal) is unequal


def test_pattern_square_record_says_what_it_merged() -> None:
    _, trace = square_patterns_traced(_copies(IndexPattern(6, 3, 1, 1, 1), "o"))
    assert str(trace) == ("1. pattern square: Pi, Pi [k, o shared; each (k, o) of the pattern holds one 1 at most] "
                          "-> Pi[k, o, i] delta[i, j]: rename j->i; drop the copy")


# --- products that contract nothing --------------------------------------------------------------


@pytest.mark.parametrize("equation", ["abc,abc->bc", "ab,ac->abc", "abc,abc->abc", "a,b->ab", "ab,ab->"])
def test_products_without_contraction_equal_einsum(equation: str) -> None:
    """Hadamard and outer products (``K == 1``: a broadcast ``*`` instead of ``matmul``) equal torch.einsum."""
    generator = torch.Generator().manual_seed(0)
    inputs = equation.split("->")[0].split(",")
    sizes = {"a": 5, "b": 3, "c": 4}
    tensors = [torch.randn([sizes[leg] for leg in legs], generator=generator, dtype=torch.float64) for legs in inputs]
    torch.testing.assert_close(tnconv.einsum(equation, *tensors), torch.einsum(equation, *tensors), rtol=1e-12,
                               atol=1e-12)
