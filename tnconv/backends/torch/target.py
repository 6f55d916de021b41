"""What the planner knows of the torch backend (``tnconv.lower.target.Target``): native kernels, and its speeds.

``SPEEDS`` and the patch thresholds were measured with torch on a CPU; the
planner uses them to choose a pattern-pair Gram over the patches and their Gram
(``tnconv.lower.pair_choice``) and to size KFAC's chunks of patches
(``tnconv.lower.gram_plan``).
"""

from __future__ import annotations

from tnconv.lower.pair_choice import Speeds
from tnconv.lower.target import Target

SPEEDS = Speeds(
    call=3.15e-4, call_output=3.35e-10, call_input=2.10e-10, call_flop=2.37e-11, add=0.0, added=9.66e-10,
    layer=0.0, patch_element=2.53e-9, gram_flop=1.48e-11, factor_element=3.06e-9,
)
"""Speeds fitted by ``benchmarks/calibrate_pair_choice.py`` on the project's shared 2-core x86-64 CPU machine
(torch 2.13 CPU, MKL/oneDNN, float32, 1 thread, quiet), over 16 stride-1 and 7 strided layers, with the pair
Gram's border calls narrowed to the shifts their taps need and the patches formed as views (Grams of fewer than
two full panels as one product). There the pair Gram won on 3x3 layers with 64 channels at 32x32 (0.87x the
patches' time, batch 32) and 56x56 (0.86x, batch 8), at 5x5 28x28 and 32x32 (0.83x) and 7x7 56x56 with 2
samples (0.76x); it lost on deep layers (8x8 and 4x4 with 256 and 512 channels: 1.9x and 14x), on small ones,
and at every stride > 1 (3x3 stride 2: 2.1-3.1x, 7x7 stride 2: 2.1x; the phases make thin calls). The estimate
picks the faster way on 22 of the 23 layers; the 23rd is a tie it gives to the patches: ResNet-18's 7x7 stride-2
stem on 3 channels at 224x224, 144 ms each way with 1 thread, where the patches take 0.8x the pair's time with 2
threads (its calls read 3 channels of many pixels: the ``call_input`` term, without which the estimate took the
pair for twice as fast)."""

PATCH_CHUNK = 1 << 22
"""Elements of patches (or of their location pairs) formed at once: 16 MiB in float32."""
VIEWS_FROM = 1 << 16
"""Patch elements of a chunk from which its patches are strided views laid out in one copy; below, the native
im2col kernel costs fewer torch calls, which decide there (im2col alone measured 1.2-2.3x the time of that one
copy on the CPU, 1 thread: ResNet-18 and ConvNeXt layers)."""

TARGET = Target("torch", kernels=True, speeds=SPEEDS, patch_chunk=PATCH_CHUNK, views_from=VIEWS_FROM)
"""The torch backend as the planner sees it."""
