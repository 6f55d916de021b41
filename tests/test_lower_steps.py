"""Contraction steps as permute/reshape/matmul recipes, and steps shared between equal sub-contractions."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.networks import assert_close, dense_value, random_operands

import tnconv
from tnconv.ir.network import Network
from tnconv.programs.compile import compile
from tnconv.backends.torch.steps import pairwise
from tnconv.lower.steps import Pairwise, recipe

LEGS = "abcdefg"


@st.composite
def pair_networks(draw: st.DrawFn) -> Network:
    """Two or three operands over up to 7 legs, each leg on any subset, in shuffled orders, any output."""
    count = draw(st.integers(2, 3))
    terms: list[list[str]] = [[] for _ in range(count)]
    for leg in LEGS[: draw(st.integers(1, len(LEGS)))]:
        holders = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=count, unique=True))
        for h in holders:
            terms[h].append(leg)
    terms = [draw(st.permutations(t)) for t in terms]
    legs = sorted({leg for t in terms for leg in t})
    output = draw(st.permutations(draw(st.lists(st.sampled_from(legs), unique=True)) if legs else []))
    sizes = {leg: draw(st.integers(1, 3)) for leg in legs}
    equation = ",".join("".join(t) for t in terms) + "->" + "".join(output)
    return Network.from_einsum(equation, *[f"T{n}" for n in range(count)], sizes=sizes)


@settings(max_examples=60)
@given(pair_networks())
def test_recipes_equal_einsum(net):
    program = compile(net)
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_broadcast_layout_avoids_copying_the_large_operand():
    """X (n, c, i, j) contracted over i with S (k, i): S is broadcast over (n, c); X is only reshaped."""
    sizes = {"n": 4, "c": 5, "i": 9, "j": 9, "k": 3}
    calls, legs = recipe([("n", "c", "i", "j"), ("k", "i")], {"n", "c", "j", "k"}, sizes)
    assert isinstance(calls, Pairwise) and calls.swap
    assert calls.second.prepare is None and not calls.second.transpose
    assert legs == ("n", "c", "k", "j")
    x, s = torch.randn(4, 5, 9, 9, dtype=torch.float64), torch.randn(3, 9, dtype=torch.float64)
    assert_close(pairwise(calls)(x, s), torch.einsum("ncij,ki->nckj", x, s))


def test_equal_halves_of_a_gram_network_are_computed_once():
    """KFAC-reduce: the second copy of X is the first one prepared (window sums run once), and the
    product of the two is a Gram product."""
    net = tnconv.conv_network("kfac_reduce", (2, 3, 7, 6), (3, 2), padding=1)
    program = compile(net)
    first, second = program.einsum_plan.preparations
    assert first.sums and first.alias < 0 and second.alias == first.slot
    assert any(getattr(step.recipe, "gram", False) for step in program.einsum_plan.contraction.steps)
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))
    sliced = compile(net, memory_limit=program.largest_intermediate // 2)
    assert "sliced" in sliced.strategy
    assert_close(sliced(*operands), dense_value(net, operands))


def test_gram_product_arranges_its_operand_once():
    """KFAC-expand contracts the unfolded input with itself: one arrangement, transposed for the other side."""
    net = tnconv.conv_network("kfac_expand", (2, 4, 7, 5), (3, 2), stride=(2, 1), padding=1, groups=2)
    program = compile(net)
    assert any(getattr(step.recipe, "gram", False) for step in program.einsum_plan.contraction.steps)
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_calls_by_name_and_their_errors():
    net = tnconv.conv_network("forward", (1, 2, 5), (3,), 2, simplify=False)
    program = compile(net)
    assert compile(net) is program
    x, w = torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)
    assert_close(program(W=w, X=x), program(x, w))
    import pytest

    with pytest.raises(ValueError, match="unexpected operand"):
        program(X=x, Y=w)
    with pytest.raises(TypeError, match="'W' must be a torch.Tensor"):
        program(X=x, W=3)
    with pytest.raises(ValueError, match="'W'"):
        program(X=x, W=w[:1])
    with pytest.raises(ValueError, match="dtype"):
        program(X=x, W=w.float())
