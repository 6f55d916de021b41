"""Run KFAC-expand's Gram of patches (``tnconv.curvature.patches``) under chosen planner decisions.

The chunk size, the views threshold and the choice of the whole network are the planner's
(``tnconv.lower.patch_gram``, from the default backend's ``Target``); ``planned`` replaces
that target's thresholds, or forces the patches (``whole=False``), while the block runs.
``paying(pays)`` forces the planner's pattern-pair Gram choice (``tnconv.lower.plan``) on or
off; both clear the caches that hold decisions, before and after.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Iterator
from unittest import mock

import tnconv
from tnconv.curvature import patches as patches_module
from tnconv.lower import plan as plan_module
from tnconv.lower.patch_gram import PatchGram, patch_chunks
from tnconv.programs.program import default_target


@contextmanager
def planned(chunk: int | None = None, views_from: int | None = None, whole: bool | None = None) -> Iterator[None]:
    """The default target with ``patch_chunk=chunk`` and ``views_from`` (where given); ``whole=False``: the Gram
    of patches always runs as patches and their Gram (never as the layer's whole network)."""
    changes = {name: value for name, value in (("patch_chunk", chunk), ("views_from", views_from)) if value is not None}
    target = replace(default_target(), **changes)
    with ExitStack() as stack:
        stack.callback(patches_module.input_gram_plan.cache_clear)
        patches_module.input_gram_plan.cache_clear()
        stack.enter_context(mock.patch.object(patches_module, "default_target", return_value=target))
        if whole is False:
            stack.enter_context(mock.patch.object(
                patches_module, "gram_plan",
                side_effect=lambda plan, rows, batch, elements, on: PatchGram(patch_chunks(batch, elements, elements, on)),
            ))  # fmt: skip
        yield


@contextmanager
def paying(pays: bool) -> Iterator[mock.Mock]:
    """The planner's pattern-pair Gram estimate (``pair_gram_pays``) answers ``pays`` (a spy, returned) while the
    block runs; the program caches are cleared before and after, so that plans are made afresh."""
    spy = mock.Mock(wraps=plan_module.pair_gram_pays, return_value=pays)
    tnconv.clear_caches()
    try:
        with mock.patch.object(plan_module, "pair_gram_pays", spy):
            yield spy
    finally:
        tnconv.clear_caches()
