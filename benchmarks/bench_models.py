"""Curvature of whole models: tnconv against unfold-based code, curvlinops and BackPACK (issue 15).

Models of ``tnconv.models``: a CIFAR ResNet-18 and VGG-19 at batch 32 (``(32, 3, 32, 32)``), the
ConvNeXt-style depthwise network at ``(8, 3, 224, 224)`` (``--quick``: batch 4, 4, 2 and
ConvNeXt at 64x64, one timed round); ``tiny`` is a small CNN for smoke runs. CPU, float32,
10 classes, cross-entropy; 1 and 2 threads. Every comparison runs its sides in one process,
round-robin with the order rotated each round (``common.rotated``), medians of ``--repeats``
rounds after a warm-up round:

- ``A expand`` / ``A reduce``: the input factors of all supported layers (convs and
  ``Linear``) from the inputs one forward records: ``tnconv`` (``factors.input_factor``: new
  factors, as ``kfac_*_factor`` return them), ``in place`` (the same blended into existing
  factors, as ``KFAC.update`` does) and ``unfold`` (``F.unfold``, then the per-group Gram with
  ``torch.einsum``; ``u^T u`` for ``Linear``).
- ``update <approx>/<fisher>``: ``KFAC.update(x, y)`` against curvlinops'
  ``KFACLinearOperator.compute_kronecker_factors()`` on the same model and batch (training mode,
  type-2 and empirical Fisher, expand and reduce); curvlinops supports ``Conv2d`` without groups
  and ``Linear``, so the depthwise convs' weights are frozen for both sides (ConvNeXt).
- ``per-sample`` / ``diag GGN``: ``per_sample_grads`` / ``diag_ggn`` against BackPACK's
  ``BatchGrad`` / ``DiagGGNExact`` (forward and backward of both; BackPACK needs the model in
  evaluation mode and its fx converter for the residual adds; it cannot run the ConvNeXt).
- ``train step``: one step of SGD (momentum 0.9) against one with KFAC: the forward and backward,
  ``KFAC.update`` (factors every step), ``Preconditioner.step``, the optimizer; the damped
  Cholesky factors are refreshed every 10 steps (``refresh``: a snapshot of the factors loaded into
  a second ``KFAC`` and factorised), counted at a tenth of its time.

Peak memory (``--memory``, on by default): for ``per-sample``, ``diag GGN`` and ``train step``,
each side runs twice in a fresh child process (glibc forced to ``mmap`` large blocks,
``common.MMAP_THRESHOLD``); the extra peak resident set of the second call is reported.

Output: the tables on stdout; the rows kept in ``--rows`` (benchmarks/models.json: a row per model,
thread count and comparison, with its date, rounds and load; a new run replaces the rows it
measures and keeps the others, so that the models and thread counts, hours of runs on a 2-core
machine together, can be measured in separate runs; ``--quick`` runs keep none unless ``--rows``
is given); from all kept rows, the section "Whole models (issue 15)" of ``--markdown``
(benchmarks/RESULTS.md; other sections are kept) and a plot ``--plot`` (benchmarks/models.png).

Usage: python benchmarks/bench_models.py [--models resnet18 vgg19 convnext] [--threads 1 2] [--repeats 3]
       [--quick] [--no-memory] [--tasks TASK...] [--rows PATH] [--markdown PATH] [--plot PATH]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MMAP_THRESHOLD, ROOT, ensure_mmap_allocations, peak_extra, rotated  # noqa: E402
from models_report import markdown, plot  # noqa: E402
from tnconv import models  # noqa: E402
from tnconv.curvature import KFAC, diag_ggn, per_sample_grads  # noqa: E402
from tnconv.curvature.factors import Geometry, input_factor  # noqa: E402
from tnconv.curvature.hooks import find_layers, forward  # noqa: E402

CLASSES = 10
LOSS = torch.nn.CrossEntropyLoss()
UPDATES = [("expand", "type-2"), ("expand", "empirical"), ("reduce", "type-2"), ("reduce", "empirical")]
REFRESH_EVERY = 10
MEMORY_TASKS = ("per-sample", "diag GGN", "train step")


def tiny_cnn(num_classes: int = CLASSES) -> torch.nn.Module:
    """A conv, BatchNorm, a depthwise conv, pooling and a ``Linear``: every path of the comparisons, fast."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(), torch.nn.AvgPool2d(4), torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, num_classes),
    )  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """A benchmark model: its factory and input shapes (full and ``--quick``)."""

    factory: Callable[..., torch.nn.Module]
    shape: tuple[int, ...]
    quick: tuple[int, ...]


