"""The allocation limit: the most bytes one tensor that tnconv makes may take, checked before it is allocated.

tnconv knows the size of what it is about to create before it creates it: a
program's result and intermediates (its plan), a pattern-pair Gram's padded
operands, the columns of whole-model curvature and their pullbacks, the command
line's inputs. Each is checked against this limit first (``check_allocation``),
so that an outer product of two 1e5 vectors (40 GB) or a layer padded by 1e5
pixels refuses with a ``ValueError`` naming the tensor and its size instead of
failing in the allocator, or swapping, minutes later.

The default is half of the machine's physical memory (``DEFAULT_FRACTION``).
``tnconv.set_allocation_limit(bytes)`` sets another one from then on; used in a
``with`` statement (as ``torch.set_grad_enabled``), only inside the block::

    with tnconv.set_allocation_limit(2**30):     # 1 GiB inside the block
        tnconv.einsum("i,j->ij", a, b)           # ValueError when the result needs more

and ``tnconv.set_allocation_limit(None)`` goes back to the default.
``tnconv.allocation_limit()`` reads the limit in force. It is one setting of the
process (every thread sees it): the attribute ``bytes`` of ``LIMIT``, read by the
checks on every call (a plain attribute, which ``torch.compile`` traces and guards).
A native kernel call is bounded in its result (the runner) and in the padded copy of
its input (``tnconv.backends.torch.kernels``); the buffers PyTorch makes inside the
kernel (oneDNN's reordered operands) are PyTorch's. The command line's ``--check``
and ``--bench`` use this limit too.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Callable

DEFAULT_FRACTION = 0.5
"""The default limit: this fraction of the machine's physical memory."""
UNKNOWN_MEMORY_LIMIT = 2**40
"""The default limit (1 TiB) where the machine's memory cannot be read (no ``os.sysconf``)."""
def machine_memory() -> int | None:
    """The machine's physical memory in bytes, or None where ``os.sysconf`` cannot tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_limit() -> int:
    """``DEFAULT_FRACTION`` of ``machine_memory()``, or ``UNKNOWN_MEMORY_LIMIT``."""
    memory = machine_memory()
    return int(memory * DEFAULT_FRACTION) if memory else UNKNOWN_MEMORY_LIMIT


class AllocationLimit:
    """The limit in force, in ``bytes`` (one object, ``LIMIT``; ``set_allocation_limit`` changes it)."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = default_limit()


LIMIT = AllocationLimit()


class set_allocation_limit:  # noqa: N801 - named as torch.set_grad_enabled, a function that is also a context
    """Set the allocation limit to ``limit`` bytes (None: the default, half the machine's memory) from now on; in a
    ``with`` statement, only inside the block (the limit before it comes back on exit, also on an error).

    Raises:
        TypeError: ``limit`` is not an int or None.
        ValueError: ``limit`` is below 1 byte.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int (bytes) or None (the default), got {limit!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 byte, got {limit}")
        self.previous = LIMIT.bytes
        LIMIT.bytes = default_limit() if limit is None else limit

    def __enter__(self) -> "set_allocation_limit":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        LIMIT.bytes = self.previous


def allocation_limit() -> int:
    """The allocation limit in force, in bytes."""
    return LIMIT.bytes


def check_allocation(elements: int, itemsize: int, what: str | Callable[[], str]) -> None:
    """ValueError when a tensor of ``elements`` elements of ``itemsize`` bytes, ``what`` (named in the message),
    would take more than the allocation limit; call it before allocating.

    ``what`` may be a function that makes the name: hot paths (a program call, a kernel's padding) pass one, so
    that a call within the limit costs one multiplication and one comparison and formats nothing.
    """
    needed = elements * itemsize
    if needed > LIMIT.bytes:
        name = what if isinstance(what, str) else what()
        raise ValueError(
            f"{name} would hold {elements:,} elements ({format_bytes(needed)} at {itemsize} bytes each), more than "
            f"the allocation limit of {format_bytes(LIMIT.bytes)} (tnconv.set_allocation_limit changes it; by "
            f"default {DEFAULT_FRACTION:.0%} of the machine's memory)"
        )


def format_bytes(count: int) -> str:
    """``count`` bytes for a message: ``40.0 GB (37.3 GiB)``, or ``512 bytes``."""
    if count < 1000:
        return f"{count} bytes"
    scale = 3 if count >= 1000**3 else 2 if count >= 1000**2 else 1
    unit, binary = (("kB", "KiB"), ("MB", "MiB"), ("GB", "GiB"))[scale - 1]
    return f"{count / 1000**scale:.1f} {unit} ({count / 1024**scale:.1f} {binary})"
