"""SINGD on tnconv against singd's own (issue 24): time per iteration and peak memory relative to SGD.

The paper's protocol (its SINGD table, from singd's profiling branch): the preconditioner is
updated every step (``T=1``), structures diagonal (``--structures dense`` too), singd's
default ``lr``, ``damping``, ``momentum`` and ``lr_cov``; BatchNorm parameters are trained by
SGD (the same ``lr`` and momentum); random images and labels, cross-entropy, float32, CPU,
``--threads`` threads (default 1). Models of ``tnconv.models``: torchvision's ResNet-18 and
VGG-19 at 224x224 (batch 8 and 4) and their CIFAR variants at 32x32 (batch 128); ``--quick``:
ResNet-18 at 64x64, batch 2, one timed round.

The optimizers, each on its own copy of the model (same initial weights):

- ``sgd``: ``torch.optim.SGD`` on every parameter, singd's default ``lr`` and momentum 0.9;
- ``unfold``: singd 0.0.5's ``SINGD`` with its KFAC-reduce patch averages taken from the
  unfolded input (singd's own ``F.unfold`` patches, averaged): the paper's "SINGD". For
  KFAC-expand singd unfolds anyway, so there ``unfold`` is singd's own path and ``einconv``
  is not run a second time;
- ``einconv``: singd 0.0.5 as installed (KFAC-reduce through einconv's index-pattern
  tensors: the paper's "SINGD+TN");
- ``tnconv``: ``tnconv.integrations.singd.SINGD``.

Time: all optimizers of one (model, approximation, structure) in one process, one step each
per round, the order rotated every round (``common.rotated_with_cpu``), medians of ``--repeats``
rounds after a warm-up round, wall-clock and the process's CPU time (``time.process_time``:
on a shared machine other processes inflate the wall-clock, not the CPU time; with one thread
the two agree on an idle machine); the machine's load (1-minute average) is recorded. The
targets of issue 24 are checked on the CPU-time ratios.
Peak memory (``--no-memory`` skips it): each optimizer in a fresh child process (glibc forced
to ``mmap`` large blocks, ``common.MMAP_THRESHOLD``): the resident set's peak during one step
after a warm-up step, less the resident set before the model was built (the libraries and the
batch), i.e. what the weights, the optimizer's state and the step hold, as
``torch.cuda.max_memory_allocated`` counts it on a GPU.

Output: the table on stdout; the rows kept in ``--rows`` (benchmarks/singd.json: a run replaces
the rows it measures and keeps the others, so that the models can be measured in separate runs;
``--quick`` keeps none unless ``--rows`` is given); from all kept rows, the section "SINGD
(issue 24)" of ``--markdown`` (benchmarks/RESULTS.md; ``--quick`` writes none unless it is given), in
the paper's layout beside its numbers.

Usage: python benchmarks/bench_singd.py [--models resnet18 vgg19 resnet18-cifar vgg19-cifar]
       [--approx reduce expand] [--structures diagonal dense] [--batch N] [--repeats 5] [--threads 1]
       [--quick] [--no-memory] [--rows PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import singd.optim.utils as singd_utils
import torch
from singd.optim.optimizer import SINGD as SingdSINGD

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MMAP_THRESHOLD, ROOT, _status, ensure_mmap_allocations, rotated_with_cpu, write_section  # noqa: E402
from tnconv import models  # noqa: E402
from tnconv.integrations.singd import SINGD  # noqa: E402

SIDES = ("sgd", "unfold", "einconv", "tnconv")
SECTION = "SINGD (issue 24)"
SINGD_DEFAULTS = inspect.signature(SingdSINGD.__init__).parameters
LR, MOMENTUM = SINGD_DEFAULTS["lr"].default, SINGD_DEFAULTS["momentum"].default  # SGD's too
PAPER = {  # the paper's table (GPU, batch 128 at 256x256, diagonal structures, KFAC-reduce): time and memory ratios
    "resnet18": {"unfold": (1.67, 1.25), "einconv": (1.33, 1.00)},
    "vgg19": {"unfold": (1.48, 2.28), "einconv": (1.16, 1.14)},
}
TARGETS = {  # issue 24's targets: (time, memory) ratios to SGD of tnconv, diagonal structures
    ("resnet18", "reduce"): (1.07, 1.02), ("resnet18", "expand"): (1.07, 1.02),
    ("vgg19", "reduce"): (1.10, 1.05), ("vgg19", "expand"): (1.10, 1.05),
}


@dataclass(frozen=True)
class Spec:
    """A benchmark model: its factory, classes, input shape (batch first) and ``--quick`` shape."""

    factory: Callable[..., torch.nn.Module]
    classes: int
    shape: tuple[int, ...]
    quick: tuple[int, ...]


MODELS = {
    "resnet18": Spec(models.resnet18, 1000, (8, 3, 224, 224), (2, 3, 64, 64)),
    "vgg19": Spec(models.vgg19, 1000, (4, 3, 224, 224), (2, 3, 64, 64)),
    "resnet18-cifar": Spec(models.resnet18_cifar, 10, (128, 3, 32, 32), (8, 3, 32, 32)),
    "vgg19-cifar": Spec(models.vgg19_cifar, 10, (128, 3, 32, 32), (8, 3, 32, 32)),
}


def shape_of(name: str, quick: bool, batch: int | None) -> tuple[int, ...]:
    spec = MODELS[name]
    shape = spec.quick if quick else spec.shape
    return shape if batch is None else (batch, *shape[1:])


def batch_of(name: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels (seed 1)."""
    generator = torch.Generator().manual_seed(1)
    classes = MODELS[name].classes
    return torch.randn(shape, generator=generator), torch.randint(0, classes, shape[:1], generator=generator)


