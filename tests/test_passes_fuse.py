"""fuse and sub-tensor access (tie, trace, restrict): values against independent references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import conv_cases, conv_net
from support.networks import dense_value, networks, operands

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Identity
from tnconv.passes.differentiate import NetworkSum, differentiate
from tnconv.passes.fuse import fuse
from tnconv.passes.simplify import simplify
from tnconv.passes.subtensor import restrict, tie, trace


@st.composite
def inner_networks(draw: st.DrawFn, shape: tuple[int, ...]) -> Network:
    """A random network of tensors S0.. whose output has sizes ``shape``; internal legs clash with outer names."""
    outputs = [f"u{n}" for n in range(len(shape))]
    internal = ["a", "b"]
    sizes = {**dict(zip(outputs, shape)), "a": draw(st.integers(1, 3)), "b": draw(st.integers(1, 3))}
    entries = [Tensor("S0", tuple(outputs))]
    for number in range(1, draw(st.integers(1, 3))):
        entries.append(Tensor(f"S{number}", tuple(draw(st.lists(st.sampled_from(outputs + internal), max_size=3)))))
    if draw(st.booleans()) and len(entries) > 1:
        entries[0] = Tensor("S0", tuple(outputs) + ("a",))
    present = {leg for e in entries for leg in e.legs}
    return Network(entries, outputs, {leg: size for leg, size in sizes.items() if leg in present})


@settings(max_examples=60, deadline=None)
@given(networks(), st.data(), st.integers(0, 1000))
def test_fuse_equals_substituting_the_inner_value(outer: Network, data: st.DataObject, seed: int) -> None:
    name = data.draw(st.sampled_from(outer.tensors))
    inner = data.draw(inner_networks(tuple(outer.size(leg) for leg in outer.legs(name))))
    fused = fuse(outer, name, inner)
    tnconv.verify(fused)
    assert fused.output == outer.output
    values = {**operands(outer, seed), **operands(inner, seed + 1)}
    replaced = {**values, name: dense_value(inner, values)}
    expected = dense_value(outer, replaced)
    torch.testing.assert_close(dense_value(fused, values), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense_value(simplify(fused), values), expected, rtol=1e-10, atol=1e-10)


def test_fuse_renames_clashing_legs_binds_symbolic_sizes_and_takes_diagonals() -> None:
    outer = Network.from_einsum("ij,jj->i", "A", "T", sizes={"i": 2, "j": 3})
    inner = Network.from_einsum("jk,kl->jl", "B", "C")  # symbolic sizes, internal leg k; j clashes
    fused = fuse(outer, "T", inner)
    assert fused.tensors == ("A", "B", "C") and fused.legs("B") == ("j", "k") and fused.legs("C") == ("k", "j")
    assert fused.size("j") == 3 and str(fused.size("k")) == "k"
    clash = Network.from_einsum("ia,aj->ij", "B", "C", sizes={"i": 3, "a": 2, "j": 3})
    fused = fuse(Network.from_einsum("ij,ja->ia", "T", "D", sizes={"i": 3, "j": 3, "a": 4}), "T", clash)
    assert fused.legs("B") == ("i", "a_2") and fused.size("a_2") == 2 and fused.size("a") == 4


def test_fuse_with_sums_is_linear() -> None:
    gram = differentiate(Network.from_einsum("ni,mi->nm", "X", "X", sizes={"n": 2, "m": 2, "i": 3}), "X")
    outer = Network.from_einsum("nmab,ab->nm", "G", "V", sizes={"n": 2, "m": 2, "a": 2, "b": 3})
    fused = fuse(outer, "G", gram)
    assert isinstance(fused, NetworkSum) and len(fused) == 2
    x, v = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    expected = x @ v.T + v @ x.T  # the Gram matrix's directional derivative along V
    torch.testing.assert_close(tnconv.compile(fused)(X=x, V=v), expected, rtol=1e-10, atol=1e-10)


def test_fuse_of_a_sum_into_several_occurrences_expands_the_product() -> None:
    """Fusing ``A + B`` into ``P . P`` gives ``(A + B) . (A + B)``: the cross terms A.B and B.A too, not only
    A.A + B.B (each occurrence takes each term)."""
    a, b = (Network.from_einsum("i->i", name, sizes={"i": 3}) for name in "AB")
    outer = Network.from_einsum("i,i,j->j", "P", "P", "C", sizes={"i": 3, "j": 2})
    fused = fuse(outer, "P", NetworkSum([a, b]))
    assert isinstance(fused, NetworkSum) and len(fused) == 4
    tensors = sorted(term.tensors for term in fused)
    assert tensors == [("A", "A", "C"), ("A", "B", "C"), ("B", "A", "C"), ("B", "B", "C")]
    x, y, c = (torch.randn(n, dtype=torch.float64) for n in (3, 3, 2))
    expected = ((x + y) @ (x + y)) * c
    torch.testing.assert_close(tnconv.compile(fused)(A=x, B=y, C=c), expected, rtol=1e-10, atol=1e-10)
    named_like = fuse(outer, "P", NetworkSum([a, Network.from_einsum("i->i", "P", sizes={"i": 3})]))
    assert len(named_like) == 4  # an inner tensor named like the fused one is an operand, not fused again
    torch.testing.assert_close(tnconv.compile(named_like)(A=x, P=y, C=c), expected, rtol=1e-10, atol=1e-10)


def test_fuse_errors() -> None:
    outer = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    with pytest.raises(ValueError, match="unknown tensor 'C'"):
        fuse(outer, "C", outer)
    with pytest.raises(ValueError, match="inner has 1 output legs"):
        fuse(outer, "A", Network.from_einsum("ij->i", "Z", sizes={"i": 2, "j": 2}))
    with pytest.raises(ValueError, match="inner output leg 'b' has size 5 but tensor 'A' leg 'j' has size 3"):
        fuse(outer, "A", Network.from_einsum("ab->ab", "Z", sizes={"a": 2, "b": 5}))
    with pytest.raises(TypeError, match="inner must be"):
        fuse(outer, "A", "ij")


# --- sub-tensor access -----------------------------------------------------------------


def _partners(net: Network, leg: str) -> list[str]:
    """The other legs of ``net`` as large as ``leg`` (those it can be tied to)."""
    return [other for other in net.all_legs if other != leg and net.size(other) == net.size(leg)]


def _tieable(net: Network) -> list[str]:
    """The legs of ``net`` that have a partner to be tied to."""
    return [leg for leg in net.all_legs if _partners(net, leg)]


@settings(max_examples=60, deadline=None)
@given(networks().filter(_tieable), st.data(), st.integers(0, 1000))
def test_tie_equals_inserting_a_delta(net: Network, data: st.DataObject, seed: int) -> None:
    a = data.draw(st.sampled_from(_tieable(net)))
    b = data.draw(st.sampled_from(_partners(net, a)))
    tied = tie(net, (a, b))
    tnconv.verify(tied)
    output = list(dict.fromkeys(a if leg == b else leg for leg in net.output))  # at the first position of a or b
    reference = Network([*net.entries, Tensor("delta", (a, b), Identity())], output, net.sizes)
    values = operands(net, seed)
    torch.testing.assert_close(dense_value(tied, values), dense_value(reference, values), rtol=1e-10, atol=1e-10)


def test_trace_of_a_matrix_product() -> None:
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 2, "k": 3})
    a, b = torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    traced = trace(net, "i", "k")
    assert traced.output == ()
    torch.testing.assert_close(tnconv.compile(traced)(a, b), torch.trace(a @ b), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="'j' is not in the output"):
        trace(net, "i", "j")
    with pytest.raises(ValueError, match="cannot tie legs of different sizes"):
        tie(net, ("i", "j"))


def _restrict_reference(net: Network, leg: str, indices: range) -> tuple[Network, torch.Tensor]:
    """``net`` with a 0/1 selection operand ``R[leg_sel, leg]`` joined (``leg`` -> ``leg_sel`` in the output)."""
    size = int(net.size(leg))
    selection = torch.zeros(len(indices), size, dtype=torch.float64)
    selection[torch.arange(len(indices)), torch.tensor(list(indices))] = 1
    output = [f"{leg}_sel" if l == leg else l for l in net.output]
    reference = Network([*net.entries, Tensor("R", (f"{leg}_sel", leg))], output, {**net.sizes, f"{leg}_sel": len(indices)})
    return reference, selection


def _check_restrict(net: Network, leg: str, indices: range, seed: int) -> Network:
    restricted = restrict(net, leg, indices)
    tnconv.verify(restricted)
    values = operands(net, seed)
    reference, selection = _restrict_reference(net, leg, indices)
    expected = dense_value(reference, {**values, "R": selection})
    torch.testing.assert_close(dense_value(restricted, values), expected, rtol=1e-10, atol=1e-10)
    simple = simplify(restricted)
    got = tnconv.compile(simple)(**{name: values[name] for name in simple.operands})
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    return restricted


@st.composite
def _ranges(draw: st.DrawFn, size: int) -> range:
    start = draw(st.integers(0, size - 1))
    step = draw(st.integers(1, 3))
    count = draw(st.integers(1, len(range(start, size, step))))
    return range(start, start + step * (count - 1) + 1, step)


@settings(max_examples=50, deadline=None)
@given(networks().filter(lambda net: net.all_legs), st.data(), st.integers(0, 1000))
def test_restrict_random_networks(net: Network, data: st.DataObject, seed: int) -> None:
    leg = data.draw(st.sampled_from(net.all_legs))
    _check_restrict(net, leg, data.draw(_ranges(int(net.size(leg)))), seed)


@settings(max_examples=50, deadline=None)
@given(conv_cases(), st.sampled_from(("c_in", "i1", "o1", "k1", "n")), st.data(), st.integers(0, 1000))
def test_restrict_conv_legs(case, leg, data, seed) -> None:
    """Channel and pixel dropout: data legs get slices; Pi's o/k legs a sliced pattern; its i leg a selection."""
    net = conv_net(case, data.draw(st.sampled_from(("forward", "weight_vjp"))))
    _check_restrict(net, leg, data.draw(_ranges(int(net.size(leg)))), seed)


def test_restrict_errors_and_no_op() -> None:
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 4, "k": 2})
    assert restrict(net, "j", slice(None)) is net
    with pytest.raises(ValueError, match="select nothing"):
        restrict(net, "j", slice(4, None))
    with pytest.raises(ValueError, match="positive step"):
        restrict(net, "j", slice(None, None, -1))
    with pytest.raises(ValueError, match="out of range"):
        restrict(net, "j", range(2, 6))
    with pytest.raises(TypeError, match="slice or range"):
        restrict(net, "j", [0, 1])
    with pytest.raises(ValueError, match="unknown leg 'z'"):
        restrict(net, "z", slice(1))
