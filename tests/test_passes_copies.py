"""contract_copies: two copies of a network contracted over given output legs equal the value squared and summed
over those legs, computed directly; sums expand with their cross terms; errors name the argument."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import conv_cases, conv_net
from support.networks import dense_value, networks, operands

import tnconv
from tnconv.ir.network import Network
from tnconv.passes import NetworkSum, contract_copies, contract_copies_traced, differentiate, simplify

TOL = dict(rtol=1e-10, atol=1e-10)


def squared_over(value: torch.Tensor, output: tuple[str, ...], legs: tuple[str, ...]) -> torch.Tensor:
    """The direct computation: ``value`` (legs ``output``) squared elementwise, summed over ``legs``."""
    squares = value.square()
    return squares.sum(tuple(output.index(leg) for leg in legs)) if legs else squares  # sum(()) would sum all


@settings(max_examples=60, deadline=None)
@given(networks(), st.data(), st.integers(0, 1000))
def test_contract_copies_equals_the_square_summed_over_the_legs(net: Network, data: st.DataObject, seed: int) -> None:
    legs = tuple(data.draw(st.lists(st.sampled_from(net.output), unique=True))) if net.output else ()
    product = contract_copies(net, legs)
    tnconv.verify(product)
    assert product.output == tuple(leg for leg in net.output if leg not in legs)
    values = operands(net, seed)
    expected = squared_over(dense_value(net, values), net.output, legs)
    torch.testing.assert_close(dense_value(product, values), expected, **TOL)
    torch.testing.assert_close(dense_value(simplify(product), values), expected, **TOL)


@settings(max_examples=25, deadline=None)
@given(conv_cases(), st.booleans(), st.integers(0, 1000))
def test_per_sample_squared_norms_of_a_conv_weight_gradient(case, keep_batch: bool, seed: int) -> None:
    """A conv layer's per-sample weight gradients ``(n, g, c_out, c_in, k..)``, contracted over the weight legs
    (each sample's squared norm) or over the batch (the squares summed over samples), simplified and compiled."""
    gradient = conv_net(case, "per_sample_grad")
    values = operands(gradient, seed)
    legs = gradient.output[1:] if keep_batch else ("n",)
    product = contract_copies(gradient, legs)
    expected = squared_over(dense_value(gradient, values), gradient.output, legs)
    got = tnconv.compile(simplify(product))(**{name: values[name] for name in product.operands})
    torch.testing.assert_close(got, expected, **TOL)


def test_a_sum_contracts_every_pair_of_terms() -> None:
    """``(d/dX of X X^T)`` is a sum of two terms; its square has four (the cross terms too)."""
    gram = differentiate(Network.from_einsum("ni,mi->nm", "X", "X", sizes={"n": 2, "m": 2, "i": 3}), "X")
    assert isinstance(gram, NetworkSum) and len(gram) == 2
    product, trace = contract_copies_traced(gram, ("m", "i"))
    assert isinstance(product, NetworkSum) and len(product) == 4 and product.output == ("n", "n_2")
    x = torch.randn(2, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: t @ t.T, x)  # (n, m, n_2, i)
    torch.testing.assert_close(tnconv.compile(product)(X=x), jacobian.square().sum((1, 3)), **TOL)
    (record,) = trace
    assert record.rule == "contract_copies" and record.legs == ("m", "i")


def test_the_trace_names_the_legs_and_the_renamed_inner_legs() -> None:
    net = Network.from_einsum("nk,kw->nw", "A", "B", sizes={"n": 2, "k": 3, "w": 4})
    product, trace = contract_copies_traced(net, "w")
    assert product.tensors == ("A", "B", "A", "B") and product.legs(2) == ("n", "k_2")
    assert str(trace) == (
        "1. contract_copies: A, B [kept legs (n) join both copies] -> multiply two copies, summed over (w), "
        "output (n); the second copy's inner legs are k_2"
    )
    named_like = Network.from_einsum("nk,kw->nw", "F", "F_2", sizes={"n": 2, "k": 3, "w": 4})
    assert contract_copies(named_like, "w").tensors == ("F", "F_2", "F", "F_2")  # operands keep their names


def test_contract_copies_errors() -> None:
    net = Network.from_einsum("nk,kw->nw", "A", "B", sizes={"n": 2, "k": 3, "w": 4})
    with pytest.raises(ValueError, match=r"legs: 'k' is not an output leg of the network \(output \('n', 'w'\)\)"):
        contract_copies(net, "k")
    with pytest.raises(ValueError, match=r"legs must be distinct, got \('w', 'w'\)"):
        contract_copies(net, ("w", "w"))
    with pytest.raises(TypeError, match="legs must be leg names"):
        contract_copies(net, (1,))
    with pytest.raises(TypeError, match="net must be a tnconv.Network"):
        contract_copies("nk,kw->nw", "w")
