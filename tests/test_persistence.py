"""Networks, sums of networks and programs survive pickle, deepcopy and torch.save (multiprocessing, checkpoints)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import tnconv
from tnconv import Network
from tnconv.lower.optimize import normalize_optimize

GRAM = Network.from_einsum("ij,kj->ik", "X", "X", sizes={"i": 3, "j": 4, "k": 3})


def networks() -> list[Network]:
    """Concrete and symbolic networks, with structured kinds (patterns, pattern sums) and data views."""
    return [
        GRAM,
        Network.from_einsum("n c i, k o i -> n c k o", "X", "Y"),  # symbolic sizes
        tnconv.conv_network("forward", (2, 4, 7, 6), (3, 2), 6, stride=2, padding=1, groups=2),
        tnconv.conv_network("kfac_reduce", (2, 3, 8, 8), 3, padding=(1, 2)),
    ]


def torch_roundtrip(value: object) -> object:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("roundtrip", [lambda v: pickle.loads(pickle.dumps(v)), copy.deepcopy, torch_roundtrip])
@pytest.mark.parametrize("number", range(len(networks())))
def test_network_equals_its_copy_and_hashes_alike(roundtrip, number):
    net = networks()[number]
    again = roundtrip(net)
    assert isinstance(again, Network)
    assert again == net and hash(again) == hash(net)
    assert again.output == net.output and dict(again.sizes) == dict(net.sizes) and again.entries == net.entries
    assert again.symbols == net.symbols
    assert again.graph.number_of_edges() == net.graph.number_of_edges()


def test_network_sum_survives_pickle():
    total = tnconv.differentiate(GRAM, "X")
    assert isinstance(total, tnconv.NetworkSum)
    again = pickle.loads(pickle.dumps(total))
    assert again == total and hash(again) == hash(total) and copy.deepcopy(total) == total


def operands(net: Network) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = {"X": (3, 4), "A": (3, 5), "B": (5, 4)}
    return [torch.randn(shapes[name], generator=generator, dtype=torch.float64) for name in net.operands]


PROGRAMS = {
    "gram": (GRAM, "auto", None),
    "symbolic": (Network.from_einsum("ij,jk->ik", "A", "B"), "greedy", None),
    "sliced": (Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 3, "j": 5, "k": 4}), "auto", 6),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_unpickles_through_the_compile_cache_and_runs(name):
    net, optimize, limit = PROGRAMS[name]
    program = tnconv.compile(net, optimize, memory_limit=limit)
    tensors = operands(net)
    expected = program(*tensors)
    data = pickle.dumps(program)
    assert pickle.loads(data) is program  # the cached program: compiled once per structure
    assert copy.deepcopy(program) is program
    tnconv.clear_caches()  # as in a fresh process: rebuilt from (network, optimize, memory_limit)
    rebuilt = pickle.loads(data)
    assert rebuilt is not program
    assert (rebuilt.network, rebuilt.optimize, rebuilt.memory_limit) == (net, normalize_optimize(optimize), limit)
    assert rebuilt.strategy == program.strategy
    torch.testing.assert_close(rebuilt(*tensors), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch_roundtrip(rebuilt)(*tensors), expected, rtol=0, atol=0)


def test_sum_program_survives_pickle():
    program = tnconv.compile(tnconv.differentiate(GRAM, "X"))
    x = operands(GRAM)[0]
    expected = program(x)
    data = pickle.dumps(program)
    tnconv.clear_caches()
    rebuilt = pickle.loads(data)
    assert rebuilt is not program and rebuilt.network == program.network
    torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)
