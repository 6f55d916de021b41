"""vmap: a batched network equals the per-sample results stacked; errors name the offending argument."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import conv_cases, conv_net
from support.networks import dense_value, networks, operands

import tnconv
from tnconv.ir.network import Network
from tnconv.passes.differentiate import differentiate
from tnconv.passes.simplify import simplify
from tnconv.passes.vmap import vmap


def _check_stacking(net: Network, names: list[str], batch: int, seed: int) -> None:
    batched = vmap(net, "batch", batch, names)
    tnconv.verify(batched)
    assert batched.output == ("batch", *net.output)
    single = operands(net, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    stacked = {
        name: torch.randn((batch, *value.shape), generator=generator, dtype=value.dtype) if name in names else value
        for name, value in single.items()
    }
    expected = torch.stack(
        [dense_value(net, {k: v[b] if k in names else v for k, v in stacked.items()}) for b in range(batch)]
    )
    got = tnconv.compile(batched)(**{name: stacked[name] for name in batched.operands})
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense_value(simplify(batched), stacked), expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=50, deadline=None)
@given(networks(), st.data(), st.integers(1, 3), st.integers(0, 1000))
def test_vmap_equals_stacking(net: Network, data: st.DataObject, batch: int, seed: int) -> None:
    names = data.draw(st.lists(st.sampled_from(net.tensors), min_size=1, unique=True))
    _check_stacking(net, names, batch, seed)


@settings(max_examples=30, deadline=None)
@given(conv_cases(), st.sampled_from((["X"], ["W"], ["X", "W"])), st.booleans(), st.integers(0, 1000))
def test_vmap_conv_over_views(case, names, simplified, seed) -> None:
    """Batched X / W are passed with a leading axis; their views (channels, and the
    slices / windows / pads of simplified networks) shift by one axis."""
    net = conv_net(case)
    _check_stacking(simplify(net) if simplified else net, names, 2, seed)


def test_vmap_of_a_network_sum_batches_each_term() -> None:
    gram = differentiate(Network.from_einsum("ni,mi->nm", "X", "X", sizes={"n": 2, "m": 2, "i": 3}), "X")
    batched = vmap(gram, "b", 2, "X")
    assert all(term.output[0] == "b" for term in batched.terms)
    x = torch.randn(2, 2, 3, dtype=torch.float64)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda t: t @ t.T, x[b]) for b in range(2)])
    torch.testing.assert_close(tnconv.compile(batched)(x), expected, rtol=1e-10, atol=1e-10)


def test_vmap_errors() -> None:
    net = tnconv.conv_network("forward", (1, 2, 5), 3, out_channels=2, simplify=False)
    with pytest.raises(ValueError, match="leg 'n' already exists"):
        vmap(net, "n", 2, "X")
    with pytest.raises(ValueError, match="unknown tensor 'Y'"):
        vmap(net, "b", 2, ["Y"])
    with pytest.raises(ValueError, match="'Pi1' is a structured index_pattern"):
        vmap(net, "b", 2, ["Pi1"])
    with pytest.raises(ValueError, match="at least one tensor"):
        vmap(net, "b", 2, [])
    with pytest.raises(TypeError, match="size of leg 'b'"):
        vmap(net, "b", 2.5, "X")
    with pytest.raises(ValueError, match="size of leg 'b' must be >= 0"):
        vmap(net, "b", -1, "X")
