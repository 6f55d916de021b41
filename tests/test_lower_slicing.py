"""Memory limits: contractions sliced over legs keep intermediates under the budget, same value."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.networks import assert_close, dense_value, random_operands

import tnconv
from tnconv.ir.network import Network
from tnconv.programs.compile import compile


def chain() -> Network:
    """A 4-matrix chain whose intermediates are 64 x 64."""
    return Network.from_einsum("ab,bc,cd,de->ae", "A", "B", "C", "D", sizes={"a": 64, "b": 3, "c": 64, "d": 3, "e": 64})


def test_unsliced_program_exceeds_the_budget_used_below():
    assert compile(chain()).largest_intermediate == 64 * 64


@settings(max_examples=12)
@given(st.sampled_from((4096, 2048, 700, 200, 64)))
def test_chain_sliced_under_budget(limit):
    net = chain()
    program = compile(net, memory_limit=limit)
    assert program.largest_intermediate <= limit
    assert ("sliced" in program.strategy) == (limit < 64 * 64)
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_sum_over_a_sliced_contracted_leg():
    """Only a contracted leg can shrink the intermediate: partial results are summed."""
    net = Network.from_einsum("nb,nc->bc", "X", "Y", sizes={"n": 50, "b": 4, "c": 4})
    gram = Network.from_einsum("nbk,nck->bc", "X", "Y", sizes={"n": 50, "b": 4, "c": 4, "k": 9})
    for network in (net, gram):
        program = compile(network, memory_limit=16)
        operands = random_operands(network)
        assert_close(program(*operands), dense_value(network, operands))
    big = Network.from_einsum("nb,nc,nd->bcd", "X", "Y", "Z", sizes={"n": 30, "b": 5, "c": 5, "d": 5})
    program = compile(big, memory_limit=40)
    assert program.largest_intermediate <= 40 and "sliced" in program.strategy
    operands = random_operands(big)
    assert_close(program(*operands), dense_value(big, operands))


def test_conv_unfold_sliced_over_batch_and_channels():
    """The im2col intermediate of a conv on the einsum path is split; index-pattern legs are never sliced."""
    net = tnconv.conv_network("forward", (4, 6, 10, 10), (3, 3), 8, padding=1, simplify=False)
    whole = compile(net, memory_limit=10**9)
    limit = whole.largest_intermediate // 5
    program = compile(net, memory_limit=limit)
    assert program.largest_intermediate <= limit and program.strategy.startswith("einsum+sliced(")
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


def test_impossible_budget_is_a_value_error():
    net = tnconv.conv_network("unfold", (1, 1, 9), (3,), simplify=False)
    with pytest.raises(ValueError, match="memory_limit=2"):
        compile(net, memory_limit=2)


def test_memory_limit_is_validated():
    with pytest.raises(TypeError, match="memory_limit"):
        compile(chain(), memory_limit=1.5)
    with pytest.raises(TypeError, match="memory_limit"):
        compile(chain(), memory_limit=True)
    with pytest.raises(ValueError, match="memory_limit must be >= 1"):
        compile(chain(), memory_limit=0)


def test_limited_programs_are_cached_per_limit():
    assert compile(chain(), memory_limit=300) is compile(chain(), memory_limit=300)
    assert compile(chain(), memory_limit=300) is not compile(chain(), memory_limit=301)


def test_symbolic_network_keeps_its_limit():
    net = Network.from_einsum("ab,bc,cd->ad", "A", "B", "C")
    program = compile(net, memory_limit=100)
    a, b, c = torch.randn(30, 2, dtype=torch.float64), torch.randn(2, 30, dtype=torch.float64), torch.randn(30, 5, dtype=torch.float64)
    concrete = program.specialize(a, b, c)
    assert concrete.memory_limit == 100 and concrete.largest_intermediate <= 100
    assert_close(program(a, b, c), a @ b @ c)
