"""``tnconv derive --check`` and ``--bench``: run a derived routine against PyTorch, numerically and in time.

- ``check``: float64 on random operands (drawn in the shapes of the routine's
  ``operands``): the program's value, scaled and reshaped as the routine says
  (``tnconv.routines.run.finish``), compared with the routine's PyTorch
  ``reference`` (``tnconv.routines.references``); a program that runs a native
  kernel is a PyTorch kernel itself, so it is also compared with its own
  einsum plan (``Program.run_einsum_plan``), a reference independent of torch's
  convolution code.
- ``bench``: both sides warmed up, then timed interleaved (alternating which
  goes first); each timed sample is the mean of enough calls to last about a
  millisecond; min, median and max per call of each side and of the paired
  ratios.

``guard`` refuses a run whose tensors would not fit in the allocation limit
(``tnconv.limits``: the library's one bound, ``tnconv.set_allocation_limit``), with the
limit's ``ValueError`` naming the size.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch

from tnconv.cli.derive import Derivation
from tnconv.conv.hyper import ConvHyper
from tnconv.conv.options import Options
from tnconv.limits import LIMIT, check_allocation, format_bytes
from tnconv.routines.references import supported
from tnconv.routines.routine import Routine
from tnconv.routines.run import finish

RTOL = 1e-10
SAMPLE_SECONDS = 1e-3  # a timed sample repeats a call until it lasts about this long
MAX_CALLS_PER_SAMPLE = 1000


def _refuse_large(largest: int, dtype: torch.dtype, flag: str) -> None:
    check_allocation(largest, dtype.itemsize, f"{flag}: this layer's largest tensor (use a smaller --batch or layer)")


def largest_tensor(routine: Routine, hyper: ConvHyper, options: Options) -> int:
    """Numbers in the largest tensor the PyTorch reference of ``routine`` needs: an operand, the result, or
    what it creates on the way (``Reference.largest``)."""
    shapes = [operand.shape(hyper, options) for operand in routine.operands]
    sizes = [math.prod(shape) for shape in (*shapes, routine.result_shape(hyper, options))]
    if routine.reference.largest is not None:
        sizes.append(routine.reference.largest(hyper, options))
    return max(sizes)


def guard_layer(routine: Routine, hyper: ConvHyper, options: Options, dtype: torch.dtype, flag: str) -> None:
    """Before deriving: refuse when PyTorch has no reference or its tensors exceed the allocation limit."""
    why_not = supported(hyper)
    if why_not is not None:
        raise ValueError(f"{flag}: {why_not}")
    _refuse_large(largest_tensor(routine, hyper, options), dtype, flag)


def guard(derivation: Derivation, dtype: torch.dtype, flag: str) -> None:
    """``guard_layer``, and refuse when the compiled program's own tensors exceed the allocation limit."""
    guard_layer(derivation.entry, derivation.hyper, derivation.options, dtype, flag)
    program, net = derivation.program, derivation.network
    cost = program.kernel_cost()
    runs = cost.largest if cost is not None else program.largest_intermediate
    _refuse_large(max(math.prod(int(net.size(leg)) for leg in net.output), runs), dtype, flag)


def operands(derivation: Derivation, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random operands of the routine, by name, in the shapes its ``operands`` give (drawn in float64, in order)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        operand.name: torch.randn(operand.shape(derivation.hyper, derivation.options), generator=generator,
                                  dtype=torch.float64).to(dtype)
        for operand in derivation.entry.operands
    }


