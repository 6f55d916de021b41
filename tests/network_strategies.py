"""Hypothesis strategies for random tensor networks and conv layers, and a dense reference evaluator.

- ``networks()``: small random networks of data tensors (hyperedges, repeated
  legs on a tensor, size-1 legs, legs on one tensor only, empty outputs).
- ``conv_cases()``: unpadded-leaning conv hyper-parameters where the
  simplifier's rules apply often (stride > kernel, kernel == stride,
  dilation, kernels covering the input), plus padded ones where they must not.
- ``conv_net(case, op)``: the unsimplified conv network of a case.
- ``dense_value(net, operands)``: the network's value computed the naive way
  (views applied, structured tensors materialised densely, one
  ``opt_einsum.contract``), independent of tnconv's lowering.

Import as ``from network_strategies import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import opt_einsum
import torch
from hypothesis import strategies as st

import tnconv
from tnconv.ir.network import Network, Tensor
from tnconv.backends.torch.constants import dense
from tnconv.backends.torch.views import apply_views
from tnconv.ir.views import source_shape

LEGS = ("a", "b", "c", "d", "e", "f")


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


def operands(net: Network, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Random operands for every data tensor of ``net`` (by name), in the shapes users pass."""
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for entry in net.entries:
        if entry.structured or entry.name in result:
            continue
        shape = source_shape(entry.kind.views, [net.size(leg) for leg in entry.legs])
        result[entry.name] = torch.randn(tuple(int(s) for s in shape), generator=generator, dtype=dtype)
    return result


def dense_value(net: Network, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``net``'s value the naive way: views applied, structured tensors dense, one contraction."""
    letters = {leg: opt_einsum.get_symbol(n) for n, leg in enumerate(net.sizes)}
    tensors = []
    dtype = next(iter(values.values())).dtype if values else torch.float64
    for entry in net.entries:
        shape = tuple(int(net.size(leg)) for leg in entry.legs)
        if entry.structured:
            tensors.append(dense(entry.kind, shape, dtype, torch.device("cpu")))
        else:
            tensors.append(apply_views(entry.kind.views, values[entry.name]))
    equation = ",".join("".join(letters[l] for l in e.legs) for e in net.entries)
    equation += "->" + "".join(letters[l] for l in net.output)
    return torch.as_tensor(opt_einsum.contract(equation, *tensors, backend="torch"))


def sum_value(value, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``dense_value`` of a network or of each term of a ``NetworkSum``, added."""
    if isinstance(value, Network):
        return dense_value(value, values)
    return sum(dense_value(term, values) for term in value.terms)


@dataclass(frozen=True)
class ConvCase:
    """A conv layer: ``x_shape = (N, C_in, *I)``; per-dim tuples; symmetric-or-not ``padding`` pairs."""

    x_shape: tuple[int, ...]
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def output_size(self) -> tuple[int, ...]:
        return tuple(
            (i + l + r - d * (k - 1) - 1) // s + 1
            for i, (l, r), k, s, d in zip(self.x_shape[2:], self.padding, self.kernel, self.stride, self.dilation)
        )

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.x_shape[1] // self.groups, *self.kernel)

    def direct_flops(self) -> int:
        """``2 * N * C_out * C_in/G * prod(K) * prod(O)``: a direct convolution's multiply-adds, times two."""
        total = 2 * self.x_shape[0] * self.out_channels * (self.x_shape[1] // self.groups)
        for k, o in zip(self.kernel, self.output_size):
            total *= k * o
        return total


@st.composite
def conv_cases(draw: st.DrawFn, max_dims: int = 2, padded: bool | None = None) -> ConvCase:
    """Small conv layers; ``padded=False`` gives P = 0, ``True`` gives some padding, None either."""
    dims = draw(st.integers(1, max_dims))
    groups = draw(st.integers(1, 2))
    kernel, stride, dilation, padding, sizes = [], [], [], [], []
    for _ in range(dims):
        k, s, d = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.sampled_from((1, 1, 2)))
        pad = draw(st.booleans()) if padded is None else padded
        pair = (draw(st.integers(0, 2)), draw(st.integers(0, 2))) if pad else (0, 0)
        lowest = max(1, d * (k - 1) + 1 - sum(pair))
        shape = draw(st.sampled_from(("any", "exact", "covers")))
        if shape == "exact" and pair == (0, 0):  # I == S*O: the blocked rules fire
            size = s * draw(st.integers(1, 3))
            size = max(size, s * ((lowest + s - 1) // s))
        elif shape == "covers":
            size = lowest
        else:
            size = draw(st.integers(lowest, lowest + 6))
        kernel.append(k), stride.append(s), dilation.append(d), padding.append(pair), sizes.append(size)
    batch = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    return ConvCase((batch, c_in, *sizes), c_out, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups)


def conv_net(case: ConvCase, op: str = "forward") -> Network:
    """The unsimplified network of routine ``op`` for ``case``."""
    return tnconv.conv_network(
        op,
        case.x_shape,
        case.kernel,
        out_channels=case.out_channels,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        simplify=False,
    )

