"""Per-sample gradient norms and private training steps (issue 25): tnconv against Opacus and torch.func.

Models (``tnconv.models``, GroupNorm in place of BatchNorm as private training needs, no in-place
operations, which Opacus's hooks refuse): the CIFAR ResNet-18 (``resnet18``) and VGG-19 (``vgg19``),
``(N, 3, 32, 32)`` inputs, 10 classes, float32, cross-entropy summed over the batch, CPU. For each
model, batch (``--batches``, default 64 and 256) and thread count (``--threads``, default 1 and 2), the
sides of a comparison run in one process, round-robin with the order rotated each round
(``common.rotated_with_cpu``), medians of ``--repeats`` rounds after a warm-up round, of wall time and of the
process's CPU time (less inflated than wall time by other processes on a shared machine); timing runs under
glibc's default allocator, as training loops do:

- ``norms``: each sample's total gradient norm: ``tnconv`` (``per_sample_grad_norms``: one forward, one
  backward to the layer outputs, conv norms through pairs of output locations where that is cheaper than
  forming the per-sample gradients), ``opacus hooks`` (``GradSampleModule``: forward, backward, every
  per-sample gradient, then their norms), ``torch.func`` (``vmap(grad)`` over the samples, then norms);
  the time of a plain forward and backward (``backward``) is shown for scale.
- ``step``: one DP-SGD step (clip to norm 1, noise multiplier 1, SGD) against a non-private SGD step
  (``plain``): ``tnconv`` (``clip_grads``), ``opacus hooks`` (``GradSampleModule`` + ``DPOptimizer``),
  ``opacus ghost`` (Opacus's ghost clipping: ``GradSampleModuleFastGradientClipping``, its two backward
  passes; its norm samplers cover Linear only, convs get their per-sample gradients) and ``ghost+tnconv``
  (the same with ``tnconv.integrations.opacus``'s samplers: conv norms without per-sample gradients).

A side whose per-sample gradients (``opacus hooks``, ``torch.func``: ``N`` times the parameters) would
exceed ``--memory-limit`` GiB is left out (its row says so).

Every call ends by releasing the gradients it made (``zero_grad(set_to_none=True)``; Opacus's per-sample
gradients too), so that a call starts from the model and its optimizer alone.

Memory (``--memory``, on by default): each side but ``torch.func`` runs twice in a fresh child process
(glibc forced to ``mmap`` large blocks there only: ``common.MMAP_THRESHOLD``, one thread); the extra peak resident
set of the second call is reported, and for the step sides the largest batch whose
step fits in 8 GiB: the peak is measured at two batches (``--fit-batches``, default 32 and 64), a line
through them (memory grows linearly with the batch) is solved for 8 GiB minus the resident set before the
call (the interpreter, torch, the model and its state); ``--verify-largest`` runs the step once more at
that batch and reports the whole peak resident set it reached (it should be about 8 GiB).

Output: the tables on stdout and the section "Private training (issue 25)" of ``--markdown``
(benchmarks/RESULTS.md; other sections are kept).

Usage: python benchmarks/bench_privacy.py [--models resnet18 vgg19] [--batches 64 256] [--threads 1 2]
       [--repeats 3] [--tasks norms step] [--sides SIDE...] [--no-memory | --no-timing] [--fit-batches 32 64] [--verify-largest]
       [--memory-limit 12]
       [--markdown PATH] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MMAP_THRESHOLD, ROOT, peak_extra, rotated_with_cpu, write_section  # noqa: E402

from tnconv.curvature import per_sample_grad_norms  # noqa: E402
from tnconv.integrations import opacus as tnconv_opacus  # noqa: E402
from tnconv.models import BasicBlock, resnet18_cifar, vgg19_cifar  # noqa: E402
from tnconv.privacy import clip_grads  # noqa: E402

warnings.filterwarnings("ignore")  # Opacus's secure-RNG and full-backward-hook notices
from opacus import GradSampleModule  # noqa: E402
from opacus.grad_sample import GradSampleModuleFastGradientClipping  # noqa: E402
from opacus.grad_sample.grad_sample_module import GradSampleHooks  # noqa: E402
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import GradSampleHooksFastGradientClipping  # noqa: E402
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping  # noqa: E402
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping  # noqa: E402

CLASSES = 10
MAX_NORM = 1.0
NOISE = 1.0
BUDGET = 8 * 2**30
LOSS = torch.nn.CrossEntropyLoss(reduction="sum")
TASKS = {"norms": ("backward", "tnconv", "opacus hooks", "torch.func"),
         "step": ("plain", "tnconv", "opacus hooks", "opacus ghost", "ghost+tnconv")}
PER_SAMPLE_SIDES = ("opacus hooks", "torch.func")  # sides that hold every per-sample gradient
MEMORY_SIDES = {"norms": ("backward", "tnconv", "opacus hooks"), "step": TASKS["step"]}
SECTION = "Private training (issue 25)"


class OutOfPlaceBlock(BasicBlock):
    """``BasicBlock`` with an out-of-place residual add (Opacus's module hooks refuse in-place changes of a
    hooked module's output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def build(name: str) -> torch.nn.Module:
    """The model ``name`` with GroupNorm and without in-place operations (seed 0)."""
    torch.manual_seed(0)
    model = {"resnet18": resnet18_cifar, "vgg19": vgg19_cifar}[name](num_classes=CLASSES, norm="group")
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
        if isinstance(module, BasicBlock):
            module.__class__ = OutOfPlaceBlock
    return model


def data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, CLASSES, (batch,), generator=generator)


