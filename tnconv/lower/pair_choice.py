"""Whether a pattern-pair Gram runs faster than the patches and their Gram: a time estimate from shapes.

KFAC-expand's ``sum_{n,o} U U^T`` runs either as a pattern-pair Gram
(``tnconv.lower.pair_gram``: one weight-VJP call per segment product, then the
shifts added into the Gram) or as the patches ``U`` ``(N, G, d, T)`` and their
Gram by upper panels (``tnconv.routines.gram``; the einsum stage's gather/Gram
path is the same work with a dense product). FLOPs alone choose badly: the pair
Gram has 0.1-0.4x the multiply-adds, but its border calls are thin (one or a few
pixels wide) and a weight-VJP kernel costs time per element of its result and
sample whatever the pixels, so on deep layers (8x8 pixels, 256 channels) it runs
3x slower than the Gram it replaces, and at 5x5 28x28 1.13x slower (see ``CPU``). Both sides are
therefore costed as seconds, sums of counts at measured speeds (``Speeds``):

- pair Gram: per call, per element of a call's result and sample (``N C_A C_B/G (2K-1)^n``
  each call), per FLOP of the calls, per add of the assembly and per element added;
- patches and Gram: per layer, per patch element formed (``N T G d``), per FLOP of the
  upper-panel product (``2 N T G d_A d_B (p+1)/(2p)`` for ``p`` panels of 128 rows) and per
  element of the factor (mirrored).

``pair_gram_pays`` is the one decision, used by the planner (``tnconv.lower.plan``) and by the
model path (``tnconv.curvature.patches.accumulate_input_factor``). ``CPU`` holds speeds fitted by
``benchmarks/calibrate_pair_choice.py`` (see there for the machine); the FLOP counts a program
reports (``Program.flops``) stay exact and separate from this estimate.
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
    elements of their results summed over calls and samples (``outputs``), their ``flops``, the assembly's
    ``adds`` and the elements they add (``added``)."""

    calls: int
    outputs: int
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
    call_flop: float
    add: float
    added: float
    layer: float
    patch_element: float
    gram_flop: float
    factor_element: float

    def pair_seconds(self, work: PairWork) -> float:
        """Estimated seconds of a pair Gram."""
        return (self.call * work.calls + self.call_output * work.outputs + self.call_flop * work.flops
                + self.add * work.adds + self.added * work.added)

    def patch_seconds(self, work: PatchWork) -> float:
        """Estimated seconds of the patches and their Gram."""
        return (self.layer + self.patch_element * work.elements + self.gram_flop * work.flops
                + self.factor_element * work.factor)


CPU = Speeds(
    call=3.06e-4, call_output=4.33e-10, call_flop=2.15e-11, add=0.0, added=1.43e-9,
    layer=8.92e-4, patch_element=2.63e-9, gram_flop=1.68e-11, factor_element=1.54e-9,
)
"""Speeds fitted by ``benchmarks/calibrate_pair_choice.py`` on the project's shared 2-core x86-64 CPU machine
(torch 2.13 CPU, MKL/oneDNN, float32, 1 thread) in a quiet moment (load average below 1). There the pair Gram
won on 3x3 layers with 64 channels at 32x32 (0.91x the patches' time, batch 32) and 56x56 (0.6x, batch 8) and at
5x5 32x32 with 32 channels (0.85x); at 5x5 28x28 with 64 channels it took 1.13x, on 8x8 and 4x4 layers with 256
and 512 channels 3.2x and 48x. The estimate picks the faster way on 15 of the 16 layers fitted; it misses 7x7
56x56 with 2 samples (the pair Gram takes 1.16x, estimated 0.94x). On layers not fitted: 7x7 56x56 with 8 samples
and 32 channels took 0.48x, 3x3 32x32 with 32 channels 0.86x (under load): picked. Under heavy load (several jobs
on the 2 cores) the pair Gram fares relatively better (the patches are memory-bound); a fit taken then picked
the same way on all but one of these layers."""


def pair_work(plan: PairGram) -> PairWork:
    """The counts of ``plan``'s weight-VJP calls and assembly (one call per segment product)."""
    batch, groups, c_a, c_b = plan.sizes
    channels = groups * c_a * c_b
    shifts = math.prod(2 * d.kernel - 1 for d in plan.dims)
    taps = math.prod(d.kernel for d in plan.dims)
    calls = math.prod(len(d.segments) for d in plan.dims)
    pixels = math.prod(sum(stop - start for start, stop in d.segments) for d in plan.dims)
    adds = math.prod(sum(len(held) for held in d.holders()) for d in plan.dims)
    return PairWork(calls, calls * batch * channels * shifts, 2 * batch * channels * shifts * pixels, adds,
                    adds * channels * taps)


def patch_work(plan: PairGram) -> PatchWork:
    """The counts of the same Gram from the patches: ``d = C * prod(K)`` rows per operand and group, ``T``
    locations (the patches formed once when both sides read one operand), the product by ``p`` upper panels
    (``(p + 1) / (2 p)`` of the dense one's FLOPs)."""
    batch, groups, c_a, c_b = plan.sizes
    taps = math.prod(d.kernel for d in plan.dims)
    locations = math.prod(d.output for d in plan.dims)
    rows_a, rows_b = c_a * taps, c_b * taps
    panels = -(-rows_a // PANEL)
    dense = 2 * batch * locations * groups * rows_a * rows_b
    rows = rows_a if plan.a.operand == plan.b.operand else rows_a + rows_b
    return PatchWork(batch * locations * groups * rows, dense * (panels + 1) // (2 * panels),
                     groups * rows_a * rows_b)


def pair_gram_pays(plan: PairGram, speeds: Speeds = CPU) -> bool:
    """Whether ``plan`` is estimated to run faster than the patches and their Gram (``speeds``: the machine's)."""
    return speeds.pair_seconds(pair_work(plan)) < speeds.patch_seconds(patch_work(plan))
