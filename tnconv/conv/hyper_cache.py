"""``conv_hyper`` once per spelling of a layer, for routines that validate their layer on every call.

Validating a layer (``conv_hyper``) takes tens of microseconds: more than a
curvature routine of a small layer spends computing. Arguments made of ints,
strings, None and tuples of them are keys (``typed``: each leaf beside its type,
so that ``True`` and ``1`` differ and a bad spelling is never served a good
one's result); anything else (lists, numpy ints, tensors) is validated afresh.
Errors are not cached: bad arguments raise on every call.
"""

from __future__ import annotations

from typing import Any, Mapping

from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper, conv_hyper

__all__ = ["cached_conv_hyper", "typed"]

_KEY_TYPES = (int, str, type(None))


def typed(value: object) -> object:
    """``value`` with the type of every leaf beside it, or None when it holds anything but ints (bools included),
    strings, None and tuples of them."""
    if isinstance(value, tuple):
        items = tuple(map(typed, value))  # map, not a generator: this runs on every call
        return None if None in items else items
    return (type(value), value) if isinstance(value, _KEY_TYPES) else None


def cached_conv_hyper(input_shape: tuple[int, ...], arguments: Mapping[str, Any]) -> ConvHyper:
    """``conv_hyper(input_shape, **arguments)``, from a cache when the arguments are keys (``typed``)."""
    names, values = tuple(arguments), tuple(arguments.values())
    key = typed((input_shape, values))
    if not isinstance(key, tuple):
        return conv_hyper(input_shape, **arguments)
    return _validated(names, key)


@cached(maxsize=1024)
def _validated(names: tuple[str, ...], key: tuple[Any, ...]) -> ConvHyper:
    """``conv_hyper`` of the typed ``key`` ``(input_shape, values)`` with ``values`` named by ``names``."""
    shape, values = _plain(key)
    return conv_hyper(shape, **dict(zip(names, values)))


def _plain(key: tuple[Any, ...]) -> Any:
    """The value of a ``typed`` key: every ``(type, leaf)`` pair back to its leaf."""
    if len(key) == 2 and isinstance(key[0], type):
        return key[1]
    return tuple(map(_plain, key))
