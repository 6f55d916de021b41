"""``tnconv derive``: build a routine's network, run the passes with their trace, compile it, check and time it.

Everything here returns plain data (``Derivation``, dicts) so that the
command line can print it as text or JSON; printing lives in
``tnconv.cli.main``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from tnconv.cli.layers import Layer
from tnconv.cli import reference
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.networks import TRANSPOSED_OPS, build as build_routine
from tnconv.ir.network import Network
from tnconv.lower.compile import compile as compile_network
from tnconv.lower.program import Program

# command-line routine name -> conv_network op
ROUTINES = {
    "forward": "forward",
    "input-vjp": "input_vjp",
    "weight-vjp": "weight_vjp",
    "unfold": "unfold",
    "unfold-transpose": "unfold_transpose",
    "transpose-forward": "transpose_forward",
    "kfac-expand": "kfac_expand",
    "kfac-reduce": "kfac_reduce",
    "per-sample-grad": "per_sample_grad",
    "diag-ggn": "diag_ggn",
}


@dataclass(frozen=True)
class Stage:
    """One step of the derivation: a title, the network after it, and the rewrites it made (if a pass)."""

    title: str
    network: Network
    rewrites: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Derivation:
    """A derived routine: its stages, the final network, its compiled program and M for ``diag_ggn``."""

    routine: str
    op: str
    layer: Layer
    hyper: ConvHyper
    stages: tuple[Stage, ...]
    program: Program
    columns: int = reference.GGN_COLUMNS

    @property
    def network(self) -> Network:
        return self.stages[-1].network


def resolve(routine: str, layer: Layer) -> tuple[str, Layer]:
    """The conv_network op of a command-line routine, and the layer (made transposed where implied)."""
    try:
        op = ROUTINES[routine]
    except KeyError:
        raise ValueError(f"unknown routine {routine!r}; choose from {', '.join(ROUTINES)}") from None
    if op in TRANSPOSED_OPS and not layer.transposed:
        layer = replace(layer, transposed=True)
    return op, layer


def hyper_of(layer: Layer) -> ConvHyper:
    """The validated hyper-parameters of ``layer`` (ValueError/TypeError name the bad flag value)."""
    return conv_hyper(
        layer.input_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.padding_mode, layer.output_padding, layer.transposed,
    )


def simplify_traced(net: Network) -> tuple[Network, tuple[str, ...]]:
    """``tnconv.simplify`` with the rewrites it made, one line each (``tnconv.passes.simplify.simplify_traced``)."""
    from tnconv.passes.simplify import simplify_traced as traced

    result, trace = traced(net)
    return result, tuple(str(record) for record in trace)


def derivation_stages(op: str, hyper: ConvHyper, columns: int) -> list[Stage]:
    """The networks on the way to routine ``op``: the plain routine it starts from, then one per pass.

    The plain routines are built directly (``tnconv.conv.networks``); the
    curvature routines follow ``tnconv.conv.derived``: fuse a small sketch
    network with a plain routine, differentiate, vmap. The last stage is
    ``conv_network(op, ..., simplify=False)`` itself.
    """
    from tnconv.conv import derived
    from tnconv.passes.vmap import vmap

    if op not in derived.OPS:
        base = TRANSPOSED_OPS.get(op, op)
        title = f"built: the {base} network" + (" of the transposed layer" if op in TRANSPOSED_OPS else "")
        return [Stage(title, build_routine(base, hyper))]
    final = derived.network(op, hyper, False, columns if op == "diag_ggn" else None)
    if op in ("kfac_expand", "kfac_reduce"):
        reduce = op == "kfac_reduce"
        stages = [Stage("built: the unfold network, patches U[n,g,c_in,k..,o..] = X Pi..", build_routine("unfold", hyper))]
        if reduce:
            stages.append(Stage("fuse: sum_o U[n,g,c_in,k..,o..] with U := unfold (patch sums)",
                                derived.patches_network(hyper, reduce=True)))
        tied = "n" if reduce else "n and the locations o.."
        stages.append(Stage(f"fuse: P[n,g,c_in,k..] P[n,g,c_in_2,k_2..] summed over {tied}, with P := the patches",
                            final))
        return stages
    forward = build_routine("forward", hyper)
    per_sample = derived.per_sample_network(hyper)
    stages = [
        Stage("built: the forward network Y = X Pi.. W", forward),
        Stage("fuse + differentiate: d/dW of sum V[n,..] Y[n,..] with Y := forward (n kept)", per_sample),
    ]
    if op == "diag_ggn":
        stages.append(Stage(f"vmap: leg m of size {columns} on V (columns of the GGN factor)",
                            vmap(per_sample, "m", columns, "V")))
        stages.append(Stage("fuse: J[m,n,w] J[m,n,w] -> w, with J := the vmapped per-sample gradient", final))
    return stages


def derive(
    routine: str, layer: Layer, optimize: str = "auto", simplify: bool = True, columns: int = reference.GGN_COLUMNS
) -> Derivation:
    """Build routine ``routine`` of ``layer`` pass by pass, simplify it (traced) and compile it.

    ``columns`` is M, the number of columns of the GGN factorisation for
    ``diag-ggn`` (the size of its leg ``m``).
    """
    op, layer = resolve(routine, layer)
    hyper = hyper_of(layer)
    stages = derivation_stages(op, hyper, columns)
    if simplify:
        result, rewrites = simplify_traced(stages[-1].network)
        stages.append(Stage("pass: simplify", result, rewrites))
    program = compile_network(stages[-1].network, optimize)
    return Derivation(routine, op, layer, hyper, tuple(stages), program, columns)


MEMORY_LIMIT = 4 * 2**30  # bytes: the largest tensor --check and --bench may create


def guard(derivation: Derivation, dtype: torch.dtype, flag: str) -> None:
    """Refuse to run when PyTorch has no reference or a tensor would exceed ``MEMORY_LIMIT``."""
    hyper = derivation.hyper
    why_not = reference.supported(hyper)
    if why_not is not None:
        raise ValueError(f"{flag}: {why_not}")
    program, net = derivation.program, derivation.network
    largest = max(math.prod(int(net.size(leg)) for leg in net.output), program.largest_intermediate,
                  reference.largest_tensor(derivation.op, hyper, derivation.columns))
    size = largest * torch.finfo(dtype).bits // 8
    if size > MEMORY_LIMIT:
        raise ValueError(
            f"{flag}: this layer needs a tensor of {largest:,} numbers ({size / 2**30:.1f} GiB in "
            f"{str(dtype).removeprefix('torch.')}), more than {MEMORY_LIMIT // 2**30} GiB; use a smaller --batch or layer"
        )


def check(derivation: Derivation, seed: int = 0) -> dict[str, Any]:
    """Run the derived network in float64 on random operands and compare with PyTorch (rtol 1e-10)."""
    hyper = derivation.hyper
    guard(derivation, torch.float64, "--check")
    operands = reference.operands(derivation.op, hyper, torch.float64, seed, derivation.columns)
    expected = reference.implementation(derivation.op, hyper)(operands)
    program = derivation.program
    got = program(**{name: operands[name] for name in program.operands})
    if got.numel() != expected.numel():
        raise ValueError(
            f"--check: the network gives {tuple(got.shape)} ({got.numel()} numbers) but PyTorch gives "
            f"{tuple(expected.shape)}"
        )
    got = got.reshape(expected.shape)
    scale = expected.abs().max().item() or 1.0
    error = (got - expected).abs().max().item()
    passed = bool(torch.allclose(got, expected, rtol=1e-10, atol=1e-10 * scale))
    return {
        "passed": passed, "dtype": "float64", "max_abs_error": error, "max_abs_reference": scale,
        "rtol": 1e-10, "shape": list(expected.shape), "seed": seed,
    }


def _time(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def bench(
    derivation: Derivation,
    repeats: int = 10,
    warmup: int = 2,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Median wall-clock time of the compiled network and of the PyTorch implementation (interleaved)."""
    hyper = derivation.hyper
    guard(derivation, dtype, "--bench")
    operands = reference.operands(derivation.op, hyper, dtype, 0, derivation.columns)
    program = derivation.program
    ours = {name: operands[name] for name in program.operands}
    baseline = reference.implementation(derivation.op, hyper)
    runs: dict[str, Callable[[], object]] = {"tnconv": lambda: program(**ours), "pytorch": lambda: baseline(operands)}
    total = (repeats + warmup) * len(runs)
    done = 0
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for round_ in range(repeats + warmup):
            for name, function in runs.items():
                elapsed = _time(function, 1)
                if round_ >= warmup:
                    times[name].extend(elapsed)
                done += 1
                if progress is not None:
                    progress(done, total, name)
    ours_s, theirs_s = statistics.median(times["tnconv"]), statistics.median(times["pytorch"])
    return {
        "dtype": str(dtype).replace("torch.", ""), "repeats": repeats, "threads": torch.get_num_threads(),
        "tnconv_s": ours_s, "pytorch_s": theirs_s, "ratio": ours_s / theirs_s if theirs_s else math.inf,
    }
