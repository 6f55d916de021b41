"""differentiate: f(T) = <df/dT, T>, product rule and second derivatives vs torch.autograd, NetworkSum programs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.networks import dense_value, networks, operands, sum_value

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data
from tnconv.ir.views import Slice
from tnconv.programs.sum import SumProgram
from tnconv.passes.differentiate import NetworkSum, differentiate
from tnconv.passes.fuse import fuse
from tnconv.passes.simplify import simplify, simplify_traced


@st.composite
def networks_with_repeats(draw: st.DrawFn, min_extra: int = 0) -> Network:
    """A random network in which operand ``T`` occurs 1..3 times (legs of matching sizes), plus others."""
    base = draw(networks(max_tensors=3))
    legs = list(base.all_legs) or ["a"]
    sizes = {leg: base.size(leg) if leg in base.sizes else 2 for leg in legs}
    pattern = draw(st.lists(st.sampled_from(legs), min_size=0, max_size=3))
    occurrences = [Tensor("T", tuple(pattern))]
    for _ in range(draw(st.integers(min_extra, 2))):
        slots = tuple(draw(st.sampled_from([l for l in legs if sizes[l] == sizes[leg]])) for leg in pattern)
        occurrences.append(Tensor("T", slots))
    entries = list(base.entries)
    for occurrence in occurrences:
        entries.insert(draw(st.integers(0, len(entries))), occurrence)
    present = {leg for entry in entries for leg in entry.legs}
    return Network(entries, base.output, {leg: size for leg, size in sizes.items() if leg in present})


def _check_all(value) -> None:
    for term in value.terms if isinstance(value, NetworkSum) else (value,):
        tnconv.verify(term)


def _jacobian(net: Network, values: dict, name: str) -> torch.Tensor:
    others = {k: v for k, v in values.items() if k != name}
    return torch.autograd.functional.jacobian(lambda t: dense_value(net, {**others, name: t}), values[name])


@settings(max_examples=60, deadline=None)
@given(networks(), st.integers(0, 1000))
def test_linear_network_equals_its_derivative_applied_to_the_tensor(net: Network, seed: int) -> None:
    """Each T occurs once, so f is linear in T: f(T) = <df/dT, T> (contracting the new output legs)."""
    values = operands(net, seed)
    name = net.tensors[seed % len(net.tensors)]
    derivative = differentiate(net, name)
    assert isinstance(derivative, Network)
    tnconv.verify(derivative)
    assert derivative.output[: len(net.output)] == net.output
    assert len(derivative.output) == len(net.output) + len(net.legs(name))
    d = dense_value(derivative, values)
    t = values[name]
    contracted = torch.tensordot(d, t, dims=t.ndim) if t.ndim else d * t
    torch.testing.assert_close(contracted, dense_value(net, values), rtol=1e-10, atol=1e-10)
    got = tnconv.compile(derivative)(**{k: values[k] for k in derivative.operands})
    torch.testing.assert_close(got, d, rtol=1e-10, atol=1e-10, check_dtype=bool(derivative.operands))


@settings(max_examples=50, deadline=None)
@given(networks_with_repeats(), st.integers(0, 1000))
def test_product_rule_matches_autograd(net: Network, seed: int) -> None:
    values = operands(net, seed)
    derivative = differentiate(net, "T")
    _check_all(derivative)
    assert isinstance(derivative, NetworkSum) == (len(net.positions("T")) > 1)
    expected = _jacobian(net, values, "T")
    torch.testing.assert_close(sum_value(derivative, values), expected, rtol=1e-10, atol=1e-10)
    got = tnconv.compile(derivative)(**{k: values[k] for k in derivative.operands}) if derivative.operands else None
    if got is not None:
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sum_value(simplify(derivative), values), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(networks_with_repeats(min_extra=1), st.integers(0, 1000))
def test_second_derivative_matches_autograd(net: Network, seed: int) -> None:
    values = operands(net, seed)
    second = differentiate(differentiate(net, "T"), "T")
    _check_all(second)
    others = {k: v for k, v in values.items() if k != "T"}

    def gradient(t):
        return torch.autograd.functional.jacobian(lambda u: dense_value(net, {**others, "T": u}), t, create_graph=True)

    expected = torch.autograd.functional.jacobian(gradient, values["T"])
    torch.testing.assert_close(sum_value(second, values), expected, rtol=1e-10, atol=1e-10)


def test_gram_matrix_product_rule_and_program() -> None:
    net = Network.from_einsum("ni,mi->nm", "X", "X", sizes={"n": 3, "m": 3, "i": 4})
    derivative = differentiate(net, "X")
    assert isinstance(derivative, NetworkSum) and len(derivative) == 2
    assert derivative.output == ("n", "m", "n_2", "i")
    x = torch.randn(3, 4, dtype=torch.float64)
    program = tnconv.compile(derivative)
    assert isinstance(program, SumProgram) and tnconv.compile(derivative) is program
    assert program.operands == ("X",) and len(program.path) == 2 and " + " in program.equation
    assert program.flops >= sum(term.flops for term in program.terms)
    expected = torch.autograd.functional.jacobian(lambda t: t @ t.T, x)
    torch.testing.assert_close(program(x), expected, rtol=1e-10, atol=1e-10)
    hessian = differentiate(derivative, "X")
    assert hessian.output == ("n", "m", "n_2", "i", "m_2", "i_2") and hessian.operands == ()


def test_conv_input_derivative_has_the_tensor_legs_after_views() -> None:
    """d conv / d X has X's legs (n, g, c_in, i1): reshape them to the operand layout (N, C_in, I)."""
    net = tnconv.conv_network("forward", (2, 4, 6), 3, out_channels=2, stride=2, padding=1, groups=2, simplify=False)
    derivative = differentiate(net, "X")
    assert derivative.output == ("n", "g", "c_out", "o1", "n_2", "g_2", "c_in", "i1")
    x, w = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)
    value = tnconv.compile(derivative)(W=w)
    expected = torch.autograd.functional.jacobian(
        lambda t: torch.nn.functional.conv1d(t, w, stride=2, padding=1, groups=2), x
    )
    torch.testing.assert_close(value.reshape(expected.shape), expected, rtol=1e-10, atol=1e-10)


