"""``tnconv.einsum`` takes what ``opt_einsum.contract`` and ``torch.einsum`` take.

A sample of equations of the kinds opt_einsum's own contract tests use (``support.equations``:
scalars, Hadamard products, index transformations, collapses, outer and inner products, GEMMs,
diagonals, random networks; implicit and explicit outputs; Greek letters) runs through every
``optimize`` value opt_einsum accepts (``True``/``False``/``None``, its path names, a name
registered with ``opt_einsum.paths.register_path_fn``, an optimizer object) against numpy's
einsum in float64; the sublist form against numpy and ``torch.einsum``; mixed dtypes promoted
as ``torch.promote_types`` says.
"""

from __future__ import annotations

import numpy as np
import opt_einsum
import pytest
import torch
from support.equations import KINDS, equation_sample, greek

import tnconv
from tnconv.lower.optimize import AUTO, Optimize, normalize_optimize

REGISTERED = "tnconv-test-greedy"
"""A path function registered with opt_einsum under a name of its own (opt_einsum's greedy)."""
try:
    opt_einsum.paths.register_path_fn(REGISTERED, opt_einsum.paths.greedy)
except KeyError:  # registered already in this process
    pass

OPTIMIZE = (
    True, False, None, "auto", "auto-hq", "greedy", "eager", "opportunistic", "optimal", "dp", "dynamic-programming",
    "branch-1", "branch-2", "branch-all", "random-greedy", "random-greedy-128", "GREEDY", REGISTERED,
)
SAMPLE = equation_sample(seed=22, count=4 * len(KINDS))


def operands(equation: str, sizes: dict[str, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    terms = equation.partition("->")[0].split(",")
    return [rng.standard_normal([sizes[leg] for leg in term]) for term in terms]


@pytest.mark.parametrize("optimize", OPTIMIZE, ids=repr)
def test_opt_einsum_style_equations_with_every_optimize(optimize: object) -> None:
    for number, (equation, sizes) in enumerate(SAMPLE):
        arrays = operands(equation, sizes, number)
        expected = np.einsum(equation, *arrays)
        written = greek(equation) if number % 3 == 0 else equation
        got = tnconv.einsum(written, *(torch.from_numpy(a) for a in arrays), optimize=optimize)
        assert got.shape == expected.shape, (written, got.shape, expected.shape)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=written)


def test_the_sample_covers_the_kinds_of_opt_einsums_tests() -> None:
    """Every kind is drawn; scalars, diagonals, implicit outputs and 4+ operands all occur."""
    equations = [equation for equation, _ in SAMPLE]
    assert any(",," in e or e.startswith(",") or ",->" in e for e in equations)  # a scalar term
    assert any(any(len(set(term)) < len(term) for term in e.partition("->")[0].split(",")) for e in equations)
    assert any("->" not in e for e in equations) and any("->" in e for e in equations)
    assert max(e.partition("->")[0].count(",") + 1 for e in equations) >= 4


def test_optimizer_objects_and_paths_as_opt_einsum_takes_them() -> None:
    equation, sizes = next((e, s) for e, s in SAMPLE if e.partition("->")[0].count(",") >= 3)
    arrays = operands(equation, sizes, 0)
    expected = np.einsum(equation, *arrays)
    tensors = [torch.from_numpy(a) for a in arrays]
    path, _ = opt_einsum.contract_path(equation, *arrays, optimize="greedy")
    for optimize in (opt_einsum.DynamicProgramming(), opt_einsum.RandomGreedy(max_repeats=4), path):
        np.testing.assert_allclose(tnconv.einsum(equation, *tensors, optimize=optimize).numpy(), expected,
                                   rtol=1e-10, atol=1e-12)


def test_optimize_is_normalised_into_one_value() -> None:
    """``True``/``None``/``"auto"`` are one program; ``False`` contracts in order; names are case-insensitive."""
    assert normalize_optimize(True) == normalize_optimize(None) == normalize_optimize("AUTO") == AUTO
    assert normalize_optimize(False) == Optimize() and normalize_optimize(False).argument(4) == [(0, 1), (0, 2), (0, 1)]
    assert normalize_optimize([[1, 2], (0, 1)]) == Optimize(path=((1, 2), (0, 1)))
    assert normalize_optimize(normalize_optimize("eager")) == Optimize(search="eager")
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    net = tnconv.Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 4, "k": 5})
    assert tnconv.compile(net, True) is tnconv.compile(net) is tnconv.compile(net, None)
    assert tnconv.compile(net, False).optimize == Optimize()
    torch.testing.assert_close(tnconv.compile(net, False)(x, y), x @ y, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"optimize must be .*register_path_fn.*'no-such-path'"):
        tnconv.einsum("ij,jk->ik", x, y, optimize="no-such-path")


@pytest.mark.parametrize("arguments, output", [
    (([0, 1], [1, 2]), [0, 2]),
    (([0, 1], [1, 2]), None),
    (([1, 0], [0, 2]), None),  # implicit output: sorted by label (2, 1), not by first use
    (([Ellipsis, 0, 1], [1, 2]), [Ellipsis, 0, 2]),
    (([0, 0], [0, 2]), [2]),
    (([0, 1], [1]), []),
])
def test_the_sublist_form(arguments: tuple[list, ...], output: list | None) -> None:
    rng = np.random.default_rng(1)
    sizes = {0: 3, 1: 4, 2: 5}
    arrays = [rng.standard_normal([2 if label is Ellipsis else sizes[label] for label in labels]) for labels in arguments]
    interleaved = [item for pair in zip(arrays, arguments) for item in pair] + ([] if output is None else [output])
    expected = np.einsum(*interleaved)
    tensors = [torch.from_numpy(a) for a in arrays]
    interleaved_torch = [item for pair in zip(tensors, arguments) for item in pair] + ([] if output is None else [output])
    got = tnconv.einsum(*interleaved_torch)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got, torch.einsum(*interleaved_torch), rtol=1e-10, atol=1e-12)


def test_sublists_of_any_sortable_labels_and_torchs_list_of_operands() -> None:
    x, y, z = (torch.randn(3, 3, dtype=torch.float64) for _ in range(3))
    expected = x @ y @ z
    torch.testing.assert_close(tnconv.einsum(x, (1000, 1001), y, (1001, 1002), z, (1002, 1003)), expected)
    torch.testing.assert_close(tnconv.einsum(x, ("left", "b1"), y, ("b1", "b2"), z, ("b2", "right")), expected)
    torch.testing.assert_close(tnconv.einsum("ij,jk,kl->il", [x, y, z]), expected)
    with pytest.raises(TypeError, match="sublist labels"):
        tnconv.einsum(x, (0, "a"))
    with pytest.raises(TypeError, match="a sublist must be a list or tuple"):
        tnconv.einsum(x, "ij")


@pytest.mark.parametrize("dtypes", [
    (torch.float32, torch.float64), (torch.int64, torch.float32), (torch.int32, torch.int64),
    (torch.float64, torch.complex64), (torch.bool, torch.float32),
])
def test_mixed_dtypes_are_promoted_as_torch_promotes_them(dtypes: tuple[torch.dtype, torch.dtype]) -> None:
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(3, 4, generator=generator) * 3).to(dtypes[0])
    y = (torch.randn(4, 5, generator=generator) * 3).to(dtypes[1])
    dtype = torch.promote_types(*dtypes)
    got = tnconv.einsum("ij,jk->ik", x, y)
    assert got.dtype == dtype
    torch.testing.assert_close(got, torch.einsum("ij,jk->ik", x.to(dtype), y.to(dtype)), rtol=1e-5, atol=1e-5)
