"""``Target``: what the planner knows of the backend it plans for - its capabilities and its fitted speeds.

A plan is plain data that one backend runs (``tnconv.backends``). Which plan is
best depends on that backend: whether it has native kernels (a convolution, its
VJPs, unfold, ...) and pattern-pair Grams, and how fast its calls run (the
pair-Gram choice and KFAC's patch chunks are decided on measured speeds, not
FLOPs). Each backend states these as a ``Target``; the planner
(``tnconv.lower.plan``) takes it as an argument and imports no backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from tnconv.lower.pair_choice import Speeds


@dataclass(frozen=True)
class Target:
    """A backend as the planner sees it.

    ``name``: the backend's (``"torch"``, ``"numpy"``). ``kernels``: whether it runs native
    kernel calls (``tnconv.lower.kernels``); a backend without them runs every network on
    its einsum plan. ``speeds``: seconds per unit of work of its calls
    (``tnconv.lower.pair_choice``), from which a pattern-pair Gram is chosen over the
    patches and their Gram; None: no pattern-pair Gram. ``patch_chunk``: elements of
    patches (or of their location pairs) that a Gram of patches forms at once
    (``tnconv.lower.gram_plan``); ``views_from``: patch elements of a chunk from which its
    patches are formed by the einsum plan (strided views laid out in one copy) rather than
    a native im2col kernel.
    """

    name: str
    kernels: bool
    speeds: Speeds | None
    patch_chunk: int
    views_from: int


EINSUM_ONLY = Target("einsum", kernels=False, speeds=None, patch_chunk=1 << 22, views_from=0)
"""A backend that runs einsum plans only (no native kernels, no pattern-pair Gram): what a plan made without a
backend in mind runs, and what a backend without native kernels runs."""
