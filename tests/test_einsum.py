"""``tnconv.einsum`` against ``torch.einsum`` in float64: letters and named legs, ``...``, implicit outputs,
diagonals, size-1 broadcasting, repeated operands, more legs than letters, optimizer objects, a cached plan."""

from __future__ import annotations

import numpy as np
import opt_einsum
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.contract import einsum_network
from tnconv.programs.cache import PROGRAMS
from tnconv.lower.optimize import AUTO

TOL = {"rtol": 1e-10, "atol": 1e-12}
LETTERS = "abcdeXY"


def named(letter: str) -> str:
    """A multi-character name for ``letter`` that sorts as the letter does (``a`` -> ``a_a``)."""
    return f"{letter}_{letter}"


@st.composite
def einsum_cases(draw: st.DrawFn) -> tuple[str, str, list[torch.Tensor]]:
    """``(letters equation, the same equation as tnconv.einsum gets it, operands)``, valid for torch.einsum.

    Up to 4 operands with 0-3 legs each (a leg twice on one operand: a diagonal), sizes 1-3, dims of
    size 1 where the leg is larger (broadcast), an optional ``...`` over a broadcast shape (each operand
    with its trailing dims, some of them 1), an explicit or implicit output, the named or letters form,
    and an operand passed twice where two terms have one shape.
    """
    pool = draw(st.lists(st.sampled_from(LETTERS), min_size=1, max_size=5, unique=True))
    size = {leg: draw(st.integers(1, 3)) for leg in pool}
    count = draw(st.integers(1, 4))
    terms = [draw(st.lists(st.sampled_from(pool), max_size=3)) for _ in range(count)]
    broadcast = draw(st.lists(st.integers(1, 3), max_size=2))
    dots = [bool(broadcast) and draw(st.booleans()) for _ in terms]
    shapes = []
    for legs, dotted in zip(terms, dots):
        once = [leg for leg in legs if legs.count(leg) == 1]
        shape = [1 if leg in once and draw(st.booleans()) else size[leg] for leg in legs]
        if dotted:
            rank = draw(st.integers(0, len(broadcast)))
            tail = broadcast[len(broadcast) - rank :]
            shape = [1 if draw(st.booleans()) else s for s in tail] + shape
        shapes.append(tuple(shape))
    used = sorted({leg for legs in terms for leg in legs})
    explicit = draw(st.booleans())
    if explicit:
        kept = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        dotted_output = any(dots) and draw(st.booleans())
        output_letters = ("..." if dotted_output else "") + "".join(kept)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    operands = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    for n in range(1, count):  # the same tensor object twice where a shape repeats
        if shapes[n] == shapes[0] and draw(st.booleans()):
            operands[n] = operands[0]
    letters = ",".join(("..." if dotted else "") + "".join(legs) for legs, dotted in zip(terms, dots))
    letters += f"->{output_letters}" if explicit else ""
    if not draw(st.booleans()):
        return letters, letters, operands

    def words(text: str) -> str:
        return " ".join("..." if part == "..." else named(part) for part in _split(text))

    inputs, _, output = letters.partition("->")
    written = ", ".join(words(term) for term in inputs.split(","))
    written += f" -> {words(output)}" if explicit else ""
    return letters, written, operands


def _split(term: str) -> list[str]:
    """``"...ab"`` -> ``["...", "a", "b"]``."""
    parts, rest = [], term.strip()
    while rest:
        if rest.startswith("..."):
            parts.append("...")
            rest = rest[3:]
        else:
            parts.append(rest[0])
            rest = rest[1:]
    return parts


@settings(max_examples=60, deadline=None)
@given(einsum_cases())
def test_einsum_equals_torch_einsum(case: tuple[str, str, list[torch.Tensor]]) -> None:
    letters, written, operands = case
    expected = torch.einsum(letters, *operands)
    got = tnconv.einsum(written, *operands)
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(tnconv.einsum(written, *operands), expected, **TOL)  # the cached plan


