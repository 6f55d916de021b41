"""Plans are cached by a network's structure up to renaming of legs and tensors (``tnconv.programs.plans``).

A renamed network (other leg and tensor names, the same kinds, sizes and order) reuses the plan made for the
first one: the planner runs once, and the plan is written in the renamed network's names (its strategy and
path table name its own legs and tensors), with the same values. A network of another structure plans anew.
"""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
import torch

import tnconv
from tnconv.ir.canonical import canonical, named
from tnconv.ir.network import Network, Tensor
from tnconv.programs import plans
from tnconv.programs.program import default_target


def renamed(net: Network, suffix: str) -> Network:
    """``net`` with every leg and tensor name followed by ``suffix``."""
    entries = [Tensor(e.name + suffix, tuple(leg + suffix for leg in e.legs), e.kind) for e in net.entries]
    return Network(entries, [leg + suffix for leg in net.output], {leg + suffix: s for leg, s in net.sizes.items()})


def planning() -> mock._patch:
    return mock.patch.object(plans, "plan", wraps=plans.plan)


def test_a_renamed_network_reuses_its_plan() -> None:
    net = tnconv.conv_network("kfac_expand", (2, 3, 9, 9), 3, stride=2, padding=1, simplify=False)
    other = renamed(net, "_b")
    tnconv.clear_caches()
    with planning() as spy:
        first = tnconv.compile(net, memory_limit=500)
        second = tnconv.compile(other, memory_limit=500)
    assert spy.call_count == 1
    assert first is not second and second.network == other
    assert first.strategy.startswith("einsum+sliced(")
    assert second.strategy == re.sub(r"([a-z_0-9]+):", r"\1_b:", first.strategy)  # sliced(n_b:2,c_in_b:3,...)
    legs = {leg for info in second.path_info for leg in info.equation.replace(",", " ").split() if leg != "->"}
    assert legs and all(leg.endswith("_b") for leg in legs), legs
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(second(x), first(x))


def test_the_plan_is_the_first_networks_in_the_other_names() -> None:
    net = Network.from_einsum("ij,jk,kl->il", "A", "B", "C", sizes={"i": 3, "j": 40, "k": 2, "l": 50})
    other = Network.from_einsum("ab,bc,cd->ad", "P", "Q", "R", sizes={"a": 3, "b": 40, "c": 2, "d": 50})
    tnconv.clear_caches()
    with planning() as spy:
        first, second = tnconv.compile(net), tnconv.compile(other)
        operands = [np.random.default_rng(n).standard_normal(shape) for n, shape in enumerate(((3, 40), (40, 2), (2, 50)))]
        np.testing.assert_allclose(second(*operands), first(*operands))  # the numpy backend's plan: cached too
        tnconv.compile(other)(*operands)
    assert spy.call_count == 2  # once for the torch backend, once for numpy
    assert second.path == first.path
    assert [info.equation for info in second.path_info] == [
        info.equation.translate(str.maketrans("ijkl", "abcd")) for info in first.path_info
    ]
    form = canonical(net)
    assert canonical(other).network == form.network
    assert named(plans._plan(form.network, first.optimize, None, default_target()), form.names) == first.plan


def test_another_structure_plans_anew() -> None:
    net = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 4, "k": 5})
    tnconv.clear_caches()
    with planning() as spy:
        tnconv.compile(net)
        tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 4, "k": 6}))  # a size
        tnconv.compile(Network.from_einsum("ij,kj->ik", "A", "B", sizes={"i": 3, "j": 4, "k": 5}))  # a leg's place
        tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "A", sizes={"i": 4, "j": 4, "k": 4}))  # one operand
        tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 4, "j": 4, "k": 4}))
    assert spy.call_count == 5


def test_a_plan_that_fails_names_the_networks_own_legs() -> None:
    net = Network.from_einsum("ij,jk->ik", "A", "B")  # symbolic sizes: no plan
    program = tnconv.compile(net)
    try:
        program.symbolic_plan  # planned at representative sizes: works
        plans.planned(net, program.optimize, None, default_target())
    except ValueError as error:
        assert "i" in str(error) and "\u2063" not in str(error)
    else:
        raise AssertionError("a symbolic network has no plan")
