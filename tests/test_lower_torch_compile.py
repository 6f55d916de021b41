"""Programs are plain torch calls: ``torch.compile(fullgraph=True)`` traces them without a graph break."""

from __future__ import annotations

import pytest
import torch
from support.networks import assert_close, dense_value, random_operands

import tnconv
from tnconv.ir.network import Network
from tnconv.programs.compile import compile


def native_conv() -> tuple[Network, dict]:
    return tnconv.conv_network("forward", (2, 4, 8, 7), (3, 2), 6, stride=2, padding=((1, 0), 1), groups=2,
                               simplify=False), {}


def structured_input_vjp() -> tuple[Network, dict]:
    """Reflect padding: an index-map gather and a scatter-add fold on the einsum path."""
    net = tnconv.conv_network("input_vjp", (2, 3, 7), (3,), 4, padding=2, padding_mode="reflect", simplify=False)
    return net, {"memory_limit": 10**9}


def sliced_chain() -> tuple[Network, dict]:
    net = Network.from_einsum("ab,bc,cd->ad", "A", "B", "C", sizes={"a": 16, "b": 2, "c": 16, "d": 3})
    return net, {"memory_limit": 64}


@pytest.mark.parametrize("build", [native_conv, structured_input_vjp, sliced_chain])
def test_fullgraph_trace(build):
    torch._dynamo.reset()
    net, options = build()
    program = compile(net, **options)
    operands = random_operands(net)
    traced = torch.compile(program, backend="eager", fullgraph=True)
    assert_close(traced(*operands), dense_value(net, operands))
    explanation = torch._dynamo.explain(program)(*operands)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