@st.composite
def ellipsis_between_letters(draw: st.DrawFn) -> tuple[str, list[torch.Tensor]]:
    """A letters equation (valid for torch.einsum) whose ``...`` sits anywhere in a term: before, between or after
    its letters (``"a...ab"``, ``"i...j,jk->i...k"``), with an explicit output (``...`` anywhere in it) or none."""
    pool = draw(st.lists(st.sampled_from(LETTERS), min_size=1, max_size=4, unique=True))
    size = {leg: draw(st.integers(1, 3)) for leg in pool}
    broadcast = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
    terms, shapes = [], []
    for _ in range(draw(st.integers(1, 3))):
        legs = draw(st.lists(st.sampled_from(pool), max_size=3))
        rank = draw(st.integers(0, len(broadcast)))
        dims = [1 if draw(st.booleans()) else s for s in broadcast[len(broadcast) - rank :]]
        at = draw(st.integers(0, len(legs)))
        terms.append("".join(legs[:at]) + "..." + "".join(legs[at:]))
        shapes.append(tuple([size[leg] for leg in legs[:at]] + dims + [size[leg] for leg in legs[at:]]))
    equation = ",".join(terms)
    if draw(st.booleans()):
        used = sorted({leg for term in terms for leg in term if leg != "."})
        kept = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        at = draw(st.integers(0, len(kept)))
        equation += "->" + "".join(kept[:at]) + "..." + "".join(kept[at:])
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return equation, [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]


@settings(max_examples=100, deadline=None)
@given(ellipsis_between_letters())
def test_an_ellipsis_between_letters_reads_as_letters(case: tuple[str, list[torch.Tensor]]) -> None:
    """``...`` anywhere in a letters term keeps the equation in letters (before: ``"a...ab"`` read as named legs)."""
    equation, operands = case
    expected = torch.einsum(equation, *operands)
    got = tnconv.einsum(equation, *operands)
    assert got.shape == expected.shape, (equation, got.shape, expected.shape)
    torch.testing.assert_close(got, expected, **TOL)


def test_the_ellipsis_cases_of_the_report() -> None:
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 2, 4, dtype=torch.float64, generator=generator)
    x, y = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator), torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(tnconv.einsum("a...ab->a", a), torch.einsum("a...ab->a", a), **TOL)
    torch.testing.assert_close(tnconv.einsum("i...j,jk->i...k", x, y), torch.einsum("i...j,jk->i...k", x, y), **TOL)


@st.composite
def empty_leg_cases(draw: st.DrawFn) -> tuple[str, list[torch.Tensor]]:
    """A letters equation of 1-3 operands where some leg has size 0 (an empty batch, an empty contracted leg)."""
    pool = draw(st.lists(st.sampled_from(LETTERS), min_size=1, max_size=4, unique=True))
    size = {leg: draw(st.integers(0, 3)) for leg in pool}
    terms = [draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)) for _ in range(draw(st.integers(1, 3)))]
    used = sorted({leg for term in terms for leg in term})
    size[draw(st.sampled_from(used))] = 0
    kept = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    operands = [torch.randn([size[leg] for leg in term], generator=generator, dtype=torch.float64) for term in terms]
    return ",".join("".join(term) for term in terms) + "->" + "".join(kept), operands


@settings(max_examples=60, deadline=None)
@given(empty_leg_cases())
def test_an_empty_leg_gives_what_torch_einsum_gives(case: tuple[str, list[torch.Tensor]]) -> None:
    """An empty kept leg gives an empty result, an empty summed leg zeros (before: ZeroDivisionError planning
    ``"bij,bjk->bik"`` with ``b = 0``)."""
    equation, operands = case
    expected = torch.einsum(equation, *operands)
    got = tnconv.einsum(equation, *operands)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_an_empty_batch_of_matrix_products() -> None:
    x, y = torch.randn(0, 3, 4, requires_grad=True), torch.randn(0, 4, 5)
    got = tnconv.einsum("bij,bjk->bik", x, y)
    assert got.shape == (0, 3, 5)
    got.sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 3, 4)
    torch.testing.assert_close(tnconv.einsum("bij,bjk->ik", x, y), torch.zeros(3, 5), rtol=0, atol=0)


