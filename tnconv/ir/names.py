"""Names that passes make: one convention for the copies of a leg or tensor, ``c_in``, ``c_in_2``, ``c_in_3``.

A leg that a rewrite duplicates (the second factor of a Gram matrix, the inner
legs of a network fused in twice, the legs of a removed tensor that clash with
others) gets the name of its copy number; the first copy keeps the name itself.
Nothing here imports torch or sympy.
"""

from __future__ import annotations

from typing import Collection


def copy_name(name: str, copy: int) -> str:
    """The name of copy number ``copy`` (1, 2, ...) of ``name``: ``name`` itself, then ``name_2``, ``name_3``."""
    if isinstance(copy, bool) or not isinstance(copy, int) or copy < 1:
        raise ValueError(f"copy must be an int >= 1, got {copy!r}")
    return name if copy == 1 else f"{name}_{copy}"


def fresh_name(base: str, taken: Collection[str]) -> str:
    """The first of ``base``, ``base_2``, ``base_3``, ... that is not in ``taken``."""
    copy = 1
    while copy_name(base, copy) in taken:
        copy += 1
    return copy_name(base, copy)
