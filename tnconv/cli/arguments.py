"""The ``tnconv`` command line: its parser, and the checks of a whole ``derive`` request before any work.

Everything here is light (argparse, json, pathlib; no torch, no sympy), so that
``--help``, ``layers`` and every argument error answer at once. What only the
library can judge (channels divisible by groups, a kernel larger than the
padded input, ...) is checked last, by ``tnconv.conv.hyper`` (which loads sympy,
not torch), its errors led by the flags they concern (``tnconv.cli.layers.library_checked``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os.path
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, TypeVar

from tnconv import __version__
from tnconv.cli.layers import (
    DEFAULT_BATCH,
    HYPER_FLAGS,
    Layer,
    builtin_layer,
    custom_layer,
    default_layer_name,
    library_checked,
    padding_flag,
    parse_ints,
    per_dim_flag,
    shape_flag,
    with_overrides,
)
from tnconv.cli.names import hint, routine_name, routine_names
from tnconv.routines.routine import Routine
from tnconv.routines.table import TABLE

# tnconv.render.draw.FORMATS and tnconv.lower.optimize.OPTIMIZERS, repeated here so that checking
# them imports no torch (tests/test_cli_arguments.py keeps the copies equal)
DIAGRAM_FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")
RASTER_FORMATS = (".png", ".pdf")
OPTIMIZERS = (
    "auto", "auto-hq", "greedy", "optimal", "dp", "branch-1", "branch-2", "branch-all",
    "random-greedy", "random-greedy-128",
)
REFERENCE_DIMS = 3  # PyTorch has conv1d, conv2d and conv3d (tnconv.routines.references.REFERENCE_DIMS)
DEFAULT_REPEATS = 10
MAX_REPEATS = 1000  # of --repeats (derive --bench rounds, curvature updates): enough for any median
DEFAULT_COLUMNS = 10  # M, the columns of the GGN factorisation for diag-ggn (e.g. 10 classes)


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line instead of usage text and a message.

    ``commands`` holds the subcommands' parsers by name (to suggest their flags).
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


T = TypeVar("T")


def _flag(converter: Callable[[str, str], T], flag: str) -> Callable[[str], T]:
    """An argparse ``type`` that turns our ValueErrors into argparse errors naming the flag."""

    def convert(text: str) -> T:
        try:
            return converter(text, flag)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag}: ")) from None

    convert.__name__ = flag.lstrip("-")
    return convert


def _positive(text: str, flag: str) -> int:
    values = parse_ints(text, flag)
    if len(values) != 1:
        raise ValueError(f"{flag}: expected one integer >= 1, got {text!r}")
    return values[0]


def _repeats(text: str, flag: str) -> int:
    """A count of timed runs: an integer from 1 to ``MAX_REPEATS`` (a larger one would run for days)."""
    value = _positive(text, flag)
    if value > MAX_REPEATS:
        raise ValueError(f"{flag}: at most {MAX_REPEATS:,} timed runs, got {value:,}")
    return value


def build_parser(routines: Mapping[str, Routine] = TABLE) -> argparse.ArgumentParser:
    """The parser of the command line; ``derive`` takes the routines of ``routines``."""
    parser = _Parser(prog="tnconv", description="Convolutions as tensor-network diagrams: derive, inspect, check.")
    parser.add_argument("--version", action="version", version=f"tnconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    layers = commands.add_parser("layers", help="list the built-in layers")
    layers.add_argument("--json", action="store_true", help="machine-readable output")
    layers.add_argument("--batch", type=_flag(_positive, "--batch"), default=DEFAULT_BATCH, help="batch size N")

    sub = commands.add_parser("derive", help="derive a routine for a conv layer and show every step")
    sub.add_argument("routine", metavar="ROUTINE", help=" | ".join(routine_names(routines)) + " (or with _ for -)")
    group = sub.add_argument_group("layer (a built-in one, optionally changed by the other flags)")
    group.add_argument("--layer", metavar="NAME", help=f"built-in layer name (default: {default_layer_name()}; see `tnconv layers`)")
    group.add_argument("--input", type=_flag(shape_flag, "--input"), metavar="SHAPE",
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
    out.add_argument("--diagram", metavar="PATH", help="diagram file (" + ", ".join(DIAGRAM_FORMATS) +
                     "); default tnconv-derive-ROUTINE.svg in the current folder")
    out.add_argument("--no-diagram", action="store_true", help="write no diagram")
    out.add_argument("--no-simplify", action="store_true", help="skip the simplify pass")
    out.add_argument("--optimize", default="auto", metavar="NAME",
                     help="opt_einsum path optimizer: " + ", ".join(OPTIMIZERS) + " (default auto)")
    out.add_argument("--ggn-columns", type=_flag(_positive, "--ggn-columns"), metavar="M",
                     help=f"diag-ggn only: M, columns of the GGN factorisation (default {DEFAULT_COLUMNS})")
    out.add_argument("--check", action="store_true",
                     help="compare with PyTorch in float64 (and a native kernel with the einsum plan)")
    out.add_argument("--bench", action="store_true", help="time against the PyTorch implementation")
    out.add_argument("--repeats", type=_flag(_repeats, "--repeats"), metavar="R",
                     help=f"--bench only: timed runs of each side (default {DEFAULT_REPEATS})")
    out.add_argument("--json", action="store_true", help="machine-readable output")
    from tnconv.cli.curvature import add_parser as add_curvature  # it imports _flag and _positive from here

    parser.commands = {"layers": layers, "derive": sub, "curvature": add_curvature(commands)}
    return parser


def parse(argv: list[str] | None, routines: Mapping[str, Routine] = TABLE) -> argparse.Namespace:
    """Parse a command line; UsageError (one line) for an unknown flag, with the closest known one."""
    parser = build_parser(routines)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser.commands[args.command]  # type: ignore[attr-defined]
        flags = [option for action in command._actions for option in action.option_strings]
        first = next((word for word in unknown if word.startswith("-")), unknown[0])
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}{hint(first.split('=')[0], flags)}")
    return args


@dataclass(frozen=True)
class Request:
    """A ``tnconv derive`` command line, checked: what to derive, for which layer, and what to show."""

    routine: str  # the command-line name, hyphen spelling
    op: str  # the routine's name in the table (and for conv_network)
    layer: Layer  # made transposed where the routine implies it
    optimize: str
    simplify: bool
    columns: int  # M for diag-ggn
    diagram: Path | None
    check: bool
    bench: bool
    repeats: int
    json: bool


def request(args: argparse.Namespace, routines: Mapping[str, Routine] = TABLE) -> Request:
    """Check a parsed ``derive`` command line as a whole (ValueError naming the flag) and return it."""
    routine = routine_name(args.routine, routines)
    entry = routines[routine.replace("-", "_")]
    if args.optimize not in OPTIMIZERS:
        raise ValueError(f"--optimize: unknown optimizer {args.optimize!r}{hint(args.optimize, OPTIMIZERS)} "
                         f"(choose from {', '.join(OPTIMIZERS)})")
    if args.ggn_columns is not None and not entry.takes_columns:
        takers = [other.hyphen_name for other in routines.values() if other.takes_columns]
        raise ValueError(f"--ggn-columns applies to {' and '.join(takers)} only, not to {routine}")
    if args.repeats is not None and not args.bench:
        raise ValueError("--repeats applies to --bench only; give --bench too")
    layer = _layer(args, entry.transposed, [other.hyphen_name for other in routines.values() if other.transposed])
    for flag, given in (("--check", args.check), ("--bench", args.bench)):
        if given and not layer.concrete:
            raise ValueError(f"{flag}: needs numbers for every size, but --input names symbols "
                             f"({', '.join(str(s) for s in layer.input_shape if isinstance(s, str))})")
        if given and layer.dims > REFERENCE_DIMS:
            raise ValueError(f"{flag}: PyTorch has no {layer.dims}-d convolution to compare with (1 to 3 spatial dims)")
    diagram = diagram_target(args, routine)
    given = {HYPER_FLAGS[name] for name, value in {**_layer_flags(args), "input_shape": args.input}.items()
             if value is not None}
    return Request(
        routine=routine, op=entry.name, layer=library_checked(layer, given), optimize=args.optimize,
        simplify=not args.no_simplify, columns=args.ggn_columns or DEFAULT_COLUMNS, diagram=diagram, check=args.check,
        bench=args.bench, repeats=args.repeats or DEFAULT_REPEATS, json=args.json,
    )


def _layer_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The hyper-parameter flags of a ``derive`` command line by ``conv_hyper``'s names (None: not given)."""
    return {
        "kernel_size": args.kernel, "out_channels": args.out_channels, "stride": args.stride,
        "padding": args.padding, "dilation": args.dilation, "groups": args.groups, "transposed": args.transposed,
        "output_padding": args.output_padding, "padding_mode": args.padding_mode,
    }


