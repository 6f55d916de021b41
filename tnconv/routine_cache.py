"""The set-up routines of ``tnconv.functional``, cached by configuration: safe under threads and ``torch.compile``.

Setting a routine of ``tnconv.routines.TABLE`` up validates its hyper-parameters
(``conv_hyper``), builds its network (``tnconv.routines.derivation.routine_network``)
and compiles it (``tnconv.compile``): milliseconds, so it happens once per
configuration (routine, hyper-parameters and shapes) and the result, an ``Entry``
(program, hyper-parameters, the torch shape of the result), is cached.

- Eager calls (``configure`` outside ``torch.compile``) get the entry itself from
  ``_entry``, never a name to look up later: another thread that drops it from a
  full cache meanwhile cannot make the call fail. Every cache mutation holds one lock.
- Traced calls go through ``_setup``, opaque to dynamo
  (``torch.compiler.assume_constant_result``), which publishes the entry as an
  attribute of ``_TRACED`` and returns its name, a constant of the graph; dynamo
  then reads the attribute, tracing and guarding the program's torch calls.
  Ints among the arguments are specialised first (``_constant``), except the
  batch size when a native kernel runs every batch size (``configure``).

Hyper-parameters travel as the names and the values of ``conv_hyper``'s keyword
arguments, so that no function here restates its signature.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import fields
from typing import Any, NamedTuple

import torch

from tnconv.caches import register
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.hyper_cache import typed
from tnconv.conv.options import DEFAULT_OPTIONS
from tnconv.programs.compile import compile as compile_network
from tnconv.programs.program import Program
from tnconv.routines.derivation import routine_network
from tnconv.routines.table import TABLE

__all__ = ["CACHE_LIMIT", "clear_cache", "configure", "run"]

CACHE_LIMIT = 1024
"""How many configurations each cache of this module holds (a configuration: routine, hyper-parameters and
shapes). When a cache is full, its oldest configuration is dropped (first in, first out) before a new one
goes in. Read at every insertion, so it can be changed at any time; ``clear_cache`` empties the caches."""

Names = tuple[str, ...]
"""Names of keyword arguments of ``conv_hyper`` (all but ``input_shape``), in the caller's order; their values
travel beside them as a tuple."""


class Entry(NamedTuple):
    """A routine set up for one configuration: its program, the layer, and the torch shape of its result.

    ``batched``: the result leads with the batch (all routines but the weight VJP).
    """

    program: Program
    hyper: ConvHyper
    shape: tuple[int, ...]
    batched: bool


class _Traced:
    """The entries that ``torch.compile`` traces read, kept as attributes of one object (see ``_setup``).

    Attributes rather than a dict because dynamo reads an object's attribute
    afresh at each access, while it snapshots a dict once per traced frame: a
    compiled function that calls two routines would otherwise miss the
    second routine's entry, added by ``_setup`` during the same trace.
    """


_LOCK = threading.Lock()
_TRACED = _Traced()
_TRACED_STALE = threading.Event()
"""Set by ``clear_cache``: ``_setup``, the only place that changes ``_TRACED``, empties it first."""
_BY_CONFIG: dict[str, Entry] = {}
"""Entries by the name of their normalised configuration (``_name``): every spelling of a configuration
shares one entry."""
_BY_ARGUMENTS: dict[object, Entry] = {}
"""Entries by the raw arguments of ``_entry`` (see ``tnconv.conv.hyper_cache.typed``): an eager call with arguments seen
before skips validation (about 30 us)."""
_FIELDS = tuple(f.name for f in fields(ConvHyper))


@register
def clear_cache() -> None:
    """Drop every routine this module has set up (validated hyper-parameters and compiled programs).

    Later calls set their routines up afresh. The entries that ``torch.compile``
    traces read go at the next trace (a trace may be reading one now); functions
    already traced keep working. Safe to call from any thread at any time.
    """
    with _LOCK:
        _BY_ARGUMENTS.clear()
        _BY_CONFIG.clear()
        _TRACED_STALE.set()


def configure(op: str, shape: tuple, floating: bool, **arguments: object) -> tuple[Entry, bool]:
    """Routine ``op`` of ``TABLE`` set up for input shape ``shape = (B, ...)`` and ``arguments`` (``conv_hyper``'s
    keyword arguments but ``input_shape``), and whether its kernel runs any batch size.

    Under ``torch.compile``, for floating-point operands (``floating``; others
    run on the einsum path), the routine is set up without ``B`` when a native
    kernel runs every batch size (``_any_batch``); ``run`` then calls that kernel
    on the operands as they are. The batch size never enters the setup: dynamo
    neither guards on it nor specialises it, and dynamic shapes give one graph
    for all batch sizes, as torch's own kernels do. Otherwise every int among the
    arguments is specialised (``_constant``: dynamo guards on its value, a symbolic
    size or an int argument alike). Eager calls take their entry from ``_entry``.
    """
    names, values = tuple(arguments), tuple(arguments.values())
    if not torch.compiler.is_compiling():
        return _entry(op, shape, names, values), False
    if floating:
        name = _setup(op, True, names, *_constants((tuple(shape[1:]), values)))
        if name:
            return getattr(_TRACED, name), True
    return getattr(_TRACED, _setup(op, False, names, *_constants((shape, values)))), False


def run(entry: Entry, operands: dict[str, torch.Tensor], any_batch: bool) -> torch.Tensor:
    """``entry``'s program on ``operands`` (by name), reshaped to its result's torch shape; with ``any_batch``
    (``configure``), its kernel on them, the batch size of a batched result following the operands."""
    if not any_batch:
        return entry.program(**operands).reshape(entry.shape)
    program = entry.program
    result = program.kernel(tuple(operands[name] for name in program.operands))  # type: ignore[misc]
    return result.reshape(-1, *entry.shape[1:]) if entry.batched else result.reshape(entry.shape)


def _entry(op: str, shape: tuple, names: Names, values: tuple) -> Entry:
    """Validate, build and compile routine ``op`` for ``conv_hyper(shape, **dict(zip(names, values)))``, once
    per configuration.

    Returns the entry itself (never a name to look up later), so that another
    thread that drops it from a full cache meanwhile cannot make this call fail.
    """
    typed_arguments = typed((op, shape, *values))
    key = None if typed_arguments is None else (names, typed_arguments)
    if key is not None:
        found = _BY_ARGUMENTS.get(key)
        if found is not None:
            return found
    hyper = conv_hyper(shape, **dict(zip(names, values)))
    name = _name(op, hyper)
    entry = _BY_CONFIG.get(name)
    if entry is None:
        routine = TABLE[op]
        network = routine_network(routine, hyper)
        shape_of_result = routine.result_shape(hyper, DEFAULT_OPTIONS)
        entry = Entry(compile_network(network), hyper, shape_of_result, network.output[0] == "n")
    with _LOCK:
        entry = _insert(_BY_CONFIG, name, entry)
        if key is not None:
            _insert(_BY_ARGUMENTS, key, entry)
    return entry


def _setup(op: str, any_batch: bool, names: Names, shape: tuple, values: tuple) -> str:
    """Set up routine ``op``, publish it as an attribute of ``_TRACED`` and return its name.

    ``any_batch``: ``shape`` is the input shape less its batch size, and the
    entry is ``_any_batch``'s (the name is ``""`` when there is none); otherwise
    it is ``_entry``'s. Only traced calls come here, and dynamo traces one frame
    at a time (under its compile lock); as nothing else changes ``_TRACED``, the
    entry is still there when the caller reads it.
    """
    entry = _any_batch(op, shape, names, values) if any_batch else _entry(op, shape, names, values)
    if entry is None:
        return ""
    name = _name(op, entry.hyper)
    with _LOCK:
        if _TRACED_STALE.is_set():
            _TRACED_STALE.clear()
            vars(_TRACED).clear()
        _insert(vars(_TRACED), name, entry)
    return name


# What ``torch.compiler.assume_constant_result(_setup)`` does, without importing
# ``torch._dynamo`` (seconds) when tnconv is imported: dynamo reads this mark when it
# traces a call of ``_setup`` (tests/test_routine_cache.py checks the two agree).
_setup._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _any_batch(op: str, sizes: tuple[int, ...], names: Names, values: tuple) -> Entry | None:
    """The entry for input shape ``(2, *sizes)`` if its program's kernel runs any batch size, else None.

    That kernel must equal the one for batch size 3: then no size of the batch
    enters it (``tnconv.lower.native``), and it runs every batch whose operands and
    result lead with the batch, as the routines' do.
    """
    entry = _entry(op, (2, *sizes), names, values)
    kernel = entry.program.kernel
    if kernel is None or kernel != _entry(op, (3, *sizes), names, values).program.kernel:
        return None
    return entry


def _name(op: str, hyper: ConvHyper) -> str:
    """The name of a configuration: the routine and every normalised hyper-parameter."""
    return repr((op, *(getattr(hyper, field) for field in _FIELDS)))


def _insert(cache: dict, key: object, entry: Entry) -> Entry:
    """``cache[key]``, set to ``entry`` when absent, dropping the oldest keys while the cache is full.

    Call with ``_LOCK`` held."""
    found = cache.get(key)
    if found is not None:
        return found
    while cache and len(cache) >= CACHE_LIMIT:
        del cache[next(iter(cache))]
    cache[key] = entry
    return entry


def _constants(values: tuple[object, ...]) -> tuple[Any, ...]:
    """Every value through ``_constant`` (each keeps its type: a tuple stays a tuple)."""
    return tuple([_constant(value) for value in values])


def _constant(value: object) -> object:
    """``value`` with every int (but bools) as a plain int, in tuples and lists too.

    Under ``torch.compile`` an int may be symbolic (a dynamic size, or an int
    argument that dynamo made dynamic after seeing it change); ``operator.index``
    makes dynamo specialise it (guard on its value), so that the setup, a
    constant of the graph, gets a constant.
    """
    if isinstance(value, (tuple, list)):
        items = [_constant(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, int) and not isinstance(value, bool):
        return operator.index(value)
    return value


