"""Einsum equations: one parser for letters and leg names, and ``Network.to_einsum(named=True)`` read back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv import Network, Tensor
from tnconv.ir.equation import ELLIPSIS, Equation, parse_equation, write_equation
from tnconv.routines import TABLE


def test_the_forms_and_the_implicit_output() -> None:
    assert parse_equation("ij,jk->ik") == Equation((("i", "j"), ("j", "k")), ("i", "k"), False, False)
    assert parse_equation("ij, jk -> ik") == parse_equation("ij,jk->ik")  # whitespace around terms: letters
    assert parse_equation("i j, j k -> i k").inputs == parse_equation("ij,jk->ik").inputs  # one-letter names agree
    named = parse_equation("n c_in i1, c_out c_in k1 -> n c_out i1")
    assert named.named and named.inputs == (("n", "c_in", "i1"), ("c_out", "c_in", "k1"))
    assert parse_equation("c_in,c_in").named and parse_equation("c_in,c_in").inputs == (("c_in",), ("c_in",))
    assert parse_equation("batch->batch").inputs == (tuple("batch"),)  # one multi-letter leg reads as letters
    assert parse_equation("bA,Ac").output == ("b", "c") and parse_equation("Ba").output == ("B", "a")  # as torch
    assert parse_equation("j...i").output == (ELLIPSIS, "i", "j") and parse_equation("... b a").output == (
        ELLIPSIS, "a", "b")
    assert parse_equation("ii").output == ()  # a leg twice on one operand is summed (a trace)


@pytest.mark.parametrize("equation, words", [
    ("ij->jk->i", ["more than one '->'"]),
    ("i.j", ["one ellipsis", "no other '.'"]),
    ("a b, c-d", ["invalid leg", "'c-d'"]),
    ("a,b#", ["invalid leg", "'b#'"]),
])
def test_bad_equations(equation: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_equation(equation)
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.mark.parametrize("op", list(TABLE))
@pytest.mark.parametrize("shape", [(2, 4, 7, 6), ("N", "C", "H", "W")])
def test_named_einsum_of_every_routine_reads_back(op: str, shape: tuple) -> None:
    routine = TABLE[op]
    net = tnconv.conv_network(op, shape, 3, 4 if routine.needs_out_channels else None, stride=(1, 2), padding=1)
    text = net.to_einsum(named=True)
    assert " -> " in text and ", " in text and "n c_in" in text.replace(" g ", " ")  # simplify drops a summed g=1
    back = Network.from_einsum(text, *net.tensors)
    assert [e.legs for e in back.entries] == [e.legs for e in net.entries] and back.output == net.output
    assert net.to_einsum() == back.to_einsum()  # the letters form is unchanged


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b_1", "c_in", "k1", "a*b", "x'"]), max_size=3), min_size=1, max_size=4))
def test_named_form_round_trips(terms: list[list[str]]) -> None:
    legs = [leg for term in terms for leg in term]
    output = tuple(dict.fromkeys(leg for leg in legs if legs.count(leg) == 1))
    net = Network([Tensor(f"T{n}", tuple(term)) for n, term in enumerate(terms)], output)
    back = Network.from_einsum(net.to_einsum(named=True), *net.tensors)
    assert [e.legs for e in back.entries] == [e.legs for e in net.entries] and back.output == net.output


def test_what_the_named_form_cannot_write() -> None:
    with pytest.raises(ValueError, match=r"\['i:kept'\].*letters, digits"):
        Network([Tensor("A", ("i:kept", "j"))], ("j",)).to_einsum(named=True)
    with pytest.raises(ValueError, match="would read as letters"):
        Network([Tensor("A", ("batch",)), Tensor("B", ("batch",))], ("batch",)).to_einsum(named=True)
    assert write_equation([("x",), ("x",)], ("x",)) == "x, x -> x"  # one-letter legs read the same either way
    with pytest.raises(TypeError, match="named must be a bool"):
        Network([Tensor("A", ("i",))], ("i",)).to_einsum(named="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ellipsis.*tnconv.einsum"):
        Network.from_einsum("...i->i", "A")