def _layer(args: argparse.Namespace, transposed: bool, transposed_routines: list[str]) -> Layer:
    """The layer of the command line: a built-in one changed by the flags, or one from ``--input``; made
    transposed when the routine implies it (``transposed``; ``transposed_routines`` do)."""
    flags = _layer_flags(args)
    if args.input is not None and args.layer is None:
        shape = args.input if args.batch is None else (args.batch, *args.input[1:])
        layer = custom_layer(shape, flags)
    else:
        layer = builtin_layer(args.layer or default_layer_name(), args.batch or DEFAULT_BATCH)
        if args.input is not None:
            flags["input_shape"] = args.input if args.batch is None else (args.batch, *args.input[1:])
        layer = with_overrides(layer, flags)
    if transposed and not layer.transposed:
        layer = replace(layer, transposed=True)
    if args.output_padding is not None and not layer.transposed:
        raise ValueError(
            "--output-padding applies to a transposed layer only: give --transposed, a ConvTranspose --layer, "
            f"or ROUTINE {' or '.join(transposed_routines)}"
        )
    return layer


def diagram_target(args: argparse.Namespace, routine: str) -> Path | None:
    """Where the diagram goes (None for ``--no-diagram``), after checking that it can be written there."""
    if args.no_diagram:
        if args.diagram is not None:
            raise ValueError("--diagram and --no-diagram contradict each other; give one of them")
        return None
    given = args.diagram is not None
    text = args.diagram if given else f"tnconv-derive-{routine}.svg"
    target = Path(text)
    what = f"--diagram {text!r}" if given else f"--diagram (default {text!r})"
    advice = "" if given else "; choose another file with --diagram, or give --no-diagram"
    suffix = target.suffix.lower()
    if suffix not in DIAGRAM_FORMATS:
        raise ValueError(f"{what}: the file name must end in one of {', '.join(DIAGRAM_FORMATS)}")
    if suffix in RASTER_FORMATS and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"{what}: {suffix} needs matplotlib (pip install matplotlib); .svg and .dot need nothing")
    folder = target.parent
    if not os.path.isdir(folder):
        raise ValueError(f"{what}: folder {str(folder)!r} does not exist")
    if os.path.isdir(target):
        raise ValueError(f"{what}: that is a folder, not a file{advice}")
    problem = _unwritable(target)
    if problem is not None:
        raise ValueError(f"{what}: cannot write there ({problem.strerror or problem}){advice}")
    return target


def _unwritable(target: Path) -> OSError | None:
    """Why no file can be written at ``target`` (None when one can): tried by opening it for appending, which
    leaves a file that is there as it was, and removing it again when it was not there."""
    existed = os.path.lexists(target)
    try:
        with open(target, "ab"):
            pass
    except OSError as error:
        return error
    if not existed:
        target.unlink()
    return None
