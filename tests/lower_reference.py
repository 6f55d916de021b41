"""Dense references for the lowering tests: every structured tensor built, one opt_einsum contraction.

``dense(net, operands)`` is the value a network must have: its index patterns,
pattern sums, identities and ones materialized as dense tensors, its data
operands seen through their views, contracted by ``opt_einsum.contract``.
``random_operands(net)`` draws float64 operands of the shapes a program takes.
"""

from __future__ import annotations

import opt_einsum
import torch

from tnconv.ir.network import Network
from tnconv.backends.torch.constants import dense as build
from tnconv.backends.torch.views import apply_views
from tnconv.lower.bind import operand_shapes


def random_operands(net: Network, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Random operands in ``net.operands`` order."""
    generator = torch.Generator().manual_seed(seed)
    shapes = operand_shapes(net)
    return [torch.randn(tuple(int(s) for s in shapes[name]), generator=generator, dtype=dtype) for name in net.operands]


def dense(net: Network, operands: list[torch.Tensor]) -> torch.Tensor:
    """The network's value with every structured tensor materialized densely."""
    tensors = []
    for entry in net.entries:
        if entry.structured:
            shape = tuple(int(net.size(leg)) for leg in entry.legs)
            tensors.append(build(entry.kind, shape, operands[0].dtype, operands[0].device))
        else:
            tensors.append(apply_views(entry.kind.views, operands[net.operands.index(entry.name)]))
    return opt_einsum.contract(net.to_einsum(), *tensors, backend="torch")


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
