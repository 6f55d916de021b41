"""Regenerate docs/benchmarks.md: ``tnconv derive ROUTINE --layer NAME --bench --json`` over the built-in layers.

Times are medians of a few runs on this machine's CPU in float32; the ratio is
tnconv / PyTorch (below 1: tnconv is faster).
"""

from __future__ import annotations

import io
import json
import platform
import sys
from pathlib import Path

import torch

from tnconv.cli import main as tnconv_main
from tnconv.cli.layers import layer_names

ROUTINES = ("forward", "weight-vjp", "kfac-reduce")
REPEATS = "3"
HEADER = """# Benchmarks

Each row is `tnconv derive ROUTINE --layer NAME --bench` on a built-in layer
(batch 8, float32, median of {repeats} runs after 2 warm-up runs, {threads}
CPU threads, {machine}, torch {torch}). *tnconv* runs the derived network's
compiled program; *PyTorch* is the usual implementation of the same routine
(`conv*d`, `convolution_backward`, unfold + einsum for KFAC-reduce). Ratio =
tnconv / PyTorch: below 1 means tnconv is faster. Timings on a shared machine
are noisy; regenerate with `python docs/make_benchmarks.py`. The fuller suite
(more routines, 1 and 2 threads, compile times, peak memory) is
`python benchmarks/bench_routines.py`; whole models (ResNet-18, VGG-19 and a
ConvNeXt against unfold-based code, curvlinops and BackPACK) are
`python benchmarks/bench_models.py` (benchmarks/RESULTS.md, section "Whole models"); per-sample
gradient norms and DP-SGD steps against Opacus are `python benchmarks/bench_privacy.py` (section
"Private training").

| layer | routine | tnconv (ms) | PyTorch (ms) | ratio |
| --- | --- | ---: | ---: | ---: |
"""


def measure(layer: str, routine: str) -> dict | None:
    out, err = io.StringIO(), io.StringIO()
    status = tnconv_main(
        ["derive", routine, "--layer", layer, "--bench", "--repeats", REPEATS, "--json", "--no-diagram"], out, err
    )
    if status != 0:
        print(f"{layer} {routine}: {err.getvalue().strip()}", file=sys.stderr)
        return None
    return json.loads(out.getvalue())["bench"]


def main() -> None:
    rows = []
    for layer in layer_names():
        for routine in ROUTINES:
            result = measure(layer, routine)
            if result is None:
                rows.append(f"| {layer} | {routine} | - | - | - |")
                continue
            rows.append(
                f"| {layer} | {routine} | {result['tnconv_s'] * 1e3:.2f} | {result['pytorch_s'] * 1e3:.2f} "
                f"| {result['ratio']:.2f} |"
            )
            print(rows[-1], flush=True)
    text = HEADER.format(
        repeats=REPEATS, threads=torch.get_num_threads(), machine=platform.machine(), torch=torch.__version__
    )
    (Path(__file__).resolve().parent / "benchmarks.md").write_text(text + "\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
