"""The ``tnconv`` command: ``tnconv derive ROUTINE [layer flags]``, ``tnconv layers`` and ``tnconv curvature MODEL``.

``derive`` shows how a routine of a conv layer comes out of the diagram: the
network before and after each pass with the rewrites made, the final einsum,
what the compiled program runs and what it costs, how a KFAC factor is scaled,
and a diagram file; ``--check`` compares with PyTorch in float64, ``--bench``
times it against the PyTorch implementation, ``--json`` prints all of it as JSON.

Order of work: the whole command line is checked first without importing
torch (``tnconv.cli.arguments``; the layer's hyper-parameters last, by the
library, its errors led by the flags they concern), and ``--check``/``--bench``
whether PyTorch can run the layer; then the header is printed, and the
derivation runs. Every error is one line on stderr (``tnconv: error: ...``) and
exit status 2, before any output where it concerns the command line.

When the reader of stdout goes away (``tnconv layers | head -1``) the command
stops quietly with status 141 (128 + SIGPIPE, as a shell reports for ``ls``),
the way the Python documentation's note on SIGPIPE recommends.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from tnconv.cli import show
from tnconv.cli.arguments import Request, UsageError, parse, request
from tnconv.cli.curvature import curvature_request, run_curvature
from tnconv.cli.layers import builtin_layer, default_layer_name, layer_names
from tnconv.routines.table import TABLE

if TYPE_CHECKING:
    import torch

    from tnconv.routines.routine import Routine

EXIT_ERROR = 2
EXIT_CHECK_FAILED = 1
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a command that SIGPIPE ended


def _progress(stream: TextIO, label: str = "bench"):
    """A plain-text progress bar on ``stream`` (carriage return, one line; ``what`` padded to the longest yet)."""
    longest = 8

    def show_progress(done: int, total: int, what: str) -> None:
        nonlocal longest
        width = 30
        filled = width * done // total
        longest = max(longest, len(what))
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<{longest}}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show_progress


def measured_runs(job: Request, routines: Mapping[str, Routine] = TABLE) -> list[tuple[str, torch.dtype]]:
    """The flag and dtype of each run ``job`` asks for (``--check`` float64, ``--bench`` float32), after checking
    that PyTorch can run the layer in it (``tnconv.cli.measure.guard_layer``); torch loads only for one."""
    if not (job.check or job.bench):
        return []
    import torch

    from tnconv.cli import measure
    from tnconv.cli.derive import hyper_of
    from tnconv.conv.options import Options

    entry = routines[job.op]
    options = Options(job.columns if entry.takes_columns else None)
    runs = [(flag, dtype) for flag, dtype, wanted in (("--check", torch.float64, job.check),
                                                      ("--bench", torch.float32, job.bench)) if wanted]
    for flag, dtype in runs:
        measure.guard_layer(entry, hyper_of(job.layer), options, dtype, flag)
    return runs


def run_derive(job: Request, out: TextIO, err: TextIO, routines: Mapping[str, Routine] = TABLE) -> int:
    """Derive routine ``job.op`` of ``routines``, show, draw, check and time as ``job`` asks; returns the exit
    status."""
    runs = measured_runs(job, routines)
    if not job.json:
        show.header(job, out)
        out.flush()
    from tnconv.cli import measure
    from tnconv.cli.derive import derive

    derivation = derive(job.routine, job.layer, optimize=job.optimize, simplify=job.simplify, columns=job.columns,
                        routines=routines)
    for flag, dtype in runs:
        measure.guard(derivation, dtype, flag)
    report: dict[str, Any] = show.report(derivation)
    if not job.json:
        show.stages(report, out)
        show.compiled(report, out)
        show.scaling(report, out)
        show.costs(report, out)
    status = 0
    if job.diagram is not None:
        from tnconv.render.draw import draw

        report["diagram"] = str(draw(derivation.network, job.diagram))
        if not job.json:
            print(f"diagram   {report['diagram']}", file=out)
    if job.check:
        report["check"] = measure.check(derivation)
        status = 0 if report["check"]["passed"] else EXIT_CHECK_FAILED
        if not job.json:
            show.check(report["check"], out)
    if job.bench:
        out.flush()
        report["bench"] = measure.bench(derivation, repeats=job.repeats, progress=None if job.json else _progress(err))
        if not job.json:
            show.bench(report["bench"], out)
    if job.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    return status


def run_layers(batch: int, as_json: bool, out: TextIO) -> int:
    layers = [builtin_layer(name, batch) for name in layer_names()]
    default = default_layer_name()
    if as_json:
        json.dump({"default": default, "layers": [layer.as_dict() for layer in layers]}, out, indent=2)
        out.write("\n")
        return 0
    for layer in layers:
        mark = "*" if layer.name == default else " "
        print(f"{mark} {layer.describe()}", file=out)
    print(f"(* = the default of `tnconv derive`; batch {batch}, change it with --batch)", file=out)
    return 0


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None, *,
    routines: Mapping[str, Routine] = TABLE,
) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a failed --check, 2 an error).

    ``derive`` takes the routines of ``routines`` (``tnconv.routines.TABLE``, or a copy with more routines).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        status = _command(argv, out, err, routines)
        out.flush()  # here, so that a reader gone away is noticed here rather than at the interpreter's exit
        return status
    except BrokenPipeError:
        _write_nowhere(out)
        return EXIT_BROKEN_PIPE
    except UsageError as error:
        print(f"tnconv: error: {error}", file=err)
    except (ValueError, TypeError, ImportError, OSError, KeyError, RuntimeError, MemoryError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"tnconv: error: {message}", file=err)
    except KeyboardInterrupt:
        print("tnconv: interrupted", file=err)
    return EXIT_ERROR


def _command(argv: Sequence[str] | None, out: TextIO, err: TextIO, routines: Mapping[str, Routine]) -> int:
    """Parse the command line and run its command; returns the exit status."""
    try:
        args = parse(None if argv is None else list(argv), routines)
    except SystemExit as done:  # --help, --version
        return int(done.code or 0)
    if args.command == "layers":
        return run_layers(args.batch, args.json, out)
    if args.command == "curvature":
        job = curvature_request(args)
        return run_curvature(job, out, None if job.json else _progress(err, "curvature"))
    return run_derive(request(args, routines), out, err, routines)


def _write_nowhere(stream: TextIO) -> None:
    """Point the file descriptor of ``stream`` (stdout) at the null device, so that the interpreter's flush of what
    is still buffered at exit does not fail on the closed pipe and print a traceback (a stream without a file
    descriptor is left as it is)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)
