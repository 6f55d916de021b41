"""Shared helpers of the benchmark scripts: the layer list, side-by-side timing, peak memory.

- ``load_layers()``: the layers of ``tnconv/layers.json`` (the package's copy of
  ``../shared/benchmarks/layers.json``), else the shared file.
- ``Layer``: one layer with its tensors (batch 8 on CPU), hyper-parameters and
  PyTorch references.
- ``interleaved(functions, repeats)``: runs the functions round-robin (one call of
  each per round, after a warm-up round) and returns each one's median seconds,
  so that load from other processes hits all of them alike.
- ``rotated(functions, repeats)``: the same, but round ``r`` starts with function ``r``
  (mod their number), because a call right after a memory-heavy one finds the caches cold.
- ``peak_extra(function)``: bytes by which one call raises the resident set above
  what it was just before (``/proc/self/status`` VmHWM, reset through
  ``/proc/self/clear_refs``). glibc must serve large allocations by ``mmap`` so
  that freed buffers cannot hide new ones: ``ensure_mmap_allocations()`` re-runs
  the script with ``MALLOC_MMAP_THRESHOLD_`` set (``MMAP_THRESHOLD``). Timing runs
  under the default allocator, as training loops do.
- ``write_section(path, heading, body)``: put one ``## heading`` section into a
  markdown file (``benchmarks/RESULTS.md``), replacing that section if it is there
  and leaving every other section as it was.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
LAYER_FILES = (ROOT / "tnconv" / "layers.json", ROOT.parent / "shared" / "benchmarks" / "layers.json")
MMAP_THRESHOLD = "131072"


def ensure_mmap_allocations() -> None:
    """Re-execute this script with glibc's mmap threshold fixed (see the module docstring)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
        os.execv(sys.executable, [sys.executable, *sys.argv])


def load_layers(path: str | None = None) -> list[dict]:
    """The benchmark layers (dicts with name, x, w, stride, padding, and optional groups/transposed)."""
    candidates = [Path(path)] if path else [p for p in LAYER_FILES if p.exists()]
    if not candidates:
        raise FileNotFoundError(f"no layers file among {[str(p) for p in LAYER_FILES]}")
    return json.loads(candidates[0].read_text())["layers"]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}


@dataclass
class Layer:
    """A benchmark layer with random float32 tensors: input ``x``, weight ``w``, output gradient ``v``."""

    spec: dict
    batch: int
    x: torch.Tensor = field(init=False)
    w: torch.Tensor = field(init=False)
    v: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.batch, *self.spec["x"], generator=generator)
        self.w = torch.randn(*self.spec["w"], generator=generator)
        self.v = torch.randn(self.torch_forward().shape, generator=generator)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def dims(self) -> int:
        return len(self.spec["x"]) - 1

    @property
    def transposed(self) -> bool:
        return bool(self.spec.get("transposed", False))

    @property
    def groups(self) -> int:
        return int(self.spec.get("groups", 1))

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.spec["w"][2:])

    @property
    def out_channels(self) -> int:
        w = self.spec["w"]
        return w[1] * self.groups if self.transposed else w[0]

    def hyper(self) -> dict:
        """Keyword arguments of ``tnconv.conv_network`` after the op."""
        return dict(
            input_shape=tuple(self.x.shape), kernel_size=self.kernel, out_channels=self.out_channels,
            stride=self.spec["stride"], padding=self.spec["padding"], groups=self.groups, transposed=self.transposed,
        )

    # --- PyTorch references (torch layouts) --------------------------------------------------
    def torch_forward(self) -> torch.Tensor:
        s, p = self.spec["stride"], self.spec["padding"]
        if self.transposed:
            return _CONV_T[self.dims](self.x, self.w, None, s, p, 0, self.groups)
        return _CONV[self.dims](self.x, self.w, None, s, p, 1, self.groups)

    def torch_input_vjp(self) -> torch.Tensor:
        s, p = self.spec["stride"], self.spec["padding"]
        if self.transposed:  # the adjoint of a transposed conv is the conv
            return _CONV[self.dims](self.v, self.w, None, s, p, 1, self.groups)
        return _INPUT[self.dims](self.x.shape, self.w, self.v, s, p, 1, self.groups)

    def torch_weight_vjp(self) -> torch.Tensor:
        s, p = self.spec["stride"], self.spec["padding"]
        if self.transposed:  # conv_transpose's weight gradient is that of the conv from v to x
            return _WEIGHT[self.dims](self.v, self.w.shape, self.x, s, p, 1, self.groups)
        return _WEIGHT[self.dims](self.x, self.w.shape, self.v, s, p, 1, self.groups)

    def torch_unfold(self) -> torch.Tensor:
        return F.unfold(self.x, self.kernel, 1, self.spec["padding"], self.spec["stride"])

    def unfolded(self) -> torch.Tensor:
        """The unfolded input ``(N, C*prod(K), T)`` for any N (F.unfold in 2-d, pad + strided views else)."""
        if self.dims == 2:
            return self.torch_unfold()
        p, s = self.spec["padding"], self.spec["stride"]
        x = F.pad(self.x, (p, p) * self.dims) if p else self.x
        for d, k in enumerate(self.kernel):
            x = x.unfold(2 + d, k, s)
        dims = self.dims
        order = (0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))
        return x.permute(order).reshape(self.batch, -1, math.prod(x.shape[2 : 2 + dims]))


