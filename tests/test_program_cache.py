"""The program cache is bounded by the bytes of the constants its programs hold; clear_caches frees everything."""

from __future__ import annotations

import functools
import gc
import importlib
import pkgutil
import weakref

import pytest
import torch

import tnconv
from tnconv import IndexPattern, Network, Tensor
from tnconv.programs.cache import PROGRAMS


def dense_pattern_network(size: int) -> Network:
    """``X[n, i] Pi[k, o, i]`` compiled along an explicit path, so that ``Pi`` is built densely (a constant)."""
    pattern = Tensor("Pi", ("k", "o", "i"), IndexPattern(size, 3))
    return Network((Tensor("X", ("n", "i")), pattern), ("n", "k", "o"), {"n": 2, "k": 3, "o": size - 2, "i": size})


def run(size: int) -> tuple[tnconv.Program, weakref.ref]:
    """Compile and call the network of ``size``; the program and a weak reference to its dense pattern."""
    program = tnconv.compile(dense_pattern_network(size), optimize=((0, 1),))
    x = torch.randn(2, size, dtype=torch.float64)
    reference = torch.einsum("ni,koi->nko", x, tnconv.index_pattern(size, 3, dtype=torch.float64))
    torch.testing.assert_close(program(x), reference)
    (constants,) = program.runner.constants.values()
    (dense,) = constants
    assert dense.shape == (3, size - 2, size)
    return program, weakref.ref(dense)


@pytest.fixture
def empty_cache(monkeypatch):
    tnconv.clear_caches()
    yield PROGRAMS
    tnconv.clear_caches()


def test_programs_report_the_bytes_of_their_constants(empty_cache):
    program, _ = run(40)
    assert program.constant_bytes == 3 * 38 * 40 * 8
    assert empty_cache.total_bytes == program.constant_bytes
    program(torch.randn(2, 40, dtype=torch.float32))  # a second dtype: a second set of constants
    assert program.constant_bytes == 3 * 38 * 40 * (8 + 4) == empty_cache.total_bytes


def test_a_byte_budget_evicts_the_least_recently_used_program(empty_cache, monkeypatch):
    one = 3 * 38 * 40 * 8
    monkeypatch.setattr(empty_cache, "max_bytes", 2 * one + one // 2)  # room for two of the three
    first, first_dense = run(40)
    second, _ = run(41)
    assert tnconv.compile(dense_pattern_network(40), optimize=((0, 1),)) is first  # used: now the most recent
    third, _ = run(42)
    gc.collect()
    assert empty_cache.total_bytes <= empty_cache.max_bytes
    assert first_dense() is not None  # recently used, kept
    assert second.constant_bytes == 0  # evicted, although this test still holds the program
    assert tnconv.compile(dense_pattern_network(41), optimize=((0, 1),)) is not second
    assert third.constant_bytes > 0


def test_an_evicted_program_still_runs_and_returns_to_the_cache(empty_cache, monkeypatch):
    monkeypatch.setattr(empty_cache, "max_bytes", 1)  # only the most recent program keeps its constants
    first, first_dense = run(30)
    run(31)
    gc.collect()
    assert first_dense() is None and first.constant_bytes == 0
    x = torch.randn(2, 30, dtype=torch.float64)
    torch.testing.assert_close(first(x), torch.einsum("ni,koi->nko", x, tnconv.index_pattern(30, 3, dtype=x.dtype)))
    assert tnconv.compile(dense_pattern_network(30), optimize=((0, 1),)) is first


def test_the_cache_is_bounded_by_count_too(empty_cache, monkeypatch):
    monkeypatch.setattr(empty_cache, "max_programs", 3)
    for size in range(10, 16):
        run(size)
    assert len(empty_cache) == 3


def test_clear_caches_frees_programs_constants_and_networks(empty_cache):
    program, dense = run(50)
    layer = dict(input_shape=(1, 2, 6, 6), kernel_size=3, out_channels=2, stride=2)
    net = tnconv.conv_network("forward", **layer)
    tnconv.compile(net)
    derived = tnconv.conv_network("kfac_reduce", (1, 2, 6, 6), 3, stride=2)
    tnconv.curvature.kfac_reduce_factor(torch.randn(1, 2, 6, 6), 3, stride=2)
    assert tnconv.conv_network("forward", **layer) is net  # cached
    cached = [weakref.ref(net), weakref.ref(derived), weakref.ref(program)]
    del program, net, derived
    tnconv.clear_caches()
    gc.collect()
    assert dense() is None and [ref() for ref in cached] == [None, None, None]
    assert len(empty_cache) == 0 and empty_cache.total_bytes == 0


def test_clear_caches_releases_constants_of_programs_callers_still_hold(empty_cache):
    program, dense = run(20)
    tnconv.clear_caches()
    gc.collect()
    assert dense() is None
    x = torch.randn(2, 20, dtype=torch.float64)
    torch.testing.assert_close(program(x), torch.einsum("ni,koi->nko", x, tnconv.index_pattern(20, 3, dtype=x.dtype)))


def test_clear_caches_is_public():
    assert "clear_caches" in tnconv.__all__
    assert tnconv.clear_caches() is None


def test_clear_caches_empties_the_functional_cache_through_its_clear_cache():
    """``tnconv.functional.clear_cache`` registered itself when the functional module was loaded."""
    from tnconv import routine_cache

    tnconv.functional.conv(torch.randn(1, 2, 5), torch.randn(3, 2, 2))
    assert routine_cache._BY_ARGUMENTS
    tnconv.clear_caches()
    assert not routine_cache._BY_ARGUMENTS


def test_every_cache_of_the_package_registers_itself():
    """Every ``functools.lru_cache`` function and every program cache of every module of the package is emptied by
    ``clear_caches`` (a cache made without ``tnconv.caches.cached`` or ``register`` fails here)."""
    from tnconv.caches import registered
    from tnconv.programs.cache import ProgramCache

    found = []
    for module in pkgutil.walk_packages(tnconv.__path__, "tnconv."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if isinstance(value, functools._lru_cache_wrapper) and value.__module__ == module.name:
                found.append((f"{module.name}.{name}", value.cache_clear))
            elif isinstance(value, ProgramCache) and name.isupper():
                found.append((f"{module.name}.{name}", value.clear))
    clears = registered()
    assert len(found) >= 16
    assert [name for name, clear in found if clear not in clears] == []


def test_clear_caches_empties_the_proofs_over_symbolic_sizes():
    import sympy

    from tnconv.ir import sizes

    n = sympy.Symbol("n", integer=True, positive=True)
    assert sizes.proven_le(n, n + 1)
    assert sizes._proven.cache_info().currsize > 0
    tnconv.clear_caches()
    assert sizes._proven.cache_info().currsize == 0
