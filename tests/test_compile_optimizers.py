"""``tnconv.compile(net, optimize=...)`` with optimizer objects: opt_einsum ``PathOptimizer`` s and cotengra's.

Programs compiled with an optimizer object are cached by the object (identity),
never by an equal-looking other object, and run the path the object chose.
"""

from __future__ import annotations

import cotengra
import opt_einsum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.networks import assert_close, dense_value, random_operands
from opt_einsum.paths import PathOptimizer

import tnconv
from tnconv import Network

pytestmark = pytest.mark.filterwarnings("ignore:Couldn't import `kahypar`")  # cotengra's optional dependency


class Reversed(PathOptimizer):
    """Contracts the last two tensors first, every step (records the contractions it was asked for)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, inputs, output, size_dict, memory_limit=None):
        self.calls.append(len(inputs))
        return [(len(inputs) - 2 - n, len(inputs) - 1 - n) for n in range(len(inputs) - 1)]


class Incomplete(PathOptimizer):
    """Stops after one pairwise step (a broken optimizer)."""

    def __call__(self, inputs, output, size_dict, memory_limit=None):
        return [(0, 1)]


def chain(count: int) -> Network:
    """A matrix chain ``A0 A1 ... A{count-1}`` with sizes 2, 3, ..."""
    letters = "abcdefgh"[: count + 1]
    equation = ",".join(letters[n : n + 2] for n in range(count)) + f"->{letters[0]}{letters[-1]}"
    return Network.from_einsum(equation, *(f"A{n}" for n in range(count)),
                               sizes={leg: n + 2 for n, leg in enumerate(letters)})


def test_the_path_is_the_optimizers():
    optimizer = Reversed()
    program = tnconv.compile(chain(4), optimize=optimizer)
    assert optimizer.calls == [4] and program.path == ((2, 3), (1, 2), (0, 1))
    operands = random_operands(chain(4))
    assert_close(program(*operands), dense_value(chain(4), operands))


def test_programs_are_cached_by_the_optimizer_object():
    net = chain(3)
    first, second = opt_einsum.DynamicProgramming(), opt_einsum.DynamicProgramming()
    program = tnconv.compile(net, optimize=first)
    assert tnconv.compile(net, optimize=first) is program
    assert tnconv.compile(net, optimize=second) is not program
    assert tnconv.compile(net, optimize="dp") is not program


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.sampled_from(["dp", "cotengra"]))
def test_optimizer_objects_contract_chains_exactly(count, which):
    optimizer = opt_einsum.DynamicProgramming() if which == "dp" else cotengra.HyperOptimizer(max_repeats=4)
    net = chain(count)
    program = tnconv.compile(net, optimize=optimizer)
    assert len(program.path) == count - 1
    operands = random_operands(net)
    assert_close(program(*operands), dense_value(net, operands))


@pytest.mark.parametrize("op", ["forward", "weight_vjp", "kfac_expand", "kfac_reduce", "per_sample_grad"])
@pytest.mark.parametrize("which", ["dp", "cotengra"])
def test_optimizer_objects_plan_conv_routines(op, which):
    """Native kernels still run where they match; the einsum plans run the object's path."""
    optimizer = opt_einsum.DynamicProgramming() if which == "dp" else cotengra.HyperOptimizer(max_repeats=4)
    net = tnconv.conv_network(op, (2, 4, 7, 6), (3, 2), 6, stride=2, padding=1, groups=2)
    program = tnconv.compile(net, optimize=optimizer)
    auto = tnconv.compile(net)
    assert program.strategy == auto.strategy
    operands = random_operands(net, seed=1)
    assert_close(program(*operands), auto(*operands))
    assert_close(program.run_einsum_plan(*operands), dense_value(net, operands))


def test_memory_limit_with_an_optimizer_object():
    net = tnconv.conv_network("kfac_expand", (4, 3, 9, 8), 3, padding=1)
    limit = tnconv.compile(net).einsum_plan.largest_intermediate // 3  # the plan that slices (not the pair Gram)
    program = tnconv.compile(net, optimize=opt_einsum.DynamicProgramming(), memory_limit=limit)
    assert "sliced" in program.strategy and program.largest_intermediate <= limit
    operands = random_operands(net, seed=2)
    assert_close(program(*operands), dense_value(net, operands))


def test_a_path_that_leaves_tensors_is_refused():
    with pytest.raises(ValueError, match="Incomplete.* could not plan a b,b c,c d -> a d.*contracts these 3 tensors"):
        tnconv.compile(chain(3), optimize=Incomplete())


def test_other_objects_are_refused_by_name():
    with pytest.raises(TypeError, match="opt_einsum PathOptimizer.*got <object"):
        tnconv.compile(chain(2), optimize=object())
    with pytest.raises(TypeError, match="PathOptimizer"):
        tnconv.compile(chain(2), optimize=opt_einsum.DynamicProgramming)  # the class, not an instance