def interleaved(functions: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called round-robin ``repeats`` times after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_number in range(repeats + 1):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            elapsed = time.perf_counter() - start
            if round_number:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def rotated(functions: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds after a warm-up round; round ``r`` starts
    with function ``r`` (mod their number), so that no function always runs first."""
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repeats + 1):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            functions[name]()
            elapsed = time.perf_counter() - start
            if round_number:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def rotated_with_cpu(
    functions: Mapping[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """``rotated``'s median wall seconds of each function, and the median CPU seconds of this process over the same
    calls (after the warm-up round): CPU time, which other processes on a shared machine do not inflate."""
    cpu: dict[str, list[float]] = {name: [] for name in functions}

    def timed(name: str) -> Callable[[], object]:
        function = functions[name]

        def run() -> object:
            start = time.process_time()
            result = function()
            cpu[name].append(time.process_time() - start)
            return result

        return run

    wall = rotated({name: timed(name) for name in functions}, repeats)
    return wall, {name: statistics.median(values[1:]) for name, values in cpu.items()}


def write_section(path: Path, heading: str, body: str) -> None:
    """Put the section ``## heading`` (then ``body``) into the markdown file ``path``: in place of the section of
    that heading (up to the next ``## `` heading) when there is one, else at the end; the rest stays as it was."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"## {heading}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    starts = [n for n, line in enumerate(lines) if line.rstrip("\n") == f"## {heading}"]
    if not starts:
        separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        path.write_text(text + separator + section, encoding="utf-8")
        return
    start = starts[0]
    stop = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
    tail = "".join(lines[stop:])
    path.write_text("".join(lines[:start]) + section + ("\n" + tail if tail else ""), encoding="utf-8")


def write_sections(path: Path, document: str) -> None:
    """Put every ``## `` section of the markdown ``document`` into ``path`` with ``write_section``, and its
    preamble (the text before its first ``## `` heading) in place of the file's: sections that other
    benchmark scripts wrote stay as they are."""
    preamble, *sections = document.split("\n## ")
    if path.exists():
        text = path.read_text(encoding="utf-8")
        first = text.find("\n## ")
        path.write_text(preamble.rstrip("\n") + "\n" + (text[first:] if first >= 0 else ""), encoding="utf-8")
    else:
        path.write_text(preamble.rstrip("\n") + "\n", encoding="utf-8")
    for section in sections:
        heading, _, body = section.partition("\n")
        write_section(path, heading, body)


def _status(key: str) -> int:
    match = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def peak_extra(function: Callable[[], object]) -> int:
    """Bytes by which one call of ``function`` raises the peak resident set above the set before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    result = function()
    peak = _status("VmHWM")
    del result
    return max(peak - before, 0)
