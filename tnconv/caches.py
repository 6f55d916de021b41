"""``tnconv.clear_caches()``: empty every cache tnconv keeps and free the memory its entries hold.

tnconv caches work that repeats: compiled programs (``tnconv.compile``, bounded
by the bytes of their constants, see ``tnconv.programs.cache``), plans by
structure (``tnconv.programs.plans``), compiled sums of networks, the routines
of ``tnconv.functional``, simplified networks (``tnconv.simplify``), proofs over
symbolic sizes, and the networks of conv routines (``conv_network`` and the
curvature routines). Each cache is bounded; clearing them all at once frees
their memory now, e.g. between experiments or before measuring memory. They
refill on use, so clearing never changes a result.

A cache registers itself where it is made: a function cached with ``cached``
(``functools.lru_cache`` that registers its ``cache_clear``), any other cache
with ``register(clear)``. This module imports nothing of tnconv, so that every
layer can register; a module never imported has registered nothing and holds
nothing.
"""

from __future__ import annotations

from functools import _lru_cache_wrapper, lru_cache
from typing import Callable, TypeVar

T = TypeVar("T")
Clear = TypeVar("Clear", bound=Callable[[], None])

_CLEARS: list[Callable[[], None]] = []
"""The registered caches' clear functions (appended to as modules are imported, never removed)."""


def register(clear: Clear) -> Clear:
    """Have ``clear_caches`` call ``clear`` (which empties a cache); returns it."""
    _CLEARS.append(clear)
    return clear


def cached(maxsize: int) -> Callable[[Callable[..., T]], _lru_cache_wrapper[T]]:
    """``functools.lru_cache(maxsize=maxsize)``, registered: ``clear_caches`` empties it."""

    def decorate(function: Callable[..., T]) -> _lru_cache_wrapper[T]:
        wrapper = lru_cache(maxsize=maxsize)(function)
        register(wrapper.cache_clear)
        return wrapper

    return decorate


def registered() -> tuple[Callable[[], None], ...]:
    """The clear functions registered so far."""
    return tuple(_CLEARS)


def clear_caches() -> None:
    """Empty tnconv's caches: programs (their structured constants are released), plans, routines, networks.

    Programs that callers still hold keep working: they rebuild their constants
    on their next call.
    """
    for clear in tuple(_CLEARS):
        clear()