@contextlib.contextmanager
def averaged_by_unfold() -> Iterator[None]:
    """singd's KFAC-reduce patch averages from its unfolded patches (``_extract_patches``, ``F.unfold``) while the
    context is open: the ``unfold`` side's backward pass (the hooks compute them there)."""
    original = singd_utils._extract_averaged_patches
    singd_utils._extract_averaged_patches = lambda x, *args: singd_utils._extract_patches(x, *args).mean(1)
    try:
        yield
    finally:
        singd_utils._extract_averaged_patches = original


def step_of(side: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, approx: str,
            structure: str) -> Callable[[], None]:  # fmt: skip
    """One training step of ``side`` on ``model`` (its optimizers built here)."""
    norms = [p for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    if side == "sgd":
        optimizers: list[torch.optim.Optimizer] = [torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)]
    else:
        cls = SINGD if side == "tnconv" else SingdSINGD
        settings = dict(structures=(structure, structure), kfac_approx=approx, T=1, warn_unsupported=False)
        optimizers = [cls(model, **settings)]
        if norms:
            optimizers.append(torch.optim.SGD(norms, lr=LR, momentum=MOMENTUM))
    unfolding = side == "unfold" and approx == "reduce"

    def step() -> None:
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        with averaged_by_unfold() if unfolding else contextlib.nullcontext():
            loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    return step


def sides_of(approx: str) -> tuple[str, ...]:
    """The optimizers compared: ``einconv`` only for KFAC-reduce (for KFAC-expand it is ``unfold``'s code)."""
    return SIDES if approx == "reduce" else tuple(side for side in SIDES if side != "einconv")


