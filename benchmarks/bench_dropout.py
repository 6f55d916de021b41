"""Tensor dropout: the cost of the weight-VJP estimate against the exact weight VJP, by mode and keep.

For each built-in conv layer of ``tnconv/layers.json`` (``tnconv.cli.layers``; transposed
layers skipped: dropout estimates conv weight VJPs), batch 8, float32 on the CPU:

- ``exact``: PyTorch's weight VJP (``torch.nn.grad.conv{N}d_weight``, the
  ``aten.convolution_backward`` kernel that autograd runs);
- ``MODE@KEEP``: ``tnconv.curvature.weight_vjp_dropout(x, v, ..., KEEP, MODE)``
  with a fresh draw at every call (one generator per function), for the modes
  ``channel`` (kept input channels), ``rows`` (kept blocks of output rows per
  sample) and ``spatial`` (kept input pixels, gathered one by one).

All functions of a layer run round-robin in one process (a warm-up round, then
medians), so load from other processes hits them alike; each round starts one
function later (``rotated``), because a call right after a memory-heavy one finds
the caches cold (a 1x1 layer's exact weight VJP ran about twice as slow right
after a row-dropout call as elsewhere in the round). The printed ratio is
median(estimate) / median(exact). The kept count of ``rows`` and ``spatial`` varies
between draws (a binomial), so their single timings vary by about
``sqrt((1-keep)/(keep*units))``; ``channel`` keeps a fixed count (``keep * C``, rounded
at random), the baseline's ``channel_dropout`` is timed on the same draws.

``--baseline FILE`` adds, for ``channel`` and ``rows``, the same estimates with the
``channel_dropout`` and ``row_dropout`` of another version of
``tnconv/dropout/slices.py`` (columns ``MODE@KEEP before``; e.g. the file
as a former commit had it: ``git show COMMIT:tnconv/dropout/slices.py > old.py``),
timed in the same rounds: a before/after comparison side by side.

Usage: python benchmarks/bench_dropout.py [--layers NAME ...] [--threads 1 2] [--keeps 1 0.5 0.25]
       [--modes channel rows spatial] [--repeats 7] [--batch 8] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rotated  # noqa: E402
from tnconv.cli.layers import Layer, builtin_layer, layer_names  # noqa: E402
from tnconv.conv.hyper import conv_hyper  # noqa: E402
from tnconv.curvature import weight_vjp_dropout  # noqa: E402
from tnconv.dropout import weight_vjp as dropout  # noqa: E402

MODES = ("channel", "rows", "spatial")
KEEPS = (1.0, 0.5, 0.25)
WEIGHT_VJP = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
# issue 16's targets: (layer, threads, mode, keep) -> the largest ratio to the exact weight VJP
TARGETS = {
    ("resnet18_layer1_3x3", 1, "channel", 0.5): 0.6,
    ("resnet18_layer1_3x3", 1, "channel", 0.25): 0.35,
    ("resnet18_layer1_3x3", 1, "rows", 0.5): 0.65,
}


def load_baseline(path: str) -> ModuleType:
    """Another version of ``tnconv/dropout/slices.py``, loaded from ``path``."""
    spec = importlib.util.spec_from_file_location("baseline_dropout_slices", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: cannot load {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_slices(slices: ModuleType, estimate: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``estimate`` run with ``slices``' ``channel_dropout`` and ``row_dropout`` in ``weight_vjp_dropout``."""

    def run() -> torch.Tensor:
        current = dropout.channel_dropout, dropout.row_dropout
        dropout.channel_dropout, dropout.row_dropout = slices.channel_dropout, slices.row_dropout
        try:
            return estimate()
        finally:
            dropout.channel_dropout, dropout.row_dropout = current

    return run


def functions(
    layer: Layer, modes: tuple[str, ...], keeps: tuple[float, ...], baseline: ModuleType | None = None
) -> dict[str, Callable[[], object]]:
    """The exact weight VJP and each ``MODE@KEEP`` estimate of ``layer`` (and ``MODE@KEEP before`` with the
    ``baseline`` slices), on fixed random tensors."""
    hyper = conv_hyper(
        layer.input_shape, layer.kernel_size, layer.out_channels, layer.stride, layer.padding, layer.dilation,
        layer.groups,
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(layer.input_shape, generator=generator)
    v = torch.randn(hyper.output_shape, generator=generator)
    padding = tuple(left for left, _ in hyper.padding)
    args = dict(stride=hyper.stride, padding=hyper.padding, dilation=hyper.dilation, groups=hyper.groups)

    def exact() -> torch.Tensor:
        return WEIGHT_VJP[hyper.dims](x, hyper.weight_shape, v, hyper.stride, padding, hyper.dilation, hyper.groups)

    def estimate(mode: str, keep: float) -> Callable[[], torch.Tensor]:
        draws = torch.Generator().manual_seed(1)
        return lambda: weight_vjp_dropout(x, v, hyper.kernel_size, keep, mode, generator=draws, **args)

    found: dict[str, Callable[[], object]] = {"exact": exact}
    for mode in modes:
        for keep in keeps:
            found[f"{mode}@{keep:g}"] = estimate(mode, keep)
            if baseline is not None and mode != "spatial":
                found[f"{mode}@{keep:g} before"] = with_slices(baseline, estimate(mode, keep))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", nargs="*", default=None, help="built-in layer names (default: all conv layers)")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--keeps", nargs="*", type=float, default=list(KEEPS))
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds after the warm-up round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--baseline", metavar="FILE", help="another dropout_slices.py to time side by side")
    options = parser.parse_args()
    baseline = load_baseline(options.baseline) if options.baseline else None
    names = options.layers or [name for name in layer_names() if not builtin_layer(name).transposed]
    layers = [builtin_layer(name, options.batch) for name in names]
    modes, keeps = tuple(options.modes), tuple(options.keeps)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, batch {options.batch}, float32")
    reached = {}
    for threads in options.threads:
        torch.set_num_threads(threads)
        columns = [f"{mode}@{keep:g}{side}" for mode in modes for keep in keeps
                   for side in ("", " before") if not side or (baseline is not None and mode != "spatial")]
        print(f"\n### {threads} thread(s): estimate time / exact weight-VJP time\n")
        print("| layer | exact ms | " + " | ".join(columns) + " |")
        print("|---|---:|" + "---:|" * len(columns))
        for layer in layers:
            times = rotated(functions(layer, modes, keeps, baseline), options.repeats)
            ratios = {name: times[name] / times["exact"] for name in columns}
            cells = " | ".join(f"{ratios[name]:.2f}" for name in columns)
            print(f"| {layer.name} | {times['exact'] * 1e3:.1f} | {cells} |", flush=True)
            for (name, target_threads, mode, keep), target in TARGETS.items():
                if (name, target_threads) == (layer.name, threads) and f"{mode}@{keep:g}" in ratios:
                    reached[(name, threads, mode, keep)] = (ratios[f"{mode}@{keep:g}"], target)
    if reached:
        print("\n| target | ratio | reached |\n|---|---:|---|")
        for (name, threads, mode, keep), (ratio, target) in reached.items():
            verdict = "yes" if ratio <= target else "no"
            print(f"| {mode} @ keep {keep:g} <= {target}x, {name}, {threads} thread(s) | {ratio:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