@contextmanager
def opacus_samplers(tnconv: bool) -> Iterator[None]:
    """Opacus's registries with tnconv's conv samplers (``tnconv``) or Opacus's own, restored afterwards."""
    registries = (GradSampleHooks.GRAD_SAMPLERS, GradSampleHooksFastGradientClipping.NORM_SAMPLERS)
    saved = [dict(registry) for registry in registries]
    if tnconv:
        tnconv_opacus.register()
    try:
        yield
    finally:
        for registry, before in zip(registries, saved):
            registry.clear()
            registry.update(before)


def total_norms(norms: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(norms.values())).sum(0).sqrt()


def norms_side(side: str, name: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """One call of ``side`` of the ``norms`` task on a fresh model."""
    model = build(name)
    if side == "backward":
        def backward() -> object:
            LOSS(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            return None
        return backward
    if side == "tnconv":
        return lambda: total_norms(per_sample_grad_norms(model, LOSS, x, y))
    if side == "opacus hooks":
        wrapped = GradSampleModule(model, loss_reduction="sum")

        def hooks() -> torch.Tensor:
            LOSS(wrapped(x), y).backward()
            norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in wrapped.parameters()]).norm(dim=0)
            wrapped.zero_grad(set_to_none=True)  # the per-sample gradients too
            return norms
        return hooks
    params = {key: p.detach() for key, p in model.named_parameters()}

    def term(values: dict[str, torch.Tensor], sample: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LOSS(torch.func.functional_call(model, values, (sample[None],)), target[None])

    per_sample = torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))
    return lambda: torch.stack([g.flatten(1).norm(dim=1) for g in per_sample(params, x, y).values()]).norm(dim=0)


