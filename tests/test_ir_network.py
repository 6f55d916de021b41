"""The Network IR: construction, reading, value semantics, transformations, the verifier."""

from __future__ import annotations

import networkx as nx
import pytest
import sympy

import tnconv
from tnconv import Identity, IndexPattern, Network, Tensor
from tnconv.ir import InvariantError, verify


def test_from_einsum_letters_and_words():
    letters = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    words = Network.from_einsum("i j, j k -> i k", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    assert letters == words
    assert letters.tensors == ("A", "B")
    assert letters.legs("B") == ("j", "k")
    assert letters.output == ("i", "k")
    assert letters.size("j") == 3
    named = Network.from_einsum("n c_in i1, c_out c_in k1 -> n c_out", "X", "W")
    assert named.legs("X") == ("n", "c_in", "i1")


def test_implicit_output_is_legs_occurring_once_sorted():
    assert Network.from_einsum("ba,ac", "A", "B").output == ("b", "c")


def test_unknown_sizes_are_positive_integer_symbols():
    net = Network.from_einsum("ij->i", "A", sizes={"i": 2})
    size = net.size("j")
    assert isinstance(size, sympy.Symbol) and size.is_positive and size.is_integer
    assert not net.is_concrete
    concrete = net.substitute({"j": 5})
    assert concrete.is_concrete and concrete.size("j") == 5
    assert net.substitute({}) is net


def test_repeated_names_and_legs():
    net = Network.from_einsum("ii,ij->j", "X", "X", sizes={"i": 3, "j": 3})
    assert net.positions("X") == (0, 1)
    assert net.legs(0) == ("i", "i")
    with pytest.raises(ValueError, match="occurs 2 times"):
        net.legs("X")
    assert net.operands == ("X",)


def test_graph_is_a_frozen_multigraph_with_an_edge_per_leg_slot():
    net = Network.from_einsum("ii,ij,ik->jk", "A", "B", "C", sizes={"i": 2, "j": 2, "k": 2})
    graph = net.graph
    assert isinstance(graph, nx.MultiGraph)
    assert graph.number_of_edges(("tensor", 0), ("leg", "i")) == 2
    assert graph.degree(("leg", "i")) == 4  # a hyperedge over three tensors, twice on A
    assert graph.nodes[("leg", "j")]["output"]
    with pytest.raises(nx.NetworkXError):
        graph.add_node("extra")


def test_networks_are_values():
    a = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2})
    b = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2})
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != Network.from_einsum("ij,jk->ki", "A", "B", sizes={"i": 2})
    with pytest.raises(AttributeError, match="immutable"):
        a._output = ("i",)


def test_rename_is_a_pure_relabelling():
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    renamed = net.rename({"j": "x"}, k="y")
    assert renamed.legs("A") == ("i", "x") and renamed.output == ("i", "y") and renamed.size("x") == 3
    assert net.rename({}) is net
    with pytest.raises(ValueError, match="merge distinct legs"):
        net.rename(j="i")
    with pytest.raises(ValueError, match="unknown leg 'z'"):
        net.rename(z="q")
    assert net.rename_tensors({"A": "C"}).tensors == ("C", "B")


def test_to_einsum_beyond_52_legs_uses_unicode_symbols():
    legs = [f"l{n}" for n in range(60)]
    net = Network.from_einsum(" ".join(legs) + " -> l0", "T")
    equation = net.to_einsum()
    assert len(equation.split("->")[0]) == 60


def test_dump_is_deterministic():
    net = Network(
        [Tensor("X", ("n", "i")), Tensor("Pi", ("k", "o", "i"), IndexPattern(5, 3, 1, 1, 1, 1))],
        output=("n", "k", "o"),
        sizes={"n": 2, "i": 5, "k": 3, "o": 5},
    )
    text = net.dump()
    assert text == net.dump()
    assert "Pi  index_pattern I=5 K=3 S=1 P=(1,1) D=1  (k, o, i)" in text
    assert text.splitlines()[-1] == "einsum: ab,cdb->acd"


def test_verifier_accepts_valid_and_rejects_broken_networks():
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    assert verify(net) is net
    broken_identity = Network([Tensor("I", ("a", "b"), Identity())], ("a",), {"a": 2, "b": 3})
    with pytest.raises(InvariantError, match="unequal sizes"):
        verify(broken_identity)
    wrong_pattern = Network(
        [Tensor("Pi", ("k", "o", "i"), IndexPattern(5, 3))], ("o",), {"k": 3, "o": 4, "i": 5}
    )
    with pytest.raises(InvariantError, match="leg 'o' has size 4 but its kind implies 3"):
        verify(wrong_pattern)
    clash = Network(
        [Tensor("X", ("i",)), Tensor("X", ("i", "j"))], ("j",), {"i": 2, "j": 2}
    )
    with pytest.raises(InvariantError, match="operand .X. is one tensor"):
        verify(clash)


def test_bad_construction_arguments():
    with pytest.raises(TypeError, match="tensor name"):
        Tensor("", ("i",))
    with pytest.raises(TypeError, match="legs of tensor 'A'"):
        Tensor("A", ["i"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output legs must be distinct"):
        Network.from_einsum("ij->ii", "A")
    with pytest.raises(TypeError, match="size of leg 'i'"):
        Network.from_einsum("ij->i", "A", sizes={"i": 2.0})
    with pytest.raises(ValueError, match="size of leg 'i' must be >= 0"):
        Network.from_einsum("ij->i", "A", sizes={"i": -1})
    with pytest.raises(ValueError, match=r"sizes given for leg\(s\) \['z'\]"):
        Network.from_einsum("ij->i", "A", sizes={"z": 2})
    with pytest.raises(ValueError, match="ellipsis"):
        Network.from_einsum("...i->i", "A")
    with pytest.raises(ValueError, match="unknown tensor 'Q'"):
        Network.from_einsum("ij->i", "A").legs("Q")
    with pytest.raises(ValueError, match="unknown size symbol 'q'"):
        Network.from_einsum("ij->i", "A").substitute({"q": 2})


def test_index_pattern_kind_output_size_concrete_and_symbolic():
    assert IndexPattern(7, 3, 2, 1, 1, 1).output_size == 4
    i = sympy.Symbol("I", integer=True, positive=True)
    symbolic = IndexPattern(i, 3, 1, 1, 1, 1).output_size
    assert sympy.simplify(symbolic - i) == 0
    assert tnconv.IndexPattern is IndexPattern