def test_derivative_of_the_only_tensor_is_a_constant() -> None:
    net = Network.from_einsum("ij->i", "A", sizes={"i": 2, "j": 3})
    derivative = differentiate(net, "A")
    assert derivative.output == ("i", "i_2", "j") and not derivative.operands
    expected = torch.einsum("ab,c->abc", torch.eye(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(dense_value(derivative, {}), expected)
    scalar = differentiate(Network([Tensor("s", ())], ()), "s")
    assert scalar.output == () and float(dense_value(scalar, {})) == 1.0


def test_differentiate_errors() -> None:
    net = Network.from_einsum("ij,jk->ik", "A", "B")
    with pytest.raises(ValueError, match="unknown tensor 'C'"):
        differentiate(net, "C")
    with pytest.raises(TypeError, match="name must be"):
        differentiate(net, 3)
    with pytest.raises(TypeError, match="net must be"):
        differentiate("ij->i", "A")
    mixed = Network(
        [Tensor("A", ("i",)), Tensor("A", ("j",), Data((Slice(0, 0, 1, 2, 2),)))], ("i", "j"), {"i": 2, "j": 2}
    )
    with pytest.raises(ValueError, match="occurrences of tensor 'A' differ"):
        differentiate(mixed, "A")
    linear = differentiate(net, "A")
    with pytest.raises(ValueError, match="unknown tensor 'A'"):
        differentiate(linear, "A")


def test_simplify_and_memory_limited_compile_of_a_network_sum() -> None:
    net = tnconv.conv_network("forward", (2, 3, 8), 2, out_channels=2, stride=2, simplify=False)
    flat = net.replace(output=("n", "c_out", "o1"))  # G == 1: the size-1 leg g is summed
    square = fuse(Network.from_einsum("nco,nco->", "Y", "Y", sizes={"n": 2, "c": 2, "o": 4}), "Y", flat)
    hessian = differentiate(differentiate(square, "W"), "W")  # 2 * J^T J of the linear map W -> Y
    simple, trace = simplify_traced(hessian)
    assert isinstance(simple, NetworkSum) and trace.rules().count("dense") == 2 * len(simple.terms)
    assert simplify(simple) is simple
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda w: torch.nn.functional.conv1d(x, w, stride=2), torch.zeros(2, 3, 2, dtype=torch.float64))
    flat = jacobian.reshape(2 * 2 * 4, 2 * 3 * 2)
    expected = 2 * (flat.T @ flat).reshape(2, 3, 2, 2, 3, 2)
    for value in (hessian, simple):
        program = tnconv.compile(value, memory_limit=10**6)
        got = program(X=x).reshape(expected.shape)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