def step_side(side: str, name: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """One call of ``side`` of the ``step`` task (gradient and SGD update) on a fresh model."""
    model, batch = build(name), x.shape[0]
    if side == "plain":
        sgd = torch.optim.SGD(model.parameters(), lr=1e-3)

        def plain() -> object:
            LOSS(model(x), y).backward()
            sgd.step()
            sgd.zero_grad(set_to_none=True)
            return None
        return plain
    if side == "tnconv":
        sgd, generator = torch.optim.SGD(model.parameters(), lr=1e-3), torch.Generator().manual_seed(2)

        def private() -> object:
            clip_grads(model, LOSS, x, y, MAX_NORM, NOISE, generator)
            sgd.step()
            sgd.zero_grad(set_to_none=True)
            return None
        return private
    if side == "opacus hooks":
        wrapped = GradSampleModule(model, loss_reduction="sum")
        optimizer = DPOptimizer(torch.optim.SGD(wrapped.parameters(), lr=1e-3), noise_multiplier=NOISE,
                                max_grad_norm=MAX_NORM, expected_batch_size=batch, loss_reduction="sum")

        def hooks() -> object:
            LOSS(wrapped(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # the per-sample gradients too
            return None
        return hooks
    ghost = GradSampleModuleFastGradientClipping(model, max_grad_norm=MAX_NORM, use_ghost_clipping=True,
                                                 loss_reduction="sum")
    optimizer = DPOptimizerFastGradientClipping(torch.optim.SGD(ghost.parameters(), lr=1e-3), noise_multiplier=NOISE,
                                                max_grad_norm=MAX_NORM, expected_batch_size=batch,
                                                loss_reduction="sum")
    criterion = DPLossFastGradientClipping(ghost, optimizer, LOSS, loss_reduction="sum")
    with_tnconv = side == "ghost+tnconv"

    def ghost_step() -> object:
        with opacus_samplers(with_tnconv):
            criterion(ghost(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return None
    return ghost_step


SIDES = {"norms": norms_side, "step": step_side}


def too_large(side: str, name: str, batch: int, limit: float) -> str | None:
    """Why ``side`` is left out at this batch (its per-sample gradients exceed ``limit`` GiB), or None."""
    if side not in PER_SAMPLE_SIDES:
        return None
    size = batch * sum(p.numel() for p in build(name).parameters()) * 4 / 2**30
    return f"per-sample gradients {size:.1f} GiB > {limit:g} GiB" if size > limit else None


def time_task(
    task: str, name: str, batch: int, threads: int, repeats: int, limit: float, chosen: tuple[str, ...]
) -> dict:
    """The medians of ``task``'s sides among ``chosen`` (the others' cells stay empty), round-robin in this
    process; a side whose per-sample gradients would exceed ``limit`` GiB is left out and said why."""
    torch.set_num_threads(threads)
    x, y = data(batch)
    sides = {side: SIDES[task](side, name, x, y) for side in TASKS[task]
             if side in chosen and too_large(side, name, batch, limit) is None}  # fmt: skip
    medians, cpu = rotated_with_cpu(sides, repeats)
    skipped = {side: too_large(side, name, batch, limit)
               for side in TASKS[task] if side in chosen and side not in sides}  # fmt: skip
    return {"model": name, "batch": batch, "threads": threads, "task": task, "seconds": medians,
            "cpu": cpu,
            "skipped": skipped, "repeats": repeats, "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}


# --- memory, in child processes -------------------------------------------------------------
def peak_here(task: str, side: str, name: str, batch: int) -> dict:
    """``--peak``: the resident set before a call and the extra peak of the second call (one thread)."""
    torch.set_num_threads(1)
    x, y = data(batch)
    function = SIDES[task](side, name, x, y)
    function()
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"before": before, "extra": peak_extra(function)}


def child_peak(task: str, side: str, name: str, batch: int) -> dict | None:
    command = [sys.executable, __file__, "--peak", task, side, name, str(batch)]
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        print(f"  memory of {name} {task} {side} at batch {batch} failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_rows(
    name: str, tasks: list[str], batches: list[int], fit: tuple[int, int], limit: float, verify: bool
) -> list[dict]:
    rows = []
    for task in tasks:
        for side in MEMORY_SIDES[task]:
            row: dict = {"model": name, "task": task, "side": side, "peaks": {}}
            for batch in sorted({*batches, *(fit if task == "step" else ())}):
                reason = too_large(side, name, batch, limit)
                measured = None if reason else child_peak(task, side, name, batch)
                row["peaks"][str(batch)] = measured
            if task == "step":
                row["largest"] = largest_batch(row["peaks"], fit)
                if verify and row["largest"]:
                    measured = child_peak(task, side, name, row["largest"])
                    row["verified"] = None if measured is None else measured["before"] + measured["extra"]
            print(f"{name:8s} memory {task:5s} {side:13s} " + "  ".join(
                f"N={b}: {p['extra'] / 2**20:.0f} MiB" if p else f"N={b}: -" for b, p in row["peaks"].items())
                + (f"  largest batch in 8 GiB: {row['largest']}" if task == "step" else "")
                + (f" (its whole peak {row['verified'] / 2**30:.2f} GiB)" if row.get("verified") else ""), flush=True)
            rows.append(row)
    return rows


def largest_batch(peaks: dict[str, dict | None], fit: tuple[int, int]) -> int | None:
    """The batch at which ``before + extra(batch)`` reaches ``BUDGET``, ``extra`` the line through the peaks at
    the two ``fit`` batches."""
    low, high = (peaks.get(str(batch)) for batch in fit)
    if low is None or high is None or high["extra"] <= low["extra"]:
        return None
    slope = (high["extra"] - low["extra"]) / (fit[1] - fit[0])
    intercept = low["extra"] - slope * fit[0]
    return math.floor((BUDGET - high["before"] - intercept) / slope)


# --- report -----------------------------------------------------------------------------------
def ratio(seconds: dict[str, float], side: str, base: str) -> str:
    return f"{seconds[side] / seconds[base]:.2f}x" if side in seconds and base in seconds else "-"


def markdown(timings: list[dict], memory: list[dict], command: str, fit: tuple[int, int]) -> str:
    lines = [
        "Per-sample gradient norms and DP-SGD steps of GroupNorm models (CIFAR 32x32, float32, CPU), "
        "`benchmarks/bench_privacy.py` (see its docstring). Sides interleaved in one process, medians; "
        "wall time unless said (CPU time: the process's); load = the 1-minute load average when the row finished "
        "(2 cores, shared). "
        f"Command: `{command}`.",
        "",
        "Targets: norms (ResNet-18, batch 64) <= 0.35x Opacus hooks' time and <= 0.2x its extra memory; "
        "DP-SGD step <= 1.5x the non-private step; largest batch in 8 GiB >= 5x Opacus hooks'.",
        "",
        "### Per-sample norms (seconds; ratios to Opacus hooks)",
        "",
        "| model | batch | threads | backward | tnconv | opacus hooks | torch.func | tnconv/opacus | same, CPU time "
        "| tnconv/backward | rounds | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in (r for r in timings if r["task"] == "norms"):
        s = row["seconds"]
        cells = [f"{s[side]:.3f}" if side in s else "-" for side in TASKS["norms"]]
        lines.append(f"| {row['model']} | {row['batch']} | {row['threads']} | " + " | ".join(cells)
                     + f" | {ratio(s, 'tnconv', 'opacus hooks')} | {ratio(row['cpu'], 'tnconv', 'opacus hooks')} "
                     f"| {ratio(s, 'tnconv', 'backward')} | {row['repeats']} | {row['load']:.1f} |")
    lines += ["", "### DP-SGD step (seconds; ratios to the non-private step)", "",
              "| model | batch | threads | plain | tnconv | opacus hooks | opacus ghost | ghost+tnconv "
              "| tnconv/plain | same, CPU time | ghost+tnconv/plain | rounds | load |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in (r for r in timings if r["task"] == "step"):
        s = row["seconds"]
        cells = [f"{s[side]:.3f}" if side in s else "-" for side in TASKS["step"]]
        lines.append(f"| {row['model']} | {row['batch']} | {row['threads']} | " + " | ".join(cells)
                     + f" | {ratio(s, 'tnconv', 'plain')} | {ratio(row['cpu'], 'tnconv', 'plain')} "
                     f"| {ratio(s, 'ghost+tnconv', 'plain')} | {row['repeats']} "
                     f"| {row['load']:.1f} |")
    if memory:
        lines += ["", f"### Peak memory (extra MiB of a call; one thread) and the largest batch in 8 GiB "
                  f"(a line through batches {fit[0]} and {fit[1]})", "",
                  "| model | task | side | extra MiB by batch | largest batch in 8 GiB |", "| --- | --- | --- | --- | --- |"]
        for row in memory:
            peaks = ", ".join(f"{b}: {p['extra'] / 2**20:.0f}" if p else f"{b}: -" for b, p in row["peaks"].items())
            largest = row.get("largest")
            verified = f" (whole peak {row['verified'] / 2**30:.2f} GiB)" if row.get("verified") else ""
            lines.append(f"| {row['model']} | {row['task']} | {row['side']} | {peaks} | "
                         f"{'' if row['task'] == 'norms' else largest if largest is not None else '-'}{verified} |")
        lines += ["", *memory_ratios(memory)]
    return "\n".join(lines)


def memory_ratios(memory: list[dict]) -> list[str]:
    """Per model and batch: the norms' extra memory over a plain backward, tnconv / Opacus hooks, and the largest
    batches in 8 GiB, tnconv's over Opacus hooks'."""
    found = {(row["model"], row["task"], row["side"]): row for row in memory}
    lines = []
    for model in dict.fromkeys(row["model"] for row in memory):
        base, ours, theirs = (found.get((model, "norms", side)) for side in ("backward", "tnconv", "opacus hooks"))
        for batch in (base or {}).get("peaks", {}):
            peaks = [row["peaks"].get(batch) if row else None for row in (base, ours, theirs)]
            if all(peaks):
                extra = [peak["extra"] - peaks[0]["extra"] for peak in peaks[1:]]
                lines.append(f"- {model}, batch {batch}: the norms' extra memory over a plain backward, tnconv "
                             f"{extra[0] / 2**20:.0f} MiB / Opacus hooks {extra[1] / 2**20:.0f} MiB = "
                             f"{extra[0] / extra[1]:.2f}x")
        ours_step, theirs_step = (found.get((model, "step", side)) for side in ("tnconv", "opacus hooks"))
        if ours_step and theirs_step and ours_step.get("largest") and theirs_step.get("largest"):
            lines.append(f"- {model}: largest batch in 8 GiB, tnconv {ours_step['largest']} / Opacus hooks "
                         f"{theirs_step['largest']} = {ours_step['largest'] / theirs_step['largest']:.1f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg19"], choices=["resnet18", "vgg19"])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    every_side = sorted({side for sides in TASKS.values() for side in sides})
    parser.add_argument("--sides", nargs="+", default=every_side, choices=every_side,
                        help="the sides timed (default all; the others' cells stay empty)")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-timing", action="store_true", help="memory only")
    parser.add_argument("--fit-batches", nargs=2, type=int, default=[32, 64])
    parser.add_argument("--verify-largest", action="store_true",
                        help="run each step side once more at its largest batch and report its whole peak")
    parser.add_argument("--memory-limit", type=float, default=12.0, help="GiB of per-sample gradients a side may hold")
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="resnet18, batch 16, one thread, one round, no memory")
    parser.add_argument("--peak", nargs=4, metavar=("TASK", "SIDE", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.peak:
        task, side, name, batch = options.peak
        print(json.dumps(peak_here(task, side, name, int(batch))))
        return
    if options.quick:
        options.models, options.batches, options.threads, options.repeats = ["resnet18"], [16], [1], 1
        options.no_memory = True
    timings = []
    for name in [] if options.no_timing else options.models:
        for batch in options.batches:
            for threads in options.threads:
                for task in options.tasks:
                    row = time_task(task, name, batch, threads, options.repeats, options.memory_limit,
                                    tuple(options.sides))  # fmt: skip
                    timings.append(row)
                    cells = (f"{side} {seconds:.3f}s (cpu {row['cpu'][side]:.3f}s)"
                             for side, seconds in row["seconds"].items())
                    print(f"{name:8s} N={batch:<4d} threads={threads} {task:5s} " + "  ".join(cells)
                        + f"  load {row['load']:.1f}", flush=True)
    fit = tuple(options.fit_batches)
    memory = [] if options.no_memory else [row for name in options.models
                                           for row in memory_rows(name, options.tasks, options.batches, fit,
                                                                  options.memory_limit, options.verify_largest)]
    command = "python benchmarks/bench_privacy.py " + " ".join(sys.argv[1:])
    text = markdown(timings, memory, command.strip(), fit)
    print(text)
    if not options.quick:
        write_section(Path(options.markdown), SECTION, text)


if __name__ == "__main__":
    main()
