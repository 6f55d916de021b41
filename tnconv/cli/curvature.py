"""``tnconv curvature MODEL``: the KFAC factors of a whole model, layer by layer, and what one ``update`` costs.

For every supported layer of the model (named as in ``model.named_modules()``)
it prints the layer type, the input its routines see, the shapes of the factors
``A`` ``(G, dA, dA)`` and ``B`` ``(G, dB, dB)``, the routine that computes ``A``
(the layer's derived ``kfac_expand``/``kfac_reduce`` network, compiled, or the
``Linear`` case) with its FLOPs, and the time and extra peak memory of the
layer's factors inside one ``KFAC.update``; then the totals and the time and
extra peak memory of the whole ``update`` (``tnconv.cli.curvature_measure``).

This module is light (no torch): the subcommand's parser and the check of its
command line, the header (printed once the model is loaded and checked), and the
text of the report. MODEL is a built-in model of ``tnconv.models`` or ``path/to/file.py:factory``;
the file is only loaded (and its factory checked) after every flag passed.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from tnconv.cli.arguments import _flag, _positive, _repeats
from tnconv.cli.layers import DEFAULT_BATCH, parse_ints
from tnconv.cli.names import hint
from tnconv.cli.show import count
from tnconv.limits import check_allocation

# built-in name -> (factory in tnconv.models, input shape without the batch)
BUILTIN_MODELS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18-cifar": ("resnet18_cifar", (3, 32, 32)),
    "vgg19-cifar": ("vgg19_cifar", (3, 32, 32)),
    "convnext-depthwise": ("convnext_depthwise", (3, 224, 224)),
}
# tnconv.curvature.kfac.APPROXES and tnconv.curvature.columns.FISHERS, repeated so that checking them imports
# no torch (tests/test_cli_curvature.py keeps the copies equal)
APPROXES = ("expand", "reduce")
FISHERS = ("type-2", "mc", "empirical")
LOSSES = ("cross-entropy", "mse")
DEFAULT_CLASSES = 10  # of a built-in model
DEFAULT_REPEATS = 5
SEED = 0
FLOAT32_BYTES = 4  # the inputs are float32 (tnconv.cli.curvature_measure.DTYPE)


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a built-in factory of ``tnconv.models`` (``path`` None) or a file's factory."""

    name: str  # as printed: the built-in name, or path:factory
    factory: str
    path: Path | None = None


