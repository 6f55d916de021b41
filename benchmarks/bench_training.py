"""Training steps with KFAC against SGD (issue 23): time and peak memory per step, side by side in one process.

Models of ``tnconv.models`` (CIFAR ResNet-18 and VGG-19 on ``(batch, 3, 32, 32)``, ``tiny`` on 16x16 for smoke runs; 10 classes, cross-entropy, float32, CPU, training mode). Every side keeps its own copy of the model
(seed 0), its ``torch.optim.SGD`` (momentum 0.9) and, for KFAC, its ``KFAC`` (``ema_decay=0.95``) and
preconditioner (``damping`` 1e-3). The sides of one model, batch and thread count run round-robin in one
process, the order rotated each round (``common.rotated``), medians of ``--rounds`` rounds after a warm-up:

- ``sgd``: ``zero_grad``, forward, ``loss.backward()``, ``optimizer.step()``.
- ``track <approx>/<fisher>``: the same inside ``with kfac.track():`` (factors every step), then
  ``preconditioner.step()`` with the inverses of the last inversion, then ``optimizer.step()``.
- ``update <approx>/<fisher>``: the old path: forward and backward, ``kfac.update(x, y)`` (its own forward
  and backward), ``preconditioner.step()``, ``optimizer.step()``.
- ``invert``: one inversion of all damped factors (what ``preconditioner.step()`` adds on every
  ``invert_every``-th step).

A configuration's step with ``invert_every=k`` costs its side's step plus ``invert / k``: the ratios to
``sgd`` are printed for each ``k`` of ``--invert-every``, and beside each the FLOP floor of that
configuration: ``(sgd + factors + extra backward + applying + inversions / k) / sgd`` in FLOPs (2 per
multiply-add), from the layer shapes and the programs' counts: ``sgd`` three times each supported layer's
forward products (forward, input and weight gradients); factors: ``factors.input_factor_cost`` for ``A``,
``gram.flops`` of the output gradients (``(1, G, c, N*T)`` expand, ``(1, G, c, N)`` reduce) per column for
``B``; the extra backward of ``mc`` / ``type-2`` (and of ``update``, which also runs its own forward): the
layers' forward products once per column (``mc_samples`` 1, 10 classes, 1 for ``empirical``); applying: ``dB^2 dA + dB dA^2`` per group; inverting: ``dA^3 + dB^3`` per
group (Cholesky and its inverse). The floor counts only the layers with curvature (BatchNorm, ReLU, pooling,
the optimizer are left out), so it is a lower bound of the ratio a machine with one FLOP rate would show.

Peak memory (``--memory CONFIG...``, default ``sgd`` and every ``track`` side measured): each side runs a
warm-up step and then one more step (with an inversion, for KFAC) in a fresh child process (glibc forced to
``mmap`` large blocks), and the extra peak resident set of that step is reported (``common.peak_extra``).

Output: the tables on stdout; the rows kept in ``--rows`` (benchmarks/training.json: a new run replaces the
rows of the models, batches and thread counts it measures and keeps the others, so that the hours of full
runs can be split); from all kept rows, the section "Training steps (issue 23)" of ``--markdown``
(benchmarks/RESULTS.md, other sections kept) and a plot ``--plot`` (benchmarks/training.png: the time ratios at the
middle ``--invert-every``, 10 by default, and the memory ratios).

Usage: python benchmarks/bench_training.py [--models resnet18 vgg19] [--batches 128 32] [--threads 1 2]
       [--configs CONFIG...] [--invert-every 1 10 100] [--rounds 3] [--memory CONFIG...] [--rows PATH]
       [--markdown PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import CLASSES, LOSS, tiny_cnn  # noqa: E402
from common import MMAP_THRESHOLD, ROOT, ensure_mmap_allocations, peak_extra, rotated, write_section  # noqa: E402
from tnconv import models  # noqa: E402
from tnconv.curvature import KFAC  # noqa: E402
from tnconv.curvature.factors import input_factor_cost  # noqa: E402
from tnconv.curvature.hooks import forward  # noqa: E402
from tnconv.curvature.kfac_batch import factor_shapes  # noqa: E402
from tnconv.routines import gram  # noqa: E402

FACTORIES: dict[str, Callable[..., torch.nn.Module]] = {
    "resnet18": models.resnet18_cifar, "vgg19": models.vgg19_cifar, "tiny": tiny_cnn,
}  # fmt: skip
IMAGE_SIZE = {"tiny": 16}  # the others take CIFAR's 32x32
KFAC_SIDES = ("track reduce/empirical", "track expand/empirical", "track reduce/mc", "track expand/type-2",
              "update reduce/empirical")  # fmt: skip
SIDES = ("sgd", *KFAC_SIDES)
DAMPING = 1e-3
NEVER = 2**62  # the timed steps apply the inverses of the warm-up step; ``invert`` is timed on its own
HEADING = "Training steps (issue 23)"


def setup(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model (seed 0, training mode) and a random batch of CIFAR-shaped inputs and targets (seed 1)."""
    torch.manual_seed(0)
    model = FACTORIES[name](num_classes=CLASSES).train()
    generator = torch.Generator().manual_seed(1)
    size = IMAGE_SIZE.get(name, 32)
    x = torch.randn(batch, 3, size, size, generator=generator)
    return model, x, torch.randint(0, CLASSES, (batch,), generator=generator)


