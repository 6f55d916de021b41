"""Fit the torch backend's speeds (``tnconv.backends.torch.target.SPEEDS``): when a pattern-pair Gram beats the patches and their Gram.

For each layer of ``LAYERS`` (float32, zero padding ``K // 2``, stride 1 or 2, 1 thread), the two ways of
KFAC-expand's ``sum_{n,o} U U^T`` run side by side, round-robin (medians of ``--repeats`` rounds
after a warm-up one, so that load from other processes hits both alike):

- ``pair``: the layer's pattern-pair Gram (``tnconv.lower.pair_gram.match``, run by the torch backend);
- ``patches``: the patches and their Gram by upper panels (``accumulate_patch_gram``, in the torch target's chunks).

The speeds of each way are then fitted to its times by non-negative least squares on relative
errors (each row divided by its measured time), over the counts ``pair_work`` / ``patch_work``
give: whole runs, not single calls, so that what a run does beside its products (padding, copies of
each call's result, the assembly) is priced too. It prints the ``Speeds(...)`` to paste into
``tnconv/backends/torch/target.py`` and, per layer, the measured and estimated milliseconds and which way
the estimate picks against which was faster. The speeds in the repository were fitted on the
project's shared 2-core x86-64 machine (other helpers' jobs share it) in a quiet moment; re-fit on the machine that runs.

Usage: python benchmarks/calibrate_pair_choice.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rotated  # noqa: E402

from tnconv.backends.torch.pair_gram import pair_gram  # noqa: E402
from tnconv.backends.torch.target import TARGET  # noqa: E402
from tnconv.conv.hyper import conv_hyper  # noqa: E402
from tnconv.curvature.patches import accumulate_patch_gram, patch_elements  # noqa: E402
from tnconv.lower import pair_gram as pair_plans  # noqa: E402
from tnconv.lower.pair_choice import PairWork, PatchWork, Speeds, pair_work, patch_work  # noqa: E402
from tnconv.lower.patch_gram import patch_chunks  # noqa: E402
from tnconv.routines import TABLE, routine_network  # noqa: E402

LAYERS = (  # (x shape, kernel[, stride]): ResNet-18 CIFAR's stride-1 3x3 layers (batch 32, the last at 8), others
    ((32, 3, 32, 32), 3),
    ((32, 64, 32, 32), 3),
    ((32, 128, 16, 16), 3),
    ((32, 256, 8, 8), 3),
    ((8, 512, 4, 4), 3),
    ((8, 64, 28, 28), 5),
    ((8, 64, 56, 56), 3),
    ((2, 64, 56, 56), 7),
    ((2, 32, 28, 28), 7),
    ((8, 32, 32, 32), 5),
    ((16, 64, 16, 16), 3),
    ((8, 16, 32, 32), 3),
    ((4, 8, 64, 64), 3),
    ((16, 128, 8, 8), 3),
    ((4, 16, 12, 12), 5),
    ((8, 32, 16, 16), 3),
    ((32, 64, 32, 32), 3, 2),  # ResNet-18 CIFAR's layer2.0.conv1
    ((32, 128, 16, 16), 3, 2),
    ((8, 64, 56, 56), 3, 2),
    ((8, 64, 56, 56), 5, 2),
    ((2, 64, 56, 56), 7, 2),
    ((8, 32, 32, 32), 7, 4),
    ((8, 3, 224, 224), 7, 2),  # ResNet-18's ImageNet stem (layers.json's resnet18_conv1)
)


def fit(features: list[list[float]], seconds: list[float]) -> list[float]:
    """Non-negative coefficients minimising the relative errors."""
    rows = torch.tensor(features, dtype=torch.float64) / torch.tensor(seconds, dtype=torch.float64)[:, None]
    coefficients, _ = nnls(rows.numpy(), [1.0] * len(seconds))
    return [float(c) for c in coefficients]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    works: list[tuple[PairWork, PatchWork]] = []
    measured: list[list[float]] = []
    for shape, kernel, *stride in LAYERS:
        hyper = conv_hyper(shape, kernel, stride=stride[0] if stride else 1, padding=kernel // 2)
        plan = pair_plans.match(routine_network(TABLE["kfac_expand"], hyper))
        assert plan is not None, shape
        run = pair_gram(plan)
        chunks = patch_chunks(hyper.batch, patch_elements(hyper), patch_elements(hyper), TARGET)
        x = torch.randn(shape)
        d = shape[1] * kernel * kernel
        out = torch.empty(1, d, d)
        ways = {"pair": lambda run=run, x=x: run([x]),
                "patches": lambda x=x, hyper=hyper, chunks=chunks, out=out: accumulate_patch_gram(
                    x, hyper, chunks, out, 1.0, 0.0)}
        medians = rotated(ways, args.repeats)
        measured.append([medians["pair"], medians["patches"]])
        works.append((pair_work(plan), patch_work(plan)))
        print(f"{shape} {kernel}x{kernel} stride {stride[0] if stride else 1}: pair {medians['pair'] * 1e3:.1f} ms, "
              f"patches {medians['patches'] * 1e3:.1f} ms", flush=True)
    pair_speeds = fit([[w.calls, w.outputs, w.inputs, w.flops, w.adds, w.added] for w, _ in works], [m[0] for m in measured])
    patch_speeds = fit([[1.0, w.elements, w.flops, w.factor] for _, w in works], [m[1] for m in measured])
    speeds = Speeds(*pair_speeds, *patch_speeds)
    print(f"{speeds!r}".replace(", ", ",\n    "))
    print("| layer | kernel | stride | pair ms (estimate) | patches ms (estimate) | picks | faster |")
    print("|---|---|---|---|---|---|---|")
    for (shape, kernel, *stride), (pair_count, patch_count), (pair, patches) in zip(LAYERS, works, measured):
        guess = speeds.pair_seconds(pair_count), speeds.patch_seconds(patch_count)
        print(f"| {shape} | {kernel} | {stride[0] if stride else 1} | {pair * 1e3:.1f} ({guess[0] * 1e3:.1f}) | {patches * 1e3:.1f} "
              f"({guess[1] * 1e3:.1f}) | {'pair' if guess[0] < guess[1] else 'patches'} | "
              f"{'pair' if pair < patches else 'patches'} |")


if __name__ == "__main__":
    main()