def _compare(against: str, got: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    scale = expected.abs().max().item() or 1.0
    error = (got - expected).abs().max().item()
    passed = bool(torch.allclose(got, expected, rtol=RTOL, atol=RTOL * scale))
    return {"against": against, "passed": passed, "max_abs_error": error, "max_abs_reference": scale}


def _plan_too_large(derivation: Derivation) -> str | None:
    """Why the einsum plan of a native program is not run for --check (None when it fits)."""
    largest = derivation.program.largest_intermediate
    size = largest * torch.float64.itemsize
    if size > LIMIT.bytes:
        return (f"not run: its largest intermediate holds {largest:,} numbers ({format_bytes(size)} in float64), "
                f"more than the allocation limit of {format_bytes(LIMIT.bytes)}")
    return None


def check(derivation: Derivation, seed: int = 0) -> dict[str, Any]:
    """Run the derived program in float64 on random operands, scale and reshape its value as the routine says,
    and compare with the routine's PyTorch reference (and a native kernel's value with its einsum plan's).
    ``passed`` holds when every comparison that ran passed (rtol ``RTOL``)."""
    hyper = derivation.hyper
    guard(derivation, torch.float64, "--check")
    drawn = operands(derivation, torch.float64, seed)
    expected = derivation.entry.reference.build(hyper)(drawn)
    program = derivation.program
    ours = {name: drawn[name] for name in program.operands}
    value = program(**ours)
    got = finish(derivation.entry, hyper, derivation.options)(value)
    if got.numel() != expected.numel():
        raise ValueError(
            f"--check: the routine gives {tuple(got.shape)} ({got.numel()} numbers) but PyTorch gives "
            f"{tuple(expected.shape)}"
        )
    comparisons = [_compare("PyTorch", got, expected.reshape(got.shape))]
    if program.kernel_cost() is not None:
        skipped = _plan_too_large(derivation)
        if skipped is None:
            comparisons.append(_compare("einsum plan", value, program.run_einsum_plan(**ours)))
        else:
            comparisons.append({"against": "einsum plan", "passed": None, "skipped": skipped})
    return {
        "passed": all(c["passed"] is not False for c in comparisons), "dtype": "float64", "rtol": RTOL,
        "shape": list(got.shape), "seed": seed, "comparisons": comparisons,
    }


def spread(values: list[float]) -> dict[str, float]:
    """Min, median and max of ``values``."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _per_call(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def bench(
    derivation: Derivation,
    repeats: int = 10,
    warmup: int = 2,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Time the routine (compiled program, scaled and reshaped) and its PyTorch reference, interleaved.

    Both sides run ``warmup`` calls first (constants built, caches filled); the
    warm-up times choose ``calls_per_sample`` (the same for both) so that the
    faster side's sample lasts about ``SAMPLE_SECONDS``. Then ``repeats`` rounds
    time one sample of each side, alternating which goes first. Returned per
    side (``tnconv``, ``pytorch``): min/median/max seconds per call, the
    medians also as ``tnconv_s``/``pytorch_s``; ``ratio`` is tnconv's median
    over PyTorch's, ``paired_ratio`` min/median/max of the rounds' ratios.
    """
    hyper = derivation.hyper
    guard(derivation, dtype, "--bench")
    drawn = operands(derivation, dtype)
    program = derivation.program
    ours = {name: drawn[name] for name in program.operands}
    baseline = derivation.entry.reference.build(hyper)
    done_as_routine = finish(derivation.entry, hyper, derivation.options)
    sides: dict[str, Callable[[], object]] = {
        "tnconv": lambda: done_as_routine(program(**ours)), "pytorch": lambda: baseline(drawn),
    }
    total, done = (warmup + repeats) * len(sides), 0
    warm: dict[str, list[float]] = {name: [] for name in sides}
    times: dict[str, list[float]] = {name: [] for name in sides}
    calls = 1
    with torch.no_grad():
        for round_ in range(warmup + repeats):
            if round_ == warmup:
                fastest = min(min(warm[name]) for name in sides) if warmup else SAMPLE_SECONDS
                calls = max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(SAMPLE_SECONDS / max(fastest, 1e-9))))
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                (warm if round_ < warmup else times)[name].append(_per_call(sides[name], 1 if round_ < warmup else calls))
                done += 1
                if progress is not None:
                    progress(done, total, name)
    ours_s, theirs_s = statistics.median(times["tnconv"]), statistics.median(times["pytorch"])
    return {
        "dtype": str(dtype).removeprefix("torch."), "repeats": repeats, "warmup": warmup, "calls_per_sample": calls,
        "threads": torch.get_num_threads(), "tnconv": spread(times["tnconv"]), "pytorch": spread(times["pytorch"]),
        "paired_ratio": spread([a / b for a, b in zip(times["tnconv"], times["pytorch"])]),
        "tnconv_s": ours_s, "pytorch_s": theirs_s, "ratio": ours_s / theirs_s if theirs_s else math.inf,
    }