class Side:
    """One way of training: its own model copy, optimizer and (for KFAC) factors and preconditioner."""

    def __init__(self, side: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.side, self.model, self.x, self.y = side, copy.deepcopy(model), x, y
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        self.kfac = None
        if side != "sgd":
            path, settings = side.split(" ")
            approx, fisher = settings.split("/")
            self.tracked = path == "track"
            self.kfac = KFAC(self.model, LOSS, approx=approx, fisher=fisher, ema_decay=0.95)
            self.preconditioner = self.kfac.preconditioner(DAMPING, invert_every=NEVER)
        self.step()  # the warm-up step: for KFAC, the first factors and their inverses

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.kfac is None:
            LOSS(self.model(self.x), self.y).backward()
        elif self.tracked:
            with self.kfac.track():
                LOSS(self.model(self.x), self.y).backward()
        else:
            LOSS(self.model(self.x), self.y).backward()
            self.kfac.update(self.x, self.y)
        if self.kfac is not None:
            self.preconditioner.step()
        self.optimizer.step()

    def invert(self) -> None:
        """The inversion that ``preconditioner.step()`` runs on every ``invert_every``-th step."""
        self.preconditioner._invert()


def sides_of(name: str, batch: int, sides: tuple[str, ...]) -> tuple[dict[str, Callable[[], object]], Side | None]:
    """The timed functions: each side's step and, when a KFAC side runs, ``invert`` (of the first KFAC side)."""
    model, x, y = setup(name, batch)
    built = {side: Side(side, model, x, y) for side in sides}
    functions: dict[str, Callable[[], object]] = {side: built[side].step for side in sides}
    inverting = next((built[side] for side in sides if side != "sgd"), None)
    if inverting is not None:
        functions["invert"] = inverting.invert
    return functions, inverting


# --- the FLOP floor -------------------------------------------------------------------------------


def flop_counts(name: str, batch: int) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of the parts of a step (module docstring): ``sgd``, ``forward``, ``A expand``,
    ``A reduce``, ``B expand``, ``B reduce`` (per column), ``apply``, ``invert``."""
    model, x, _ = setup(name, batch)
    kfac = KFAC(model, LOSS)
    with torch.no_grad():
        _, records = forward(model, kfac.layers, x)
    counts = dict.fromkeys(("forward", "A expand", "A reduce", "B expand", "B reduce", "apply", "invert"), 0.0)
    for layer in kfac.layers:
        record = records[layer.name]
        output = record.probe
        products = output.numel() * layer.weight_shape.numel() / layer.layout.out_channels
        counts["forward"] += 2 * products
        (groups, d_a, _), (_, d_b, _) = factor_shapes(layer, joined=False)
        for approx in ("expand", "reduce"):
            counts[f"A {approx}"] += input_factor_cost(record.x, record.geometry, approx == "reduce").flops
        locations = output.numel() // (output.shape[0] * layer.layout.out_channels)
        counts["B expand"] += gram.flops((1, groups, d_b, output.shape[0] * locations))
        counts["B reduce"] += gram.flops((1, groups, d_b, output.shape[0]))
        counts["apply"] += 2 * groups * (d_b * d_b * d_a + d_b * d_a * d_a)
        counts["invert"] += 2 * groups * (d_a**3 + d_b**3)
    counts["sgd"] = 3 * counts["forward"]
    return counts


def floor(counts: dict[str, float], side: str, invert_every: int) -> float:
    """The FLOP floor of ``side`` with ``invert_every``, as a ratio to the SGD step (module docstring)."""
    path, settings = side.split(" ")
    approx, fisher = settings.split("/")
    columns = {"empirical": 1, "mc": 1, "type-2": CLASSES}[fisher]
    extra = columns * counts["forward"] if fisher != "empirical" or path == "update" else 0.0
    if path == "update":  # its own forward on top of the caller's, then the columns' backward
        extra += counts["forward"]
    total = counts["sgd"] + counts[f"A {approx}"] + columns * counts[f"B {approx}"] + extra + counts["apply"]
    return (total + counts["invert"] / invert_every) / counts["sgd"]


# --- measuring ------------------------------------------------------------------------------------


def measure(name: str, batch: int, threads: int, rounds: int, sides: tuple[str, ...]) -> dict:
    """One row: the median seconds of each side (and ``invert``) for ``name`` at ``batch`` and ``threads``."""
    torch.set_num_threads(threads)
    functions, _ = sides_of(name, batch, sides)
    times = rotated(functions, rounds)
    row = {"model": name, "batch": batch, "threads": threads, "times": times, "rounds": rounds,
           "flops": flop_counts(name, batch), "date": time.strftime("%Y-%m-%d %H:%M"),
           "load": round(os.getloadavg()[0], 1)}  # fmt: skip
    cells = "  ".join(f"{side}={seconds:.3f}s" for side, seconds in times.items())
    print(f"{name:9s} batch {batch:3d} {threads} thread(s)  {cells}  (load {row['load']})", flush=True)
    return row


def ratios(row: dict, invert_every: list[int]) -> list[dict]:
    """Each KFAC side of ``row`` with each ``invert_every``: seconds per step, ratio to SGD, FLOP floor."""
    times = row["times"]
    result = []
    for side in (side for side in times if side not in ("sgd", "invert")):
        for every in invert_every:
            seconds = times[side] + times["invert"] / every
            ratio = seconds / times["sgd"]
            bound = floor(row["flops"], side, every)
            result.append({"side": side, "invert_every": every, "seconds": seconds, "ratio": ratio,
                           "floor": bound, "over_floor": ratio / bound})  # fmt: skip
    return result


def child_memory(name: str, batch: int, side: str) -> int:
    """Extra peak bytes of one step of ``side`` (after a warm-up step), measured in a fresh process."""
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    command = [sys.executable, __file__, "--peak", name, str(batch), side]
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode:
        print(f"  memory of {name} {batch} {side} failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return -1
    return int(json.loads(result.stdout.splitlines()[-1]))


def peak_in_this_process(name: str, batch: int, side: str) -> int:
    """``--peak``: the extra peak memory of one step of ``side`` (with an inversion, for KFAC) after a warm-up."""
    ensure_mmap_allocations()
    torch.set_num_threads(1)
    model, x, y = setup(name, batch)
    built = Side(side, model, x, y)
    del model
    if built.kfac is None:
        return peak_extra(built.step)
    return peak_extra(lambda: (built.step(), built.invert()))


def memory_row(name: str, batch: int, sides: list[str]) -> dict:
    peaks = {side: child_memory(name, batch, side) for side in sides}
    print(f"{name:9s} batch {batch:3d} memory " + "  ".join(f"{s}={b / 2**20:.0f}MB" for s, b in peaks.items()),
          flush=True)
    return {"model": name, "batch": batch, "peaks": peaks, "date": time.strftime("%Y-%m-%d %H:%M")}


# --- reporting ------------------------------------------------------------------------------------


def markdown(rows: list[dict], memory: list[dict], invert_every: list[int]) -> str:
    """The section's body: per model, batch and thread count, each configuration's time against SGD."""
    lines = [
        "`python benchmarks/bench_training.py` (module docstring): seconds per training step, ratio to an SGD step "
        "measured side by side (interleaved, medians), the FLOP floor of the ratio, and the peak-memory ratio "
        "(fresh child process per side, 1 thread).",
        "",
        "| model | batch | threads | configuration | invert_every | s/step | x SGD | FLOP floor | x floor "
        "| memory x SGD | rounds, load, date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    peaks = {(row["model"], row["batch"]): row["peaks"] for row in memory}
    for row in rows:
        context = f"{row['rounds']}, {row['load']}, {row['date']}"
        lines.append(f"| {row['model']} | {row['batch']} | {row['threads']} | sgd | - | {row['times']['sgd']:.3f} | "
                     f"1.00 | 1.00 | - | 1.00 | {context} |")  # fmt: skip
        peak = peaks.get((row["model"], row["batch"]), {})
        for entry in ratios(row, invert_every):
            side = entry["side"]
            memory_ratio = (f"{peak[side] / peak['sgd']:.2f}" if peak.get(side, -1) > 0 and peak.get("sgd", -1) > 0
                            else "-")  # fmt: skip
            lines.append(
                f"| {row['model']} | {row['batch']} | {row['threads']} | {side} | {entry['invert_every']} | "
                f"{entry['seconds']:.3f} | {entry['ratio']:.2f} | {entry['floor']:.2f} | {entry['over_floor']:.2f} | "
                f"{memory_ratio} | {context} |"
            )
    for row in memory:
        cells = ", ".join(f"{side} {value / 2**20:.0f} MB" for side, value in row["peaks"].items())
        lines.append(f"\nPeak extra memory of a step, {row['model']} batch {row['batch']} ({row['date']}): {cells}.")
    return "\n".join(lines)


def plot(path: Path, rows: list[dict], memory: list[dict], invert_every: list[int]) -> None:
    """Bars of each configuration's time ratio at the middle ``invert_every`` (10 by default: the targets' setting;
    the table has the others) and its memory ratio, where measured, per model, batch and thread count; a line of
    height per bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = sorted(invert_every)[len(invert_every) // 2]
    labels, values = [], []
    for row in rows:
        for entry in ratios(row, [every]):
            labels.append(f"{row['model']} {row['batch']} {row['threads']}t {entry['side']}")
            values.append(entry["ratio"])
    memory_labels, memory_values = [], []
    for row in memory:
        for side, value in row["peaks"].items():
            if side != "sgd" and value > 0 and row["peaks"].get("sgd", -1) > 0:
                memory_labels.append(f"{row['model']} {row['batch']} {side}")
                memory_values.append(value / row["peaks"]["sgd"])
    height = max(5.0, 0.22 * max(len(values), len(memory_values)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, height))
    left.barh(labels, values)
    left.axvline(1.0, color="black", linewidth=0.8)
    left.set_xlabel(f"time per step / SGD step (invert_every={every})")
    left.invert_yaxis()
    right.barh(memory_labels, memory_values, color="tab:orange")
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xlabel("peak memory of a step / SGD step (1 thread)")
    right.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(FACTORIES), default=["resnet18", "vgg19"])
    parser.add_argument("--batches", nargs="*", type=int, default=[128, 32])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--configs", nargs="*", choices=KFAC_SIDES, default=list(KFAC_SIDES),
                        help="the KFAC sides timed beside sgd (default all)")  # fmt: skip
    parser.add_argument("--invert-every", nargs="*", type=int, default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--memory", nargs="*", choices=SIDES, default=None,
                        help="sides whose peak memory is measured (default sgd and the tracked ones; none: no "
                             "memory)")  # fmt: skip
    parser.add_argument("--rows", default=str(ROOT / "benchmarks" / "training.json"))
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "training.png"))
    parser.add_argument("--peak", nargs=3, metavar=("MODEL", "BATCH", "SIDE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message="BatchNorm layers")  # training mode, as in training: expected
    if options.peak:
        name, batch, side = options.peak
        print(json.dumps(peak_in_this_process(name, int(batch), side)))
        return
    sides = ("sgd", *options.configs)
    memory_sides = options.memory if options.memory is not None else [s for s in sides if not s.startswith("update")]
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, float32, {options.rounds} "
          f"round(s)")  # fmt: skip
    rows = [measure(name, batch, threads, options.rounds, sides)
            for name in options.models for batch in options.batches for threads in options.threads]  # fmt: skip
    for row in rows:
        for entry in ratios(row, options.invert_every):
            print(f"  {row['model']} {row['batch']} {row['threads']}t {entry['side']:24s} "
                  f"invert_every={entry['invert_every']:<4d} {entry['ratio']:.2f}x SGD (FLOP floor {entry['floor']:.2f}x,"
                  f" measured/floor {entry['over_floor']:.2f})", flush=True)  # fmt: skip
    memory = [memory_row(name, batch, memory_sides) for name in options.models for batch in options.batches
              if memory_sides]  # fmt: skip
    store = Path(options.rows)
    kept = json.loads(store.read_text(encoding="utf-8")) if store.exists() else {"rows": [], "memory": []}
    kept = {"rows": merged_rows(kept["rows"], rows, ("model", "batch", "threads")),
            "memory": merged_rows(kept["memory"], memory, ("model", "batch"))}  # fmt: skip
    store.write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    write_section(Path(options.markdown), HEADING, markdown(kept["rows"], kept["memory"], options.invert_every))
    plot(Path(options.plot), kept["rows"], kept["memory"], options.invert_every)


def merged_rows(kept: list[dict], new: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``kept`` with the rows that ``new`` measures again (same ``key`` fields) replaced, new ones appended."""
    fresh = {tuple(row[k] for k in key): row for row in new}
    return [fresh.pop(tuple(row[k] for k in key), row) for row in kept] + list(fresh.values())


if __name__ == "__main__":
    main()
