"""The ``tnconv`` command: ``tnconv derive ROUTINE [layer flags]`` and ``tnconv layers``.

``derive`` shows how a routine of a conv layer comes out of the diagram: the
network before and after each pass with the rewrites made, the final einsum,
its contraction path and cost, how the compiled program runs, and a diagram
file; ``--check`` compares with PyTorch in float64, ``--bench`` times it
against the PyTorch implementation, ``--json`` prints all of it as JSON.

Every error is one line on stderr (``tnconv: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence, TextIO

import torch

from tnconv import __version__
from tnconv.cli.derive import ROUTINES, Derivation, bench, check, derive, guard
from tnconv.cli.layers import (
    DEFAULT_BATCH,
    Layer,
    builtin_layer,
    custom_layer,
    default_layer_name,
    layer_names,
    padding_flag,
    parse_ints,
    per_dim_flag,
    with_overrides,
)

EXIT_ERROR = 2
EXIT_CHECK_FAILED = 1


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line instead of usage text and a message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _flag(converter, flag: str):
    """An argparse ``type`` that turns our ValueErrors into argparse errors naming the flag."""

    def convert(text: str):
        try:
            return converter(text, flag)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag}: ")) from None

    convert.__name__ = flag.lstrip("-")
    return convert


def _positive(text: str, flag: str) -> int:
    (value,) = parse_ints(text, flag) if "," not in text else (None,)
    if value is None:
        raise ValueError(f"{flag}: expected one integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tnconv", description="Convolutions as tensor-network diagrams: derive, inspect, check.")
    parser.add_argument("--version", action="version", version=f"tnconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    layers = commands.add_parser("layers", help="list the built-in layers")
    layers.add_argument("--json", action="store_true", help="machine-readable output")
    layers.add_argument("--batch", type=_flag(_positive, "--batch"), default=DEFAULT_BATCH, help="batch size N")

    sub = commands.add_parser("derive", help="derive a routine for a conv layer and show every step")
    sub.add_argument("routine", metavar="ROUTINE", choices=tuple(ROUTINES), help=" | ".join(ROUTINES))
    group = sub.add_argument_group("layer (a built-in one, optionally changed by the other flags)")
    group.add_argument("--layer", metavar="NAME", help=f"built-in layer name (default: {default_layer_name()}; see `tnconv layers`)")
    group.add_argument("--input", type=_flag(lambda t, f: parse_ints(t, f), "--input"), metavar="SHAPE",
                       help="layer input shape N,C_in,*spatial, e.g. 8,64,56,56")
    group.add_argument("--batch", type=_flag(_positive, "--batch"), metavar="N", help=f"batch N (default {DEFAULT_BATCH})")
    group.add_argument("--kernel", type=_flag(per_dim_flag, "--kernel"), metavar="K", help="K or K1,K2,... (default 3)")
    group.add_argument("--out-channels", type=_flag(_positive, "--out-channels"), metavar="C", help="C_out (default C_in)")
    group.add_argument("--stride", type=_flag(per_dim_flag, "--stride"), metavar="S", help="S or S1,S2,... (default 1)")
    group.add_argument("--padding", type=_flag(lambda t, f: padding_flag(t), "--padding"), metavar="P",
                       help="P, P1,P2,..., same or valid (default 0)")
    group.add_argument("--dilation", type=_flag(per_dim_flag, "--dilation"), metavar="D", help="D or D1,D2,... (default 1)")
    group.add_argument("--groups", type=_flag(_positive, "--groups"), metavar="G", help="groups (default 1)")
    group.add_argument("--transposed", action="store_true", default=None, help="a ConvTranspose layer")
    group.add_argument("--output-padding", type=_flag(lambda t, f: per_dim_flag(t, f, allow_zero=True),
                                                      "--output-padding"), metavar="OP",
                       help="output padding of a transposed layer (default 0)")
    group.add_argument("--padding-mode", choices=("zeros", "reflect", "replicate", "circular"))
    out = sub.add_argument_group("output")
    out.add_argument("--diagram", type=Path, metavar="PATH", help="diagram file (.svg, .png, .pdf, .dot); "
                     "default tnconv-derive-ROUTINE.svg in the current folder")
    out.add_argument("--no-diagram", action="store_true", help="write no diagram")
    out.add_argument("--no-simplify", action="store_true", help="skip the simplify pass")
    out.add_argument("--optimize", default="auto", metavar="NAME", help="opt_einsum path optimizer (default auto)")
    out.add_argument("--ggn-columns", type=_flag(_positive, "--ggn-columns"), default=10, metavar="M",
                     help="diag-ggn: M, columns of the GGN factorisation (default 10)")
    out.add_argument("--check", action="store_true", help="compare with PyTorch in float64")
    out.add_argument("--bench", action="store_true", help="time against the PyTorch implementation")
    out.add_argument("--repeats", type=_flag(_positive, "--repeats"), default=10, metavar="R", help="timed runs for --bench")
    out.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _layer(args: argparse.Namespace) -> Layer:
    flags = {
        "kernel_size": args.kernel, "out_channels": args.out_channels, "stride": args.stride,
        "padding": args.padding, "dilation": args.dilation, "groups": args.groups, "transposed": args.transposed,
        "output_padding": args.output_padding, "padding_mode": args.padding_mode,
    }
    if args.input is not None and args.layer is None:
        shape = args.input if args.batch is None else (args.batch, *args.input[1:])
        return custom_layer(shape, flags)
    layer = builtin_layer(args.layer or default_layer_name(), args.batch or DEFAULT_BATCH)
    if args.input is not None:
        flags["input_shape"] = args.input if args.batch is None else (args.batch, *args.input[1:])
    return with_overrides(layer, flags)


def _sizes(net) -> str:
    return " ".join(f"{leg}={size}" for leg, size in net.sizes.items())


def _report(derivation: Derivation) -> dict[str, Any]:
    program = derivation.program
    return {
        "routine": derivation.routine,
        "op": derivation.op,
        "layer": derivation.layer.as_dict(),
        "stages": [
            {
                "title": stage.title,
                "network": stage.network.dump(),
                "einsum": stage.network.to_einsum(),
                "rewrites": list(stage.rewrites) if stage.rewrites is not None else None,
            }
            for stage in derivation.stages
        ],
        "einsum": program.equation,
        "output": list(derivation.network.output),
        "operands": list(program.operands),
        "path": [list(step) for step in program.path],
        "steps": list(program.steps),
        "flops": program.flops,
        "largest_intermediate": program.largest_intermediate,
        "strategy": program.strategy,
    }


def _print_derivation(report: dict[str, Any], layer: Layer, out: TextIO) -> None:
    print(f"tnconv derive {report['routine']}   (conv_network op {report['op']!r})", file=out)
    print(f"layer  {layer.describe()}", file=out)
    for number, stage in enumerate(report["stages"], 1):
        print(f"\n== {number}. {stage['title']} ==", file=out)
        if stage["rewrites"] is not None:
            print("rewrites:", file=out)
            lines = stage["rewrites"] or ["(none: nothing to rewrite)"]
            for index, line in enumerate(lines, 1):
                print(f"  {index}. {line}" if stage["rewrites"] else f"  {line}", file=out)
            print("network after the pass:", file=out)
        print(stage["network"], file=out)
    print("\n== compiled ==", file=out)
    print(f"einsum    {report['einsum']}", file=out)
    print(f"output    ({', '.join(report['output'])})", file=out)
    print(f"operands  {', '.join(report['operands'])}", file=out)
    print(f"path      {report['path']}", file=out)
    for index, step in enumerate(report["steps"], 1):
        print(f"  step {index}: {step}", file=out)
    print(f"flops     {report['flops']:,} ({report['flops']:.3g})", file=out)
    print(f"largest intermediate  {report['largest_intermediate']:,} elements", file=out)
    print(f"strategy  {report['strategy']}", file=out)


def _progress(stream: TextIO):
    """A plain-text progress bar on ``stream`` (carriage return, one line)."""

    def show(done: int, total: int, what: str) -> None:
        width = 30
        filled = width * done // total
        stream.write(f"\rbench [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<8}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show


def run_derive(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layer = _layer(args)
    derivation = derive(
        args.routine, layer, optimize=args.optimize, simplify=not args.no_simplify, columns=args.ggn_columns
    )
    if args.check:
        guard(derivation, torch.float64, "--check")
    if args.bench:
        guard(derivation, torch.float32, "--bench")
    report = _report(derivation)
    if not args.json:
        _print_derivation(report, derivation.layer, out)
    status = 0
    if not args.no_diagram:
        from tnconv.render.draw import draw

        path = args.diagram or Path(f"tnconv-derive-{args.routine}.svg")
        written = draw(derivation.network, path)
        report["diagram"] = str(written)
        if not args.json:
            print(f"diagram   {written}", file=out)
    if args.check:
        result = check(derivation)
        report["check"] = result
        if not result["passed"]:
            status = EXIT_CHECK_FAILED
        if not args.json:
            verdict = "PASSED" if result["passed"] else "FAILED"
            print(f"\n== check (float64 vs PyTorch) ==\n{verdict}: max |error| {result['max_abs_error']:.3g} "
                  f"(max |reference| {result['max_abs_reference']:.3g}, rtol {result['rtol']:g}, "
                  f"shape {tuple(result['shape'])})", file=out)
    if args.bench:
        progress = None if args.json else _progress(err)
        result = bench(derivation, repeats=args.repeats, progress=progress)
        report["bench"] = result
        if not args.json:
            print(f"\n== bench ({result['dtype']}, median of {result['repeats']}, {result['threads']} threads) ==",
                  file=out)
            print(f"tnconv   {result['tnconv_s'] * 1e3:10.3f} ms", file=out)
            print(f"pytorch  {result['pytorch_s'] * 1e3:10.3f} ms", file=out)
            print(f"ratio    {result['ratio']:10.2f}x  (tnconv / pytorch; below 1 is faster)", file=out)
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    return status


def run_layers(args: argparse.Namespace, out: TextIO) -> int:
    layers = [builtin_layer(name, args.batch) for name in layer_names()]
    default = default_layer_name()
    if args.json:
        json.dump({"default": default, "layers": [layer.as_dict() for layer in layers]}, out, indent=2)
        out.write("\n")
        return 0
    for layer in layers:
        mark = "*" if layer.name == default else " "
        print(f"{mark} {layer.describe()}", file=out)
    print(f"(* = the default of `tnconv derive`; batch {args.batch}, change it with --batch)", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a failed --check, 2 an error)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, --version
            return int(done.code or 0)
        if args.command == "layers":
            return run_layers(args, out)
        return run_derive(args, out, err)
    except UsageError as error:
        print(f"tnconv: error: {error}", file=err)
    except (ValueError, TypeError, ImportError, OSError, KeyError, RuntimeError, MemoryError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"tnconv: error: {message}", file=err)
    except KeyboardInterrupt:
        print("tnconv: interrupted", file=err)
    return EXIT_ERROR

