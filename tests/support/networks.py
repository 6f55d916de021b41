"""Random tensor networks, random operands, and the dense oracle every lowering and pass test compares with.

- ``networks()``: small random networks of data tensors (hyperedges, repeated
  legs on a tensor, size-1 legs, legs on one tensor only, empty outputs).
- ``random_operands(net)``: float64 operands in ``net.operands`` order, in the
  shapes a program takes; ``operands(net)``: the same by name.
- ``dense_value(net, operands)``: the value a network must have, computed the
  naive way: its index patterns, pattern sums, identities and ones materialized
  as dense tensors, its data operands seen through their views, one
  ``opt_einsum.contract``; independent of tnconv's planner.
- ``sum_value``: ``dense_value`` of a network or of each term of a ``NetworkSum``, added.
- ``two_operand_pair()``: a pattern pair (two equal index patterns sharing their summed ``o``)
  between two different operands, with no batch leg.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import opt_einsum
import torch
from hypothesis import strategies as st

from tnconv.backends.torch.constants import dense
from tnconv.backends.torch.views import apply_views
from tnconv.ir.network import Network, Tensor
from tnconv.ir.networksum import NetworkSum
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.lower.bind import operand_shapes

LEGS = ("a", "b", "c", "d", "e", "f")

Operands = Union[Mapping[str, torch.Tensor], Sequence[torch.Tensor]]


@st.composite
def networks(draw: st.DrawFn, max_tensors: int = 4, min_tensors: int = 1, max_size: int = 3) -> Network:
    """A random concrete network of data tensors ``T0, T1, ...`` (each name once)."""
    legs = LEGS[: draw(st.integers(1, len(LEGS)))]
    sizes = {leg: draw(st.integers(1, max_size)) for leg in legs}
    count = draw(st.integers(min_tensors, max_tensors))
    entries = []
    for number in range(count):
        chosen = draw(st.lists(st.sampled_from(legs), min_size=0, max_size=3))
        entries.append(Tensor(f"T{number}", tuple(chosen)))
    present = list(dict.fromkeys(leg for entry in entries for leg in entry.legs))
    output = draw(st.permutations(present)) if present else []
    output = output[: draw(st.integers(0, len(output)))]
    return Network(entries, output, {leg: sizes[leg] for leg in present})


def random_operands(net: Network, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Random operands in ``net.operands`` order."""
    generator = torch.Generator().manual_seed(seed)
    shapes = operand_shapes(net)
    return [torch.randn(tuple(int(s) for s in shapes[name]), generator=generator, dtype=dtype) for name in net.operands]


def operands(net: Network, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """``random_operands`` by operand name."""
    return dict(zip(net.operands, random_operands(net, seed, dtype)))


def dense_value(net: Network, values: Operands) -> torch.Tensor:
    """``net``'s value the naive way: views applied, structured tensors dense, one contraction.

    ``values``: the operands by name, or in ``net.operands`` order.
    """
    by_name = values if isinstance(values, Mapping) else dict(zip(net.operands, values))
    first = next(iter(by_name.values()), None)
    dtype, device = (first.dtype, first.device) if first is not None else (torch.float64, torch.device("cpu"))
    tensors = []
    for entry in net.entries:
        if entry.structured:
            shape = tuple(int(net.size(leg)) for leg in entry.legs)
            tensors.append(dense(entry.kind, shape, dtype, device))
        else:
            tensors.append(apply_views(entry.views, by_name[entry.name]))
    return torch.as_tensor(opt_einsum.contract(net.to_einsum(), *tensors, backend="torch"))


def sum_value(value: Network | NetworkSum, values: Operands) -> torch.Tensor:
    """``dense_value`` of a network or of each term of a ``NetworkSum``, added."""
    if isinstance(value, Network):
        return dense_value(value, values)
    return sum(dense_value(term, values) for term in value.terms)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal shapes, and equal values to float64 rounding."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def two_operand_pair() -> Network:
    """``sum_o A[c, i] Pi[k, o, i] Pi[l, o, j] B[d, j]``: the pair of a pattern of 3 taps, stride 1, padding (2, 0),
    dilation 2 (7 pixels, 5 outputs) between two operands of 2 and 3 channels."""
    pattern = IndexPattern(7, 3, 1, 2, 0, 2)
    return Network(
        [Tensor("A", ("c", "i"), Data()), Tensor("P", ("k", "o", "i"), pattern), Tensor("P", ("l", "o", "j"), pattern),
         Tensor("B", ("d", "j"), Data())], output=("l", "d", "k", "c"),
        sizes={"c": 2, "d": 3, "i": 7, "j": 7, "k": 3, "l": 3, "o": 5},
    )