def test_more_legs_than_letters() -> None:
    """Six operands of ten legs each, 60 legs in all (chained by one shared leg): past torch.einsum's 52 letters."""
    generator = torch.Generator().manual_seed(0)
    terms = [[f"l{t}_{j}" for j in range(10)] for t in range(6)]
    for t in range(1, 6):
        terms[t][0] = terms[t - 1][-1]  # chain neighbours
    sizes = {leg: 1 + (hash(leg) % 2) for term in terms for leg in term}
    operands = [torch.randn([sizes[leg] for leg in term], generator=generator, dtype=torch.float64) for term in terms]
    output = [terms[0][1], terms[5][-1]]
    equation = ", ".join(" ".join(term) for term in terms) + " -> " + " ".join(output)
    assert len(sizes) > 52
    got = tnconv.einsum(equation, *operands)
    symbols = {leg: opt_einsum.get_symbol(n) for n, leg in enumerate(sizes)}
    letters = ",".join("".join(symbols[leg] for leg in term) for term in terms) + "->" + "".join(symbols[leg] for leg in output)
    expected = opt_einsum.contract(letters, *(operand.numpy() for operand in operands))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_a_repeated_call_reuses_the_cached_program() -> None:
    tnconv.clear_caches()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    tnconv.einsum("ij,jk->ik", x, y)
    key = ("tnconv.einsum", "ij,jk->ik", (x.shape, y.shape), AUTO)
    program = PROGRAMS.get(key)
    assert program is not None and program.network == einsum_network("ij,jk->ik", [(3, 4), (4, 5)])
    count = len(PROGRAMS)
    tnconv.einsum("ij,jk->ik", x, y)
    assert len(PROGRAMS) == count and PROGRAMS.get(key) is program
    tnconv.einsum("ij,jk->ik", x[:2], y)  # another shape, another plan
    assert PROGRAMS.get(("tnconv.einsum", "ij,jk->ik", (x[:2].shape, y.shape), AUTO)) not in (None, program)
    tnconv.clear_caches()
    assert PROGRAMS.get(key) is None
    torch.testing.assert_close(tnconv.einsum("ij,jk->ik", x, y), x @ y, **TOL)


class CountingGreedy(opt_einsum.paths.PathOptimizer):
    """opt_einsum's greedy path, counting how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, inputs, output, size_dict, memory_limit=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return opt_einsum.paths.greedy(inputs, output, size_dict, memory_limit)


@pytest.mark.filterwarnings("ignore:Couldn't import `kahypar`")
def test_optimizer_objects() -> None:
    """opt_einsum's DynamicProgramming, cotengra's HyperOptimizer and a custom PathOptimizer, asked once per shapes."""
    cotengra = pytest.importorskip("cotengra")
    generator = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (4, 5), (5, 6), (6, 2)]
    operands = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    expected = torch.einsum("ab,bc,cd,de->ae", *operands)
    counting = CountingGreedy()
    for optimize in (opt_einsum.DynamicProgramming(), cotengra.HyperOptimizer(max_repeats=4, progbar=False), counting):
        torch.testing.assert_close(tnconv.einsum("a b, b c, c d, d e -> a e", *operands, optimize=optimize), expected, **TOL)
    tnconv.einsum("a b, b c, c d, d e -> a e", *operands, optimize=counting)
    assert counting.calls == 1
    path = [(0, 1), (0, 1), (0, 1)]
    torch.testing.assert_close(tnconv.einsum("ab,bc,cd,de->ae", *operands, optimize=path), expected, **TOL)


@pytest.mark.parametrize("call, error, words", [
    (lambda x: tnconv.einsum("ij,jk->ik", x), ValueError, ["2 operand(s)", "1 were given"]),
    (lambda x: tnconv.einsum("ijk->i", x), ValueError, ["operand 0", "2 dim(s)", "(3, 4)", "3 leg(s)"]),
    (lambda x: tnconv.einsum("...ijk->i", x), ValueError, ["operand 0", "at least 3"]),
    (lambda x: tnconv.einsum("ij,ij->ij", x, x.T), ValueError, ["leg 'i'", "size 3 on operand 0", "4 on operand 1"]),
    (lambda x: tnconv.einsum("ii->i", x), ValueError, ["operand 0", "leg 'i' twice", "3 and 4"]),
    (lambda x: tnconv.einsum("i j, j k -> i q", x, x.T), ValueError, ["'q'"]),
    (lambda x: tnconv.einsum("i-j", x), ValueError, ["invalid leg", "'i-j'"]),
    (lambda x: tnconv.einsum("i....j", x), ValueError, ["one ellipsis"]),
    (lambda x: tnconv.einsum("ij->ij", 3), TypeError, ["operand 0", "int"]),
    (lambda x: tnconv.einsum("ij->ij", x, optimize="fastest"), ValueError, ["optimize", "'fastest'"]),
    (lambda x: tnconv.einsum("ij->ij", x, optimize=3), TypeError, ["optimize", "3"]),
    (lambda x: tnconv.einsum("->"), ValueError, ["at least one operand"]),
    (lambda x: tnconv.einsum(["ij"], x), TypeError, ["equation", "['ij']"]),
])
def test_bad_calls_name_what_is_wrong(call, error: type, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        call(torch.randn(3, 4, dtype=torch.float64))
    assert all(word in str(info.value) for word in words), str(info.value)
