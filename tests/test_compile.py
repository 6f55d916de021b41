"""Compiling networks: random networks equal torch.einsum, long chains, caching, and bad input."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv import Data, Network, Tensor
from tnconv.ir.sizes import leg_symbol
from tnconv.ir.views import Unflatten

LEGS = string.ascii_lowercase[:10]


@st.composite
def random_networks(draw: st.DrawFn) -> tuple[Network, list[torch.Tensor]]:
    """2-7 operands over a small leg pool: hyperedges, repeated legs, outer products, scalars, size-1 legs."""
    pool = draw(st.lists(st.sampled_from(LEGS), min_size=1, max_size=7, unique=True))
    sizes = {leg: draw(st.integers(1, 4)) for leg in pool}
    count = draw(st.integers(2, 7))
    operands = [tuple(draw(st.lists(st.sampled_from(pool), max_size=4))) for _ in range(count)]
    used = sorted({leg for legs in operands for leg in legs})
    output = draw(st.permutations(used).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: p[:n])))
    names = [f"T{n}" for n in range(count)]
    equation = ",".join("".join(legs) for legs in operands) + "->" + "".join(output)
    net = Network.from_einsum(equation, *names, sizes={leg: sizes[leg] for leg in used})
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    tensors = [torch.randn([sizes[l] for l in legs], generator=generator, dtype=torch.float64) for legs in operands]
    return net, tensors


@settings(max_examples=150, deadline=None)
@given(random_networks(), st.sampled_from(["auto", "greedy", "optimal", "dp", "branch-2"]))
def test_random_networks_equal_torch_einsum(case, optimize):
    net, tensors = case
    program = tnconv.compile(net, optimize=optimize)
    expected = torch.einsum(net.to_einsum(), *tensors)
    result = program(*tensors)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)
    assert program.flops >= 0 and program.largest_intermediate >= 1


@settings(max_examples=40, deadline=None)
@given(random_networks())
def test_operands_by_name_equal_positional(case):
    net, tensors = case
    program = tnconv.compile(net)
    torch.testing.assert_close(program(**dict(zip(program.operands, tensors))), program(*tensors))


def test_repeated_operand_binds_once():
    gram = Network.from_einsum("ij,kj->ik", "X", "X", sizes={"i": 3, "j": 4, "k": 3})
    x = torch.randn(3, 4, dtype=torch.float64)
    program = tnconv.compile(gram)
    assert program.operands == ("X",)
    torch.testing.assert_close(program(x), x @ x.T)


def test_chain_of_sixty_matrices_has_61_legs():
    legs = [f"l{n}" for n in range(61)]
    equation = ", ".join(f"{a} {b}" for a, b in zip(legs, legs[1:])) + f" -> {legs[0]} {legs[-1]}"
    sizes = {leg: 2 + n % 3 for n, leg in enumerate(legs)}
    net = Network.from_einsum(equation, *[f"M{n}" for n in range(60)], sizes=sizes)
    assert len(net.all_legs) == 61
    assert len(set(net.to_einsum().replace(",", "").replace("->", ""))) == 61
    generator = torch.Generator().manual_seed(0)
    matrices = [torch.randn(sizes[a], sizes[b], generator=generator, dtype=torch.float64) for a, b in zip(legs, legs[1:])]
    expected = torch.linalg.multi_dot(matrices)
    torch.testing.assert_close(tnconv.compile(net, optimize="greedy")(*matrices), expected, rtol=1e-10, atol=1e-10)


def test_compile_is_cached_by_structure_and_sizes():
    first = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    again = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    other = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 5}))
    assert first is again
    assert other is not first


def test_structured_tensors_are_built_by_the_program():
    net = Network(
        [tnconv.Tensor("X", ("i", "j")), tnconv.Tensor("I", ("j", "k"), tnconv.Identity()), tnconv.Tensor("1", ("k",), tnconv.Ones())],
        output=("i",),
        sizes={"i": 3, "j": 4, "k": 4},
    )
    program = tnconv.compile(net)
    assert program.operands == ("X",)
    x = torch.randn(3, 4, dtype=torch.float32)
    result = program(x)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, x.sum(1))


def test_symbolic_network_plans_from_operand_shapes():
    program = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B"))
    assert not program.concrete
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(program(a, b), a @ b)
    concrete = program.specialize(a, b)
    assert concrete.concrete and concrete.flops > 0
    sizes = {leg_symbol(leg): size for leg, size in zip("ijk", (2, 3, 5))}
    assert program.flops.subs(sizes) == concrete.flops  # the cost formula of the one (matrix product) path
    with pytest.raises(ValueError, match="axis 0"):
        program(a, torch.randn(4, 5, dtype=torch.float64))


def test_views_reshape_and_slice_operands():
    from tnconv.ir.views import Slice, Unflatten

    net = Network(
        [tnconv.Tensor("X", ("a", "b", "c"), tnconv.Data((Unflatten(0, (2, 3)), Slice(2, 1, 2, 2, 5))))],
        output=("a", "b", "c"),
        sizes={"a": 2, "b": 3, "c": 2},
    )
    x = torch.randn(6, 5)
    torch.testing.assert_close(tnconv.compile(net)(x), x.reshape(2, 3, 5)[:, :, 1:4:2])


# --- bad input ---------------------------------------------------------------------------------
def test_equation_operand_count_must_match_names():
    with pytest.raises(ValueError, match="2 operand.*3 name"):
        Network.from_einsum("ij,jk->ik", "A", "B", "C")


def test_output_leg_must_be_on_a_tensor():
    with pytest.raises(ValueError, match=r"output leg\(s\) \['z'\]"):
        Network.from_einsum("ij,jk->iz", "A", "B")


def test_missing_and_extra_operands_at_call_time():
    program = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 2, "k": 2}))
    a = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"missing operand\(s\) \['B'\]"):
        program(a)
    with pytest.raises(ValueError, match=r"unexpected operand\(s\) \['C'\]"):
        program(a, B=a, C=a)
    with pytest.raises(ValueError, match="both by position and by name"):
        program(a, a, A=a)
    with pytest.raises(TypeError, match="'B' must be a torch.Tensor"):
        program(a, [[1.0, 2.0]])


def test_shape_mismatch_names_tensor_leg_and_both_sizes():
    program = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    with pytest.raises(ValueError, match=r"operand 'B' axis 1 \(leg k\) has size 5 but leg k has size 4"):
        program(torch.ones(2, 3), torch.ones(3, 5))
    with pytest.raises(ValueError, match="'A' has 3 dims"):
        program(torch.ones(2, 3, 1), torch.ones(3, 4))


def test_dtype_and_device_mismatch():
    program = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    with pytest.raises(ValueError, match="dtype.*'B' is torch.float64"):
        program(torch.ones(2, 3), torch.ones(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="device.*'B' is on meta"):
        program(torch.ones(2, 3), torch.ones(3, 4, device="meta"))


def test_compile_verifies_occurrences_of_one_operand():
    # one tensor X bound to legs (i, j) and (k, j): i and k must agree (3 != 4 gave a (3, 3) result before)
    net = Network.from_einsum("ij,kj->ik", "X", "X", sizes={"i": 3, "j": 5, "k": 4})
    with pytest.raises(ValueError, match=r"operand 'X'.*position 1 has legs \(k, j\).*leg k of size 4 against leg i of size 3"):
        tnconv.compile(net)
    viewed = Network(
        [Tensor("X", ("g", "c", "j"), Data((Unflatten(0, (2, 3)),))), Tensor("X", ("a", "j"))], ("c",),
        {"g": 2, "c": 3, "j": 4, "a": 5},
    )
    with pytest.raises(ValueError, match=r"operand 'X'.*legs \(a, j\).*axis 0 is leg a of size 5 against leg \(g\*c\) of size 6"):
        tnconv.compile(viewed)


def test_every_occurrence_of_a_symbolic_operand_binds_the_one_tensor():
    gram = tnconv.compile(Network.from_einsum("ij,kj->ik", "X", "X"))  # i, k symbolic: both read off X
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(gram(x), x @ x.T)
    chained = tnconv.compile(Network.from_einsum("ij,kj,kl->il", "X", "X", "Y", sizes={"i": 3}))
    with pytest.raises(ValueError, match=r"operand 'Y' axis 0 \(leg k of its occurrence at position 2\) has size 4 but k = 3"):
        chained(torch.randn(3, 5), torch.randn(4, 2))
    y = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(chained(x, y), x @ x.T @ y)


def test_bool_operands_are_refused_by_name():
    program = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4}))
    with pytest.raises(TypeError, match="operand 'A' has dtype torch.bool"):
        program(torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool))
    assert program(torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 4, dtype=torch.int64)).eq(3).all()


def test_network_output_must_be_a_sequence_of_legs():
    with pytest.raises(TypeError, match="output must be a sequence of leg names, got None"):
        Network([Tensor("A", ("i",))], output=None)
    assert Network([Tensor("A", ("i", "j"))], output=(leg for leg in "ji")).output == ("j", "i")


def test_bad_optimize_and_net_arguments():
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
    with pytest.raises(ValueError, match="optimize must be True, False, None, an opt_einsum path name.*'fastest'"):
        tnconv.compile(net, optimize="fastest")
    with pytest.raises(TypeError, match="optimize must be"):
        tnconv.compile(net, optimize=3)
    with pytest.raises(TypeError, match="net must be a tnconv.Network"):
        tnconv.compile("ij,jk->ik")


def test_explicit_path_is_used():
    net = Network.from_einsum("ij,jk,kl->il", "A", "B", "C", sizes={"i": 2, "j": 3, "k": 4, "l": 5})
    program = tnconv.compile(net, optimize=[(1, 2), (0, 1)])
    assert program.path == ((1, 2), (0, 1))
    a, b, c = (torch.randn(s, dtype=torch.float64) for s in [(2, 3), (3, 4), (4, 5)])
    torch.testing.assert_close(program(a, b, c), a @ b @ c)