def measure(name: str, approx: str, structure: str, shape: tuple[int, ...], repeats: int
            ) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Median seconds per step of each side, in one process, rotated rounds: wall-clock and this process's CPU
    time (which other processes on a loaded machine do not inflate)."""
    torch.manual_seed(0)
    model = MODELS[name].factory()
    x, y = batch_of(name, shape)
    steps = {side: step_of(side, copy.deepcopy(model), x, y, approx, structure) for side in sides_of(approx)}
    return rotated_with_cpu(steps, repeats)


def child_memory(name: str, approx: str, structure: str, side: str, shape: tuple[int, ...], threads: int) -> int:
    """Peak bytes of ``side``'s step (see the module docstring), measured in a fresh process; -1 when it fails."""
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    command = [sys.executable, __file__, "--peak", name, approx, structure, side, ",".join(map(str, shape)),
               "--threads", str(threads)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode:
        print(f"  memory of {name} {approx} {structure} {side} failed: {result.stderr.strip().splitlines()[-1:]}",
              flush=True)
        return -1
    return int(json.loads(result.stdout.splitlines()[-1]))


def peak_in_this_process(name: str, approx: str, structure: str, side: str, shape: tuple[int, ...]) -> int:
    """``--peak``: the resident set's peak during a step after a warm-up step, less that before the model."""
    ensure_mmap_allocations()
    x, y = batch_of(name, shape)
    before = _status("VmRSS")
    torch.manual_seed(0)
    step = step_of(side, MODELS[name].factory(), x, y, approx, structure)
    step()
    Path("/proc/self/clear_refs").write_text("5")
    step()
    return _status("VmHWM") - before


def run(name: str, approx: str, structure: str, shape: tuple[int, ...], repeats: int, threads: int,
        memory: bool) -> dict:  # fmt: skip
    """One row: times, peak memory, the load and the date of one (model, approximation, structure)."""
    load = os.getloadavg()[0]
    times, cpu = measure(name, approx, structure, shape, repeats)
    peaks = {side: child_memory(name, approx, structure, side, shape, threads) for side in times} if memory else {}
    row = {"model": name, "shape": list(shape), "approx": approx, "structure": structure, "threads": threads,
           "repeats": repeats, "times": times, "cpu": cpu, "peaks": peaks, "date": time.strftime("%Y-%m-%d %H:%M"),
           "load": round(max(load, os.getloadavg()[0]), 1)}
    print(table([row]), flush=True)
    return row


# --- the report ----------------------------------------------------------------------------------------------

NAMES = {"sgd": "SGD", "unfold": "SINGD (unfold)", "einconv": "SINGD (singd 0.0.5, einconv)",
         "tnconv": "SINGD (tnconv)"}


def _cell(seconds: float, base: float) -> str:
    return f"{seconds:.3g} ({seconds / base:.2f}x)"


def _memory(peak: int | None, base: int | None) -> str:
    if peak is None or base is None or peak < 0 or base <= 0:
        return "-"
    return f"{peak / 2**30:.2f} ({peak / base:.2f}x)"


def _paper(row: dict, side: str) -> str:
    paper = PAPER.get(row["model"], {}).get(side)
    if row["approx"] != "reduce" or row["structure"] != "diagonal":
        return ""
    if side == "sgd" and row["model"] in PAPER:
        return "1.00x, 1.00x"
    return "" if paper is None else f"{paper[0]:.2f}x, {paper[1]:.2f}x"


def _target(row: dict, side: str) -> str:
    target = TARGETS.get((row["model"], row["approx"])) if row["structure"] == "diagonal" and side == "tnconv" else None
    if target is None or not row["peaks"]:
        return ""
    times, peaks = row["cpu"], row["peaks"]
    time_ratio, memory_ratio = times["tnconv"] / times["sgd"], peaks["tnconv"] / peaks["sgd"]
    met = time_ratio <= target[0] and memory_ratio <= target[1]
    if row["approx"] == "reduce" and "einconv" in times:
        met = met and times["tnconv"] <= times["einconv"]
    return f"<= {target[0]:.2f}x, <= {target[1]:.2f}x: {'met' if met else 'MISSED'}"


def table(rows: list[dict]) -> str:
    """The rows in the paper's layout: net, optimizer, seconds per iteration and peak GiB (ratios to SGD)."""
    lines = ["| net (input) | approx, structure | optimizer | per-iteration [s] | CPU time [s] | peak memory [GiB] "
             "| paper (time, memory) | target (tnconv) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        net = f"{row['model']} ({'x'.join(map(str, row['shape']))})"
        times, cpu, peaks = row["times"], row["cpu"], row["peaks"]
        for number, side in enumerate(times):
            first = number == 0
            lines.append(
                f"| {net if first else ''} | {row['approx'] + ', ' + row['structure'] if first else ''} | {NAMES[side]} "
                f"| {_cell(times[side], times['sgd'])} | {_cell(cpu[side], cpu['sgd'])} "
                f"| {_memory(peaks.get(side), peaks.get('sgd'))} "
                f"| {_paper(row, side)} | {_target(row, side)} |"
            )
    return "\n".join(lines)


def markdown(path: Path, rows: list[dict], quick: bool) -> None:
    """The section "SINGD (issue 24)" of ``path`` from ``rows`` (other sections are kept)."""
    runs = sorted({(row["date"], row["load"], row["threads"], row["repeats"]) for row in rows})
    dated = "; ".join(f"{date} (load {load}, {threads} thread(s), {repeats} round(s))"
                      for date, load, threads, repeats in runs)
    body = f"""`python benchmarks/bench_singd.py{' --quick' if quick else ''}` (CPU, float32; {dated}).
Time per iteration: median of interleaved rounds (order rotated), wall-clock and the process's CPU time
(which other processes on the shared machine do not inflate; the targets are checked on it); peak memory: the resident set's peak
during a step after a warm-up step, less the libraries and the batch (each optimizer in its own process).
Ratios to SGD in parentheses. The paper's numbers (GPU, batch 128 at 256x256, diagonal structures,
KFAC-reduce) stand beside the rows they correspond to: its "SINGD" is `unfold`, its "SINGD+TN" is singd's
own einconv path. For KFAC-expand singd unfolds whatever the reduce path, so `unfold` is singd's own there.

{table(rows)}
"""
    write_section(path, SECTION, body)


# --- command line --------------------------------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []


def merged(kept: list[dict], new: list[dict]) -> list[dict]:
    """``kept`` with the rows ``new`` measures again replaced (same model, shape, approx, structure, threads), new
    ones appended; ordered by model, approximation and structure."""
    key = ("model", "shape", "approx", "structure", "threads")
    fresh = {tuple(map(str, (row[k] for k in key))): row for row in new}
    rows = [fresh.pop(tuple(map(str, (row[k] for k in key))), row) for row in kept] + list(fresh.values())
    names = list(MODELS)
    return sorted(rows, key=lambda row: (names.index(row["model"]), row["shape"][0], row["approx"] != "reduce",
                                         row["structure"] != "diagonal"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--approx", nargs="*", choices=("reduce", "expand"), default=["reduce", "expand"])
    parser.add_argument("--structures", nargs="*", choices=tuple(SingdSINGD.SUPPORTED_STRUCTURES),
                        default=["diagonal"])
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 64x64, batch 2, one round: a smoke run")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--rows", default=None, help="kept rows (default benchmarks/singd.json; none with --quick)")
    parser.add_argument("--markdown", default=None,
                        help="the results page (default benchmarks/RESULTS.md; none with --quick)")
    parser.add_argument("--peak", nargs=5, metavar=("MODEL", "APPROX", "STRUCTURE", "SIDE", "SHAPE"),
                        help=argparse.SUPPRESS)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    warnings.filterwarnings("ignore", message="Calling naive implementation")
    if options.peak:
        name, approx, structure, side, shape = options.peak
        print(json.dumps(peak_in_this_process(name, approx, structure, side, tuple(map(int, shape.split(","))))))
        return
    models_run = ["resnet18"] if options.quick and options.models == list(MODELS) else options.models
    repeats = options.repeats or (1 if options.quick else 5)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, {options.threads} thread(s), "
          f"float32, {repeats} round(s), load {os.getloadavg()[0]:.1f}", flush=True)
    rows = [run(name, approx, structure, shape_of(name, options.quick, options.batch), repeats, options.threads,
                not options.no_memory)
            for name in models_run for approx in options.approx for structure in options.structures]  # fmt: skip
    store = options.rows or (None if options.quick else str(ROOT / "benchmarks" / "singd.json"))
    kept = merged(load_rows(Path(store)) if store else [], rows)
    if store:
        Path(store).write_text(json.dumps({"rows": kept}, indent=1) + "\n", encoding="utf-8")
    page = options.markdown or (None if options.quick else str(ROOT / "benchmarks" / "RESULTS.md"))
    if page:
        markdown(Path(page), kept, options.quick)


if __name__ == "__main__":
    main()