MODELS = {
    "resnet18": Spec(models.resnet18_cifar, (32, 3, 32, 32), (4, 3, 32, 32)),
    "vgg19": Spec(models.vgg19_cifar, (32, 3, 32, 32), (4, 3, 32, 32)),
    "convnext": Spec(models.convnext_depthwise, (8, 3, 224, 224), (2, 3, 64, 64)),
    "tiny": Spec(tiny_cnn, (8, 3, 16, 16), (4, 3, 16, 16)),
}


def setup(name: str, quick: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model (seed 0, training mode) and a random batch of inputs and class targets (seed 1)."""
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.factory(num_classes=CLASSES)
    generator = torch.Generator().manual_seed(1)
    shape = spec.quick if quick else spec.shape
    return model, torch.randn(shape, generator=generator), torch.randint(0, CLASSES, shape[:1], generator=generator)


# --- the sides of each comparison ---------------------------------------------------------------


def unfold_factor(x: torch.Tensor, layer: Geometry, reduce: bool) -> torch.Tensor:
    """KFAC's ``A`` the unfold-based way: ``F.unfold`` (2-d convs), then a per-group Gram by ``torch.einsum``."""
    if layer.kind == "linear":
        u = x.reshape(x.shape[0], -1, x.shape[-1])
        if reduce:
            sums = u.sum(1)
            return (sums.T @ sums / (u.shape[0] * u.shape[1] ** 2))[None]
        flat = u.reshape(-1, u.shape[-1])
        return (flat.T @ flat / flat.shape[0])[None]
    conv = layer.conv
    padding = [left for left, right in conv["padding"]]  # type: ignore[attr-defined]
    u = F.unfold(x, conv["kernel_size"], conv["dilation"], padding, conv["stride"])  # type: ignore[arg-type]
    batch, _, locations = u.shape
    u = u.reshape(batch, layer.groups, -1, locations)
    if reduce:
        sums = u.sum(-1)
        return torch.einsum("nga,ngb->gab", sums, sums) / (batch * locations**2)
    return torch.einsum("ngat,ngbt->gab", u, u) / (batch * locations)


def factor_sides(model: torch.nn.Module, x: torch.Tensor, reduce: bool) -> dict[str, Callable[[], object]]:
    """All layers' ``A``: tnconv new, tnconv blended into existing factors, unfold-based."""
    layers = find_layers(model)
    with torch.no_grad():
        _, records = forward(model, layers, x)
    inputs = [(records[layer.name].x, records[layer.name].geometry) for layer in layers]
    running = [input_factor(x, geometry, reduce) for x, geometry in inputs]
    return {
        "tnconv": lambda: [input_factor(x, geometry, reduce) for x, geometry in inputs],
        "in place": lambda: [input_factor(x, g, reduce, a, 0.5, 0.5) for (x, g), a in zip(inputs, running)],
        "unfold": lambda: [unfold_factor(x, geometry, reduce) for x, geometry in inputs],
    }


def grouped_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights of grouped convs, which curvlinops' KFAC does not support."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]


def update_sides(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, approx: str, fisher: str
                 ) -> dict[str, Callable[[], object]]:  # fmt: skip
    """``KFAC.update`` and curvlinops' factors on the same layers (grouped convs frozen for both)."""
    from curvlinops import KFACLinearOperator

    for weight in grouped_weights(model):
        weight.requires_grad_(False)
    kfac = KFAC(model, LOSS, approx=approx, fisher=fisher)
    params = [p for layer in kfac.layers for p in (layer.module.weight, layer.module.bias) if p is not None]
    operator = KFACLinearOperator(model, LOSS, params, [(x, y)], fisher_type=fisher, kfac_approx=approx,
                                  check_deterministic=False)  # fmt: skip
    return {"tnconv": lambda: kfac.update(x, y), "curvlinops": operator.compute_kronecker_factors}


def backpack_side(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, extension: str) -> Callable[[], object]:
    """BackPACK's ``extension`` (``BatchGrad``/``DiagGGNExact``) on an fx-converted copy of the evaluation-mode model."""
    from backpack import backpack, extend, extensions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extended = extend(copy.deepcopy(model).eval(), use_converter=True)
    loss = extend(torch.nn.CrossEntropyLoss())

    attribute = {"BatchGrad": "grad_batch", "DiagGGNExact": "diag_ggn_exact"}[extension]

    def run() -> dict[str, torch.Tensor]:
        """The results taken off the parameters, as tnconv's side returns them (a kept attribute would sit in the
        resident set before the next call and hide that call's results from its peak memory)."""
        extended.zero_grad(set_to_none=True)
        with warnings.catch_warnings(), backpack(getattr(extensions, extension)()):
            warnings.simplefilter("ignore")
            loss(extended(x), y).backward()
        results = {}
        for name, parameter in extended.named_parameters():
            results[name] = getattr(parameter, attribute)
            delattr(parameter, attribute)
        return results

    return run


def gradient_sides(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: str
                   ) -> dict[str, Callable[[], object]]:  # fmt: skip
    """``per_sample_grads`` or ``diag_ggn`` against BackPACK (left out where BackPACK cannot run the model)."""
    model = model.eval()
    if task == "per-sample":
        sides: dict[str, Callable[[], object]] = {"tnconv": lambda: per_sample_grads(model, LOSS, x, y)}
        extension = "BatchGrad"
    else:
        sides = {"tnconv": lambda: diag_ggn(model, LOSS, x, y)}
        extension = "DiagGGNExact"
    try:
        run = backpack_side(model, x, y, extension)
        run()
    except Exception as error:  # BackPACK refuses the model: report why, time tnconv alone
        print(f"  BackPACK cannot run it: {type(error).__name__}: {str(error)[:120]}", flush=True)
        return sides
    return {**sides, "backpack": run}


class TrainSteps:
    """SGD steps with and without the KFAC preconditioner, timing the parts of the KFAC step."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model.train(), x, y
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.kfac = KFAC(model, LOSS, ema_decay=0.95)
        self.snapshot = KFAC(model, LOSS, ema_decay=0.95)  # the factors of the last refresh
        self.preconditioner = self.snapshot.preconditioner(1e-3)
        self.parts: dict[str, list[float]] = {"forward+backward": [], "update": [], "precondition": [], "step": []}
        self.kfac_step()
        self.refresh()

    def backward(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        LOSS(self.model(self.x), self.y).backward()

    def sgd_step(self) -> None:
        self.backward()
        self.optimizer.step()

    def kfac_step(self) -> None:
        marks = [time.perf_counter()]
        self.backward()
        marks.append(time.perf_counter())
        self.kfac.update(self.x, self.y)
        marks.append(time.perf_counter())
        if self.snapshot.count:
            self.preconditioner.step()
        marks.append(time.perf_counter())
        self.optimizer.step()
        marks.append(time.perf_counter())
        for part, start, stop in zip(self.parts, marks, marks[1:]):
            self.parts[part].append(stop - start)

    def refresh(self) -> None:
        """Load the current factors into the snapshot and factorise them (every ``REFRESH_EVERY`` steps)."""
        self.snapshot.load_state_dict(self.kfac.state_dict())
        self.preconditioner._choleskys()


def step_sides(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, TrainSteps]:
    steps = TrainSteps(model, x, y)
    return {"sgd": steps.sgd_step, "kfac": steps.kfac_step, "refresh": steps.refresh}, steps


def sides_of(task: str, name: str, quick: bool) -> tuple[dict[str, Callable[[], object]], TrainSteps | None]:
    """The functions compared by ``task`` on model ``name`` (a fresh model and batch)."""
    model, x, y = setup(name, quick)
    if task in ("A expand", "A reduce"):
        return factor_sides(model, x, task == "A reduce"), None
    if task.startswith("update "):
        approx, fisher = task.removeprefix("update ").split("/")
        return update_sides(model, x, y, approx, fisher), None
    if task in ("per-sample", "diag GGN"):
        return gradient_sides(model, x, y, task), None
    return step_sides(model, x, y)


TASKS = ("A expand", "A reduce", *(f"update {a}/{f}" for a, f in UPDATES), "per-sample", "diag GGN", "train step")


# --- measuring ------------------------------------------------------------------------------------


def measure(name: str, threads: int, repeats: int, quick: bool, tasks: tuple[str, ...] = TASKS) -> list[dict]:
    """One row per task of ``tasks``: median seconds of each side (and the KFAC step's parts)."""
    torch.set_num_threads(threads)
    rows = []
    for task in tasks:
        sides, steps = sides_of(task, name, quick)
        times = rotated(sides, repeats)
        row = {"model": name, "threads": threads, "task": task, "times": times, "repeats": repeats,
               "date": time.strftime("%Y-%m-%d %H:%M"), "load": round(os.getloadavg()[0], 1)}
        if steps is not None:
            row["parts"] = {part: sorted(values)[len(values) // 2] for part, values in steps.parts.items()}
        rows.append(row)
        cells = "  ".join(f"{side}={seconds * 1e3:.1f}ms" for side, seconds in times.items())
        print(f"{name:9s} {threads} thread(s)  {task:24s} {cells}", flush=True)
    return rows


def child_memory(name: str, task: str, side: str, quick: bool) -> int:
    """Extra peak bytes of the second call of ``side`` of ``task``, measured in a fresh process."""
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    command = [sys.executable, __file__, "--peak", name, task, side, *(["--quick"] if quick else [])]
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode:
        print(f"  memory of {name} {task} {side} failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return -1
    return int(json.loads(result.stdout.splitlines()[-1]))


def peak_in_this_process(name: str, task: str, side: str, quick: bool) -> int:
    """``--peak``: one warm-up call of the side, then the extra peak memory of a second one."""
    ensure_mmap_allocations()
    torch.set_num_threads(1)
    sides, steps = sides_of(task, name, quick)
    if side == "kfac" and steps is not None:  # a KFAC step's memory includes its update and a refresh
        function: Callable[[], object] = lambda: (steps.kfac_step(), steps.refresh())  # noqa: E731
    else:
        function = sides[side]
    function()
    return peak_extra(function)


def memory_rows(names: list[str], quick: bool) -> list[dict]:
    rows = []
    for name in names:
        for task in MEMORY_TASKS:
            sides = ("sgd", "kfac") if task == "train step" else ("tnconv", "backpack")
            peaks = {side: child_memory(name, task, side, quick) for side in sides}
            rows.append({"model": name, "task": task, "peaks": peaks, "date": time.strftime("%Y-%m-%d %H:%M")})
            print(f"{name:9s} memory {task:12s} " + "  ".join(f"{s}={b / 2**20:.0f}MB" for s, b in peaks.items()),
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=["resnet18", "vgg19", "convnext"])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small batches, one timed round: a smoke run")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--tasks", nargs="*", choices=TASKS, default=list(TASKS), help="the timed tasks (default all)")
    parser.add_argument("--rows", default=None, help="kept rows (default benchmarks/models.json; none with --quick)")
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "models.png"))
    parser.add_argument("--peak", nargs=3, metavar=("MODEL", "TASK", "SIDE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.peak:
        print(json.dumps(peak_in_this_process(*options.peak, options.quick)))
        return
    repeats = options.repeats or (1 if options.quick else 3)
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, float32, {repeats} round(s)")
    store = options.rows or (None if options.quick else str(ROOT / "benchmarks" / "models.json"))
    kept = load_rows(Path(store)) if store else {"rows": [], "memory": []}
    rows = [row for name in options.models for threads in options.threads
            for row in measure(name, threads, repeats, options.quick, tuple(options.tasks))]  # fmt: skip
    memory = [] if options.no_memory else memory_rows(options.models, options.quick)
    kept = {"rows": merged(kept["rows"], rows, ("model", "threads", "task")),
            "memory": merged(kept["memory"], memory, ("model", "task"))}
    if store:
        Path(store).write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    models_kept = list(dict.fromkeys(row["model"] for row in kept["rows"] + kept["memory"]))
    shapes = {name: (MODELS[name].quick if options.quick else MODELS[name].shape) for name in models_kept}
    markdown(Path(options.markdown), kept["rows"], kept["memory"], shapes, options.quick)
    plot(Path(options.plot), kept["rows"])


def load_rows(path: Path) -> dict[str, list[dict]]:
    """The rows kept at ``path`` (``{"rows": [...], "memory": [...]}``), empty when there is no such file."""
    if not path.exists():
        return {"rows": [], "memory": []}
    kept = json.loads(path.read_text(encoding="utf-8"))
    return {"rows": kept.get("rows", []), "memory": kept.get("memory", [])}


def merged(kept: list[dict], new: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``kept`` with each row that ``new`` measures again (same ``key`` fields) replaced, new ones appended; in
    the order of models, thread counts and comparisons."""
    fresh = {tuple(row[k] for k in key): row for row in new}
    rows = [fresh.pop(tuple(row[k] for k in key), row) for row in kept] + list(fresh.values())
    models = list(MODELS)
    tasks = list(TASKS)
    return sorted(rows, key=lambda row: (models.index(row["model"]), row.get("threads", 0), tasks.index(row["task"])
                                         if row["task"] in tasks else len(tasks)))


if __name__ == "__main__":
    main()
