"""The routine cache behind tnconv.functional: bounded by ``CACHE_LIMIT``, emptied by ``clear_cache``, thread-safe."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading

import torch
import torch.nn.functional as F

import tnconv.functional as TF
from tnconv import routine_cache


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def counting_compiles(monkeypatch) -> list:
    """Record every network the cache compiles (one per configuration it sets up)."""
    compiled: list = []
    original = routine_cache.compile_network

    def recording(net):
        compiled.append(net)
        return original(net)

    monkeypatch.setattr(routine_cache, "compile_network", recording)
    return compiled


def test_cache_holds_at_most_cache_limit_configurations(monkeypatch):
    TF.clear_cache()
    monkeypatch.setattr(routine_cache, "CACHE_LIMIT", 2)
    compiled = counting_compiles(monkeypatch)
    w = randn(3, 2, 2)
    a, b, c = (randn(1, 2, size, seed=size) for size in (5, 6, 7))
    for x in (a, b, a):
        TF.conv(x, w)
    assert len(compiled) == 2  # a's second call is a hit
    TF.conv(c, w)  # the cache is full: the oldest configuration (a) goes
    TF.conv(a, w)
    assert len(compiled) == 4
    TF.conv(c, w)  # kept: only b went when a came back
    assert len(compiled) == 4
    torch.testing.assert_close(TF.conv(b, w), F.conv1d(b, w), rtol=1e-10, atol=1e-10)
    assert len(compiled) == 5


def test_clear_cache_makes_calls_set_up_again(monkeypatch):
    compiled = counting_compiles(monkeypatch)
    x, w = randn(2, 3, 6), randn(4, 3, 3)
    TF.conv(x, w, padding=1)
    before = len(compiled)
    TF.conv(x, w, padding=1)
    assert len(compiled) == before
    TF.clear_cache()
    torch.testing.assert_close(TF.conv(x, w, padding=1), F.conv1d(x, w, padding=1), rtol=1e-10, atol=1e-10)
    assert len(compiled) == before + 1


def test_clear_cache_keeps_compiled_functions_working():
    torch._dynamo.reset()
    x, w = randn(2, 3, 6, 5), randn(4, 3, 3, 2)
    compiled = torch.compile(lambda x: TF.conv(x, w, padding=1), fullgraph=True, backend="eager")
    expected = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-10, atol=1e-10)
    TF.clear_cache()
    torch.testing.assert_close(compiled(x), expected, rtol=1e-10, atol=1e-10)
    torch._dynamo.reset()
    torch.testing.assert_close(compiled(x), expected, rtol=1e-10, atol=1e-10)  # traced afresh after the clear


def test_routines_are_safe_under_threads_while_the_cache_overflows(monkeypatch):
    """8 threads over more configurations than the cache holds, switching threads as often as Python can.

    Set-ups are made cheap (memoised networks) and torch runs on the calling thread, so that
    the cache overflows thousands of times with threads switching in between; the race this
    guards against (an entry dropped by another thread between its set-up and its read) showed
    as AttributeError in every run of this test before the fix.
    """
    monkeypatch.setattr(routine_cache, "CACHE_LIMIT", 1)
    monkeypatch.setattr(
        routine_cache, "routine_network", functools.lru_cache(maxsize=None)(routine_cache.routine_network)
    )
    monkeypatch.setattr(
        routine_cache, "compile_network", functools.lru_cache(maxsize=None)(routine_cache.compile_network)
    )
    w = randn(2, 1, 3)
    xs = [randn(1, 1, size, seed=size) for size in range(4, 8)]
    expected = [F.conv1d(x, w, padding=1) for x in xs]
    failures: list[str] = []

    def work(thread: int) -> None:
        try:
            for call in range(400):
                which = (7 * thread + call) % len(xs)
                assert torch.equal(TF.conv(xs[which], w, padding=1), expected[which])
                if call % 100 == thread:
                    TF.clear_cache()
        except Exception as error:  # noqa: BLE001 - reported below, with the thread's failure
            failures.append(repr(error))

    interval, torch_threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(1e-6)
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        torch.set_num_threads(torch_threads)
    assert not failures, failures[:3]


def test_setup_is_marked_as_torch_marks_a_constant_result():
    """``_setup`` carries the mark ``torch.compiler.assume_constant_result`` sets (set by hand, to keep
    ``torch._dynamo`` out of ``import tnconv``): if torch changes how it marks, this fails."""

    def probe() -> None:
        pass

    marked = torch.compiler.assume_constant_result(probe)
    added = set(vars(marked))
    assert added, "assume_constant_result no longer marks the function by an attribute"
    assert {name: getattr(routine_cache._setup, name, None) for name in added} == vars(marked)


def test_importing_tnconv_does_not_import_dynamo():
    code = "import sys, tnconv, tnconv.curvature, tnconv.nn, tnconv.functional; print('torch._dynamo' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
