"""The numpy backend (``tnconv.backends.numpy``): programs and ``tnconv.einsum`` take numpy arrays and return numpy
arrays, with the torch backend's values.

Every routine of the table, on small layers of 1 and 2 dims (transposed ones, padding modes, groups), derived and
simplified or as built (dense patterns, gathers, scatters, window sums), and sliced by a ``memory_limit``: the
program called with numpy float64 arrays equals the same program called with torch tensors. numpy has no
native kernels, so a network that a torch kernel runs runs its einsum plan there. Also: the operand checks,
integer arrays, the allocation limit, a symbolic program, and einsum equations of every kind against
``numpy.einsum``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.equations import equation_sample
from support.layers import ConvLayer, conv_layers

import tnconv
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.routines import TABLE, Options, Routine, routine_network

TOL = dict(rtol=1e-10, atol=1e-12)
MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def routine_cases(draw: st.DrawFn) -> tuple[Routine, ConvHyper]:
    """A routine of the table and a small layer it takes."""
    routine = draw(st.sampled_from(list(TABLE.values())))
    transposed = routine.transposed or (routine.start != "fold" and draw(st.booleans()))
    layer: ConvLayer = draw(conv_layers(max_dims=2, transposed=transposed, padding_modes=MODES, max_groups=2))
    mode = layer.padding_mode if routine.name in ("forward", "unfold", "patch_sums", "kfac_expand", "kfac_reduce") \
        else "zeros"  # fmt: skip
    hyper = conv_hyper(
        layer.x_shape, layer.kernel_size, layer.out_channels if routine.needs_out_channels else None,
        stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        padding_mode=mode, output_padding=layer.output_padding, transposed=layer.transposed,
    )
    return routine, hyper


def numpy_operands(program: tnconv.Program, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(int(size) for size in shape)) for shape in program.expected_shapes]


def assert_same_as_torch(program: tnconv.Program, operands: list[np.ndarray]) -> None:
    got = program(*operands)
    expected = program(*(torch.from_numpy(operand) for operand in operands))
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), **TOL)


@settings(max_examples=80, deadline=None)
@given(routine_cases(), st.booleans(), st.integers(0, 2**16))
def test_every_routine_network_runs_on_numpy_as_on_torch(case: tuple[Routine, ConvHyper], simplified: bool,
                                                         seed: int) -> None:  # fmt: skip
    routine, hyper = case
    options = Options(2 if routine.takes_columns else None)
    network = routine_network(routine, hyper, options, simplify=simplified)  # as derived, or also simplified
    program = tnconv.compile(network)
    assert_same_as_torch(program, numpy_operands(program, seed))


@pytest.mark.parametrize("name", list(TABLE))
def test_each_routine_runs_on_numpy(name: str) -> None:
    """Every routine, on one 2-d layer with stride, padding and groups: as simplified, as derived, and sliced."""
    routine = TABLE[name]
    hyper = conv_hyper((2, 4, 7, 6), (3, 2), 4 if routine.needs_out_channels else None, stride=(2, 1), padding=1,
                       groups=2, transposed=routine.transposed)  # fmt: skip
    options = Options(2 if routine.takes_columns else None)
    for simplified in (True, False):
        network = routine_network(routine, hyper, options, simplify=simplified)
        program = tnconv.compile(network)
        operands = numpy_operands(program, 0)
        assert_same_as_torch(program, operands)
        sliced = tnconv.compile(network, memory_limit=max(1, program.einsum_plan.largest_intermediate // 3))
        assert_same_as_torch(sliced, operands)


def test_a_native_program_runs_its_einsum_plan_on_numpy() -> None:
    program = tnconv.compile(tnconv.conv_network("forward", (2, 3, 8, 8), 3, 4, padding=1, padding_mode="reflect"))
    assert program.strategy.startswith("native:")
    assert_same_as_torch(program, numpy_operands(program, 1))
    assert program.runner_for("numpy") is program.runner_for("numpy")  # made once


def test_operands_are_checked_and_named() -> None:
    program = tnconv.compile(tnconv.Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    a, b = np.ones((2, 3)), np.ones((3, 4))
    with pytest.raises(TypeError, match="'B' must be a numpy.ndarray"):
        program(a, torch.ones(3, 4))
    with pytest.raises(ValueError, match="'B' axis 0"):
        program(a, np.ones((2, 4)))
    with pytest.raises(ValueError, match="one dtype"):
        program(a, b.astype(np.float32))
    with pytest.raises(TypeError, match="'A' has dtype bool"):
        program(a > 0, b > 0)
    with pytest.raises(TypeError, match="'A' must be a torch.Tensor or a numpy.ndarray, got list"):
        program([[1.0]], b)
    np.testing.assert_array_equal(program(B=b.astype(np.int64), A=a.astype(np.int64)), np.full((2, 4), 3))


def test_numpy_calls_honour_the_allocation_limit() -> None:
    program = tnconv.compile(tnconv.Network.from_einsum("i,j->ij", "A", "B", sizes={"i": 1000, "j": 1000}))
    with tnconv.set_allocation_limit(1000 * 1000 * 8 - 1):
        with pytest.raises(ValueError, match="result"):
            program(np.ones(1000), np.ones(1000))
    assert program(np.ones(1000), np.ones(1000)).shape == (1000, 1000)


def test_a_symbolic_program_runs_on_numpy() -> None:
    network = tnconv.conv_network("forward", ("N", 3, "H", 9), 3, 4, padding=1)
    program = tnconv.compile(network)
    for batch, height in ((2, 8), (1, 5), (2, 8)):
        operands = [np.random.default_rng(batch).standard_normal(shape) for shape in ((batch, 3, height, 9), (4, 3, 3, 3))]
        assert_same_as_torch(program, operands)


def test_einsum_takes_and_returns_numpy_arrays() -> None:
    rng = np.random.default_rng(0)
    for equation, sizes in equation_sample(3, 60):
        inputs = equation.split("->")[0]
        operands = [rng.standard_normal([sizes[leg] for leg in term]) for term in inputs.split(",")]
        got = tnconv.einsum(equation, *operands)
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, np.einsum(equation, *operands), **TOL)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.integers(0, 5, (3, 4))
    promoted = tnconv.einsum("ij,jk->ik", a, b)
    assert promoted.dtype == np.result_type(a.dtype, b.dtype)
    np.testing.assert_allclose(promoted, a @ b, rtol=1e-6)
    np.testing.assert_allclose(tnconv.einsum(a, [0, 1], b, [1, 2], [0, 2]), a @ b, rtol=1e-6)