@dataclass(frozen=True)
class CurvatureRequest:
    """A ``tnconv curvature`` command line, checked."""

    model: ModelSource
    input_shape: tuple[int, ...]
    approx: str
    fisher: str
    loss: str
    classes: int | None  # None: the built-in default, or what a file's model outputs
    repeats: int
    timing: bool
    threads: int | None
    json: bool


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``curvature`` subcommand to ``commands`` (argparse subparsers) and return its parser."""
    sub = commands.add_parser("curvature", help="KFAC factors of a whole model: shapes, routines, cost per layer")
    sub.add_argument("model", metavar="MODEL",
                     help="path/to/file.py:factory (a function returning an nn.Module) or a built-in model: "
                          + ", ".join(BUILTIN_MODELS))
    sub.add_argument("--input", type=_flag(model_input, "--input"), metavar="SHAPE",
                     help="the shape of a batch of model inputs, e.g. 32,3,32,32 (required for a file's model; "
                          f"built-in models default to batch {DEFAULT_BATCH} at their size)")
    sub.add_argument("--approx", choices=APPROXES, default="expand", help="KFAC-expand or KFAC-reduce (default expand)")
    sub.add_argument("--fisher", choices=FISHERS, default="type-2", help="type-2 (exact GGN), mc or empirical "
                     "(default type-2)")
    sub.add_argument("--loss", choices=LOSSES, default="cross-entropy", help="the loss (default cross-entropy)")
    sub.add_argument("--classes", type=_flag(_positive, "--classes"), metavar="K",
                     help=f"classes of a built-in model (default {DEFAULT_CLASSES}); for a file's model it must "
                          "equal its output size (default: read from it)")
    sub.add_argument("--repeats", type=_flag(_repeats, "--repeats"), metavar="R",
                     help=f"timed updates after a warm-up one (default {DEFAULT_REPEATS})")
    sub.add_argument("--no-timing", action="store_true",
                     help="run no update: shapes, routines and FLOPs only (fast, and the same on every machine)")
    sub.add_argument("--threads", type=_flag(_positive, "--threads"), metavar="T",
                     help="torch's intra-op threads (default: torch's choice)")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    return sub


def model_input(text: str, flag: str) -> tuple[int, ...]:
    """``--input``: ``N,*feature dims`` with at least one dim after the batch, whose float32 batch fits the
    allocation limit (``tnconv.limits``)."""
    shape = parse_ints(text, flag)
    if len(shape) < 2:
        raise ValueError(f"{flag}: expected the batch and at least one more dim (N,C,H,W for images), got {text}")
    check_allocation(math.prod(shape), FLOAT32_BYTES, f"{flag}: a batch {text} of float32 inputs")
    return shape


def model_source(text: str) -> ModelSource:
    """MODEL: a built-in name (``resnet18-cifar`` or ``resnet18_cifar``) or ``path/to/file.py:factory``.

    The file must exist and the factory be a Python name; whether the file defines
    it is known only once the file is loaded. ValueError starts with ``MODEL:``.
    """
    canonical = text.replace("_", "-")
    if canonical in BUILTIN_MODELS:
        return ModelSource(canonical, BUILTIN_MODELS[canonical][0])
    path_text, colon, factory = text.rpartition(":")
    if not colon:
        if Path(text).is_file():
            raise ValueError(f"MODEL: {text!r} names a file but no factory; give {text}:FACTORY, the function in "
                             "it that returns the model")
        raise ValueError(f"MODEL: unknown built-in model {text!r}{hint(canonical, BUILTIN_MODELS)} (built-in models: "
                         f"{', '.join(BUILTIN_MODELS)}; or give path/to/file.py:factory)")
    path = Path(path_text)
    if not path_text or not path.exists():
        raise ValueError(f"MODEL: file {path_text!r} does not exist")
    if not path.is_file():
        raise ValueError(f"MODEL: {path_text!r} is not a file")
    if not factory.isidentifier():
        raise ValueError(f"MODEL: the factory after ':' must be a Python name, got {factory!r}")
    return ModelSource(text, factory, path)


def curvature_request(args: argparse.Namespace) -> CurvatureRequest:
    """Check a parsed ``curvature`` command line as a whole (ValueError naming the flag) and return it."""
    source = model_source(args.model)
    shape = args.input
    if source.path is not None and shape is None:
        raise ValueError("--input: required for a model from a file; give the shape of a batch, e.g. --input 8,3,32,32")
    if source.path is None:
        default = BUILTIN_MODELS[source.name][1]
        if shape is None:
            shape = (DEFAULT_BATCH, *default)
        elif len(shape) != len(default) + 1:
            raise ValueError(f"--input: {source.name} takes (N, C, H, W) images, got {','.join(map(str, shape))}")
    if args.repeats is not None and args.no_timing:
        raise ValueError("--repeats times the updates, which --no-timing skips; give one of them")
    return CurvatureRequest(
        model=source, input_shape=shape, approx=args.approx, fisher=args.fisher, loss=args.loss,
        classes=args.classes, repeats=args.repeats or DEFAULT_REPEATS, timing=not args.no_timing,
        threads=args.threads, json=args.json,
    )


def header(request: CurvatureRequest, out: TextIO) -> None:
    """The first lines: the model, the batch, the loss and the KFAC settings."""
    source = request.model
    builtin = source.path is None
    origin = f"tnconv.models.{source.factory}" if builtin else f"factory {source.factory!r} of {source.path}"
    print(f"tnconv curvature {source.name}   ({origin})", file=out)
    known = request.classes or (DEFAULT_CLASSES if builtin else None)
    classes = "" if known is None else f", {known} classes"
    print(f"input {_shape(request.input_shape)} float32, random (seed {SEED}); loss {request.loss}{classes}; "
          f"KFAC approx={request.approx} fisher={request.fisher}", file=out)


def run_curvature(request: CurvatureRequest, out: TextIO, progress: Callable[[int, int, str], None] | None) -> int:
    """Measure the model as ``request`` asks and print the report (text or JSON); returns the exit status.

    The header is printed once the model is loaded and its output checked, so that an error of the model (or of
    ``--classes``) is the only output, as an error of a flag is.
    """
    from tnconv.cli.curvature_measure import measure

    def start() -> None:
        if not request.json:
            header(request, out)
            out.flush()

    report = measure(request, progress, start)
    if request.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        table(report, out)
    return 0


def _shape(shape: Any) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value >= 1e-3 else f"{value * 1e6:.0f} us"


def _bytes(value: int) -> str:
    if value < 2**10:
        return f"{value} B"
    return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 2**10:.1f} KiB"


def table(report: dict[str, Any], out: TextIO) -> None:
    """The report as text: one row per layer, the totals, the update's time and memory."""
    timed = report["update"] is not None
    columns = ["layer", "type", "bias", "input", "A", "B", "A routine", "strategy", "A FLOPs"]
    if timed:
        columns += ["time", "memory"]
    rows = []
    for layer in report["layers"]:
        row = [layer["name"], layer["type"], "yes" if layer["bias"] else "no", _shape(layer["input_shape"]),
               _shape(layer["A"]), _shape(layer["B"]), layer["routine"], layer["strategy"],
               count(layer["flops"], layer["flops_exact"])]
        if timed:
            row += [_seconds(layer["seconds"]), _bytes(layer["peak_bytes"])]
        rows.append(row)
    widths = [max(len(text) for text in column) for column in zip(columns, *rows)]
    numeric = {"A FLOPs", "time", "memory"}
    print(file=out)
    for row in [columns, *rows]:
        cells = [text.rjust(width) if name in numeric else text.ljust(width)
                 for name, text, width in zip(columns, row, widths)]
        print("  ".join(cells).rstrip(), file=out)
    totals = report["totals"]
    flops = count(totals["flops"], totals["flops_exact"])
    factors = f"{count(totals['factor_elements'])} numbers ({_bytes(totals['factor_bytes'])} in {report['dtype']})"
    print(f"\ntotal: {_plural(totals['layers'], 'layer')}, A FLOPs {flops}, factors {factors}", file=out)
    if not timed:
        print("(--no-timing: no update ran)", file=out)
        return
    update = report["update"]
    seconds = update["seconds"]
    runs = f"{_plural(update['repeats'], 'run')} after a warm-up, {_plural(report['threads'], 'thread')}"
    print(f"update: {_seconds(seconds['median'])} median (min {_seconds(seconds['min'])}, max "
          f"{_seconds(seconds['max'])}; {runs}), {_seconds(update['forward_backward_seconds'])} of it forward and "
          "batched backward", file=out)
    print(f"extra peak memory of one update: {_bytes(update['peak_bytes'])} ({update['memory_method']})", file=out)
    print("time and memory per layer: its A and B inside the update (medians; memory above the level where it began)",
          file=out)
