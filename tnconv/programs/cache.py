"""The program cache: compiled programs by (network, optimizer, memory limit), bounded by the bytes they hold.

A program builds its structured constants (dense index patterns, gather
maps, window-sum weights) the first time it runs on a dtype and device, and
keeps them for later calls (in its backend runner). Those constants, not the plans, are what costs
memory, so the cache is a least-recently-used map bounded by the bytes of the
constants its programs hold (``max_bytes``, default 512 MiB) as well as by
their number (``max_programs``, default 1024).

The bound is checked whenever a program is added and whenever a program
builds constants for a new dtype or device. A program that falls out of the
cache releases its constants (it rebuilds them if it runs again, and then
comes back into the cache), so that memory is freed even where a caller still
holds the program. Change the bounds on ``PROGRAMS`` (``tnconv.programs.cache.PROGRAMS.max_bytes
= 2**30``); ``tnconv.clear_caches()`` empties it.

All methods are safe to call from several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, Protocol, TypeVar

from tnconv.caches import register


class Cached(Protocol):
    """What the cache needs of a program (``tnconv.programs.program.Program``): the bytes of the constants it holds,
    and a way to drop them."""

    @property
    def constant_bytes(self) -> int: ...

    def release_constants(self) -> None: ...


P = TypeVar("P", bound=Cached)

DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_MAX_PROGRAMS = 1024


class ProgramCache(Generic[P]):
    """A least-recently-used map key -> program, bounded by constant bytes and by count.

    Args:
        max_bytes: the most bytes of constants the cached programs may hold together
            (the most recently used program is kept even when it alone holds more).
        max_programs: the most programs kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_programs: int = DEFAULT_MAX_PROGRAMS) -> None:
        self.max_bytes = max_bytes
        self.max_programs = max_programs
        self._lock = threading.Lock()
        self._programs: OrderedDict[Hashable, P] = OrderedDict()
        self._bytes: dict[Hashable, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._programs)

    @property
    def total_bytes(self) -> int:
        """Bytes of constants held by the cached programs, as last counted."""
        return self._total

    def get(self, key: Hashable) -> P | None:
        """The cached program of ``key`` (now the most recently used), or None."""
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
            return program

    def add(self, key: Hashable, program: P) -> P:
        """Cache ``program`` under ``key``; the program already there when another thread was first."""
        with self._lock:
            present = self._programs.get(key)
            if present is not None:
                self._programs.move_to_end(key)
                return present
            self._admit(key, program)
            return program

    def account(self, key: Hashable, program: P) -> None:
        """``program`` built constants: count its bytes anew and mark it used (re-admitting it if it had left).

        A different program cached under the same key (one built outside ``tnconv.compile``
        meets it) is left alone and ``program`` is not tracked.
        """
        with self._lock:
            present = self._programs.get(key)
            if present is None:
                self._admit(key, program)
            elif present is program:
                self._programs.move_to_end(key)
                self._total += program.constant_bytes - self._bytes[key]
                self._bytes[key] = program.constant_bytes
                self._trim()

    def clear(self) -> None:
        """Drop every program; each releases its constants."""
        with self._lock:
            programs = list(self._programs.values())
            self._programs.clear()
            self._bytes.clear()
            self._total = 0
        for program in programs:
            program.release_constants()

    def _admit(self, key: Hashable, program: P) -> None:
        held = program.constant_bytes
        self._programs[key] = program
        self._bytes[key] = held
        self._total += held
        self._trim()

    def _trim(self) -> None:
        """Drop least recently used programs (never the most recent) until both bounds hold."""
        while len(self._programs) > 1 and (
            self._total > self.max_bytes or len(self._programs) > self.max_programs
        ):
            key, program = self._programs.popitem(last=False)
            self._total -= self._bytes.pop(key)
            program.release_constants()


PROGRAMS: ProgramCache[Any] = ProgramCache()
register(PROGRAMS.clear)
"""The cache ``tnconv.compile`` uses (bounds: ``PROGRAMS.max_bytes``, ``PROGRAMS.max_programs``); it holds
``Program`` objects (``tnconv.programs.program.compiled`` and ``tnconv.einsum``'s, under keys of their own)."""
