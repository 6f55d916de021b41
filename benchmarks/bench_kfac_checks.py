"""What KFAC's finite check costs (issue 22 item 3): ``KFAC.update`` with and without it, and the check alone.

``KFAC.update`` refuses a batch whose factors would not be finite before it touches a running
factor: ``tnconv.curvature.kfac_batch.check_batch`` bounds each layer's factors by the diagonals of
their Grams (a conv layer: the patch sums of ``x^2``, or of ``x`` for KFAC-reduce; the columns'
sums of squares), one synchronisation for all layers, no factor-sized temporary. Sides, run in
one process round-robin with the order rotated each round (``common.rotated``), medians of
``--repeats`` rounds after a warm-up round:

- ``update``: ``KFAC.update(x, y)`` (type-2 Fisher, the factors blended into running ones);
- ``unchecked``: the same with ``check_batch`` replaced by a no-op;
- ``check``: ``check_batch`` alone on the layers' recorded inputs and pulled-back columns.

Models of ``tnconv.models``: the CIFAR ResNet-18 and VGG-19 at batch 32 (``--quick``: batch 4,
one round), float32, CPU, KFAC-expand and KFAC-reduce, ``--threads`` threads. Output: a table on
stdout and the section "KFAC's finite check (issue 22 item 3)" of ``--markdown`` (default
benchmarks/RESULTS.md; other sections are kept; ``--quick`` writes none unless it is given).

Usage: python benchmarks/bench_kfac_checks.py [--models resnet18 vgg19] [--threads 1] [--repeats 5] [--quick]
       [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, rotated, write_section  # noqa: E402
from tnconv import models  # noqa: E402
from tnconv.curvature import KFAC, sqrt_ggn  # noqa: E402
from tnconv.curvature import kfac as kfac_module  # noqa: E402
from tnconv.curvature.hooks import forward, pull_back  # noqa: E402
from tnconv.curvature.kfac_batch import LayerBatch, check_batch  # noqa: E402

CLASSES = 10
LOSS = torch.nn.CrossEntropyLoss()
MODELS = {"resnet18": models.resnet18_cifar, "vgg19": models.vgg19_cifar}
HEADING = "KFAC's finite check (issue 22 item 3)"


def sides(name: str, approx: str, batch: int) -> dict[str, object]:
    """The three sides for one model and approximation (seed 0 model, seed 1 batch)."""
    torch.manual_seed(0)
    model = MODELS[name](num_classes=CLASSES)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32, generator=generator), torch.randint(0, CLASSES, (batch,), generator=generator)
    kfac = KFAC(model, LOSS, approx=approx, ema_decay=0.9)
    kfac.update(x, y)
    output, records = forward(model, kfac.layers, x)
    pulled = pull_back(output, records, sqrt_ggn(output.detach(), "cross_entropy", "mean"))
    batches = [LayerBatch(layer, records[layer.name], pulled[layer.name]) for layer in kfac.layers]

    def unchecked() -> None:
        with mock.patch.object(kfac_module, "check_batch", lambda *args: None):
            kfac.update(x, y)

    return {
        "update": lambda: kfac.update(x, y), "unchecked": unchecked,
        "check": lambda: check_batch(batches, approx == "reduce"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="BatchNorm layers")  # training mode, as in training: expected here
    torch.set_num_threads(args.threads)
    batch, repeats = (4, 1) if args.quick else (32, args.repeats)
    markdown = args.markdown or (None if args.quick else ROOT / "benchmarks" / "RESULTS.md")
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        for approx in ("expand", "reduce"):
            times = rotated(sides(name, approx, batch), repeats)
            rows.append((name, approx, times))
            print(f"{name} {approx}: update {times['update'] * 1e3:.1f} ms, unchecked {times['unchecked'] * 1e3:.1f} "
                  f"ms ({times['update'] / times['unchecked']:.3f}x), check alone {times['check'] * 1e3:.2f} ms "
                  f"({times['check'] / times['unchecked']:.1%} of an update)", flush=True)  # fmt: skip
    load_after = os.getloadavg()
    table = ["| model | approx | update (ms) | without the check (ms) | ratio | the check alone (ms) | share |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, approx, times in rows:
        table.append(f"| {name} | {approx} | {times['update'] * 1e3:.1f} | {times['unchecked'] * 1e3:.1f} | "
                     f"{times['update'] / times['unchecked']:.3f}x | {times['check'] * 1e3:.2f} | "
                     f"{times['check'] / times['unchecked']:.1%} |")  # fmt: skip
    body = "\n".join([
        f"`python benchmarks/bench_kfac_checks.py --threads {args.threads} --repeats {repeats}`"
        f"{' --quick' if args.quick else ''}, {time.strftime('%Y-%m-%d')}: batch {batch}, float32, CPU, "
        f"{args.threads} thread(s), type-2 Fisher, EMA factors; medians of {repeats} rotated rounds. Load average "
        f"(1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after.", "", *table, "",
        "`check_batch` bounds each layer's batch factors by the diagonals of their Grams before any running factor "
        "is touched: one pass over each layer's input (patch sums of `x^2`) and columns, one synchronisation, no "
        "factor-sized temporary. The two whole-update columns differ by the spread of rounds on a loaded machine "
        "(their ratio is noise unless the load average stays well below the core count); the check's own time is "
        "its cost.",
    ])  # fmt: skip
    if markdown is not None:
        write_section(markdown, HEADING, body)


if __name__ == "__main__":
    main()
