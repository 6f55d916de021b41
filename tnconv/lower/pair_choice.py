"""Whether a pattern-pair Gram runs faster than the patches and their Gram: a time estimate from shapes.

KFAC-expand's ``sum_{n,o} U U^T`` runs either as a pattern-pair Gram
(``tnconv.lower.pair_gram``: one weight-VJP call per segment product, then the
shifts added into the Gram) or as the patches ``U`` ``(N, G, d, T)`` and their
Gram by upper panels (``tnconv.routines.gram``; the einsum stage's gather/Gram
path is the same work with a dense product). FLOPs alone choose badly: the pair
Gram has 0.1-0.4x the multiply-adds, but its border calls are thin (one or a few
pixels wide) and a weight-VJP kernel costs time per element of its result and
sample whatever the pixels, so on deep layers (8x8 pixels, 256 channels) it runs
3x slower than the Gram it replaces, and at 5x5 28x28 1.13x slower (``tnconv.backends.torch.target``). Both sides are
therefore costed as seconds, sums of counts at measured speeds (``Speeds``):

- pair Gram: per call, per element of a call's result and sample (``N C_A C_B/G (2K-1)^n``
  each call), per operand element a call reads (``N (C_A + C_B)`` per pixel: the term that
  prices few-channel layers on large images, whose calls are bound by reading, not by
  multiplying), per FLOP of the calls, per add of the assembly and per element added;
- patches and Gram: per layer, per patch element formed (``N T G d``), per FLOP of the
  upper-panel product (``2 N T G d_A d_B (p+1)/(2p)`` for ``p`` panels of 128 rows) and per
  element of the factor (mirrored).

``pair_gram_pays`` is the one decision, taken by the planner (``tnconv.lower.plan``) with the speeds of
the backend it plans for (``tnconv.lower.target.Target.speeds``; the torch backend's are fitted by
``benchmarks/calibrate_pair_choice.py``, see ``tnconv.backends.torch.target``); the FLOP counts a
program reports (``Program.flops``) stay exact and separate from this estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tnconv.lower.pair_gram import PairGram

PANEL = 128
"""Rows per panel of the upper-panel Gram (``tnconv.routines.gram.PANEL``; this module stays torch-free)."""


@dataclass(frozen=True)
class PairWork:
    """The counts a pair Gram's time is estimated from (see the module docstring): weight-VJP ``calls``, the
    elements of their results summed over calls and samples (``outputs``), the operand elements they read
    (``inputs``), their ``flops``, the assembly's ``adds`` and the elements they add (``added``)."""

    calls: int
    outputs: int
    inputs: int
    flops: int
    adds: int
    added: int


@dataclass(frozen=True)
class PatchWork:
    """The counts the patches-and-Gram way's time is estimated from: the patch ``elements`` formed, the
    ``flops`` of the upper-panel product and the ``factor`` elements written (and mirrored)."""

    elements: int
    flops: int
    factor: int


@dataclass(frozen=True)
class Speeds:
    """Seconds per unit of each count (``benchmarks/calibrate_pair_choice.py`` fits them)."""

    call: float
    call_output: float
    call_input: float
    call_flop: float
    add: float
    added: float
    layer: float
    patch_element: float
    gram_flop: float
    factor_element: float

    def pair_seconds(self, work: PairWork) -> float:
        """Estimated seconds of a pair Gram."""
        return (self.call * work.calls + self.call_output * work.outputs + self.call_input * work.inputs
                + self.call_flop * work.flops
                + self.add * work.adds + self.added * work.added)

    def patch_seconds(self, work: PatchWork) -> float:
        """Estimated seconds of the patches and their Gram."""
        return (self.layer + self.patch_element * work.elements + self.gram_flop * work.flops
                + self.factor_element * work.factor)


def pair_work(plan: PairGram) -> PairWork:
    """The counts of ``plan``'s weight-VJP calls and assembly: one call per product of parts (one part per dim,
    computing ``prod_d shifts(part_d)`` shifts per channel pair and sample), one addition per holder tuple."""
    batch, groups, c_a, c_b = plan.sizes
    channels = groups * c_a * c_b
    taps = math.prod(d.window.kernel_size for d in plan.dims)
    shifts = math.prod(sum(part.shifts(d.window.kernel_size) for part in d.parts) for d in plan.dims)
    adds = math.prod(d.held for d in plan.dims)
    pixels = math.prod(d.call_pixels for d in plan.dims)
    return PairWork(plan.calls, batch * channels * shifts, batch * groups * (c_a + c_b) * pixels,
                    2 * batch * channels * pixels, adds, adds * channels * taps)


def patch_work(plan: PairGram) -> PatchWork:
    """The counts of the same Gram from the patches: ``d = C * prod(K)`` rows per operand and group, ``T``
    locations (the patches formed once when both sides read one operand), the product by upper panels
    (``(p + 1) / (2 p)`` of the dense one's FLOPs for ``p`` full panels; one dense product below two full panels)."""
    batch, groups, c_a, c_b = plan.sizes
    taps = math.prod(d.window.kernel_size for d in plan.dims)
    locations = math.prod(d.window.output_size for d in plan.dims)
    rows_a, rows_b = c_a * taps, c_b * taps
    rows = rows_a if plan.a.operand == plan.b.operand else rows_a + rows_b
    return PatchWork(batch * locations * groups * rows, 2 * batch * locations * groups * _products(rows_a, rows_b),
                     groups * rows_a * rows_b)


def _products(rows_a: int, rows_b: int) -> int:
    """Multiply-adds per summed column of the Gram of ``rows_a`` by ``rows_b`` rows as ``tnconv.routines.gram``
    multiplies it: by upper panels of ``PANEL`` rows (panel ``[s, e)`` times rows ``[s, d)``) from two full panels
    of one operand with itself on, else whole."""
    if rows_a != rows_b or rows_a < 2 * PANEL:
        return rows_a * rows_b
    return sum((min(start + PANEL, rows_a) - start) * (rows_a - start) for start in range(0, rows_a, PANEL))


def pair_gram_pays(plan: PairGram, speeds: Speeds) -> bool:
    """Whether ``plan`` is estimated to run faster than the patches and their Gram (``speeds``: the machine's).

    Never for depthwise layers (one channel per group): the speeds are fitted on dense and grouped layers, and
    the depthwise weight-VJP kernels run far below them (measured on the CPU: 1.1x the patches' time for 7x7 at
    56x56, 1.3x for 3x3, 3.6x for 3x3 stride 2 at 112x112, all with 8 samples and 64-144 channels).
    """
    _, groups, c_a, c_b = plan.sizes
    if groups > 1 and min(c_a, c_b) == 1:
        return False
    return speeds.pair_seconds(pair_work(plan)) < speeds.patch_seconds(patch_work(plan))
