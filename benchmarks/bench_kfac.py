"""KFAC-reduce input factor: tnconv (PatternSum, no unfolded input) vs the unfold-based computation.

For each layer of ../shared/benchmarks/layers.json (batch 8 on CPU; without that file,
the same layers from tnconv/layers.json, or --layers-file), both methods
compute ``A_g = 1/(N*T^2) sum_n (sum_t u_g[n,t]) (sum_t u_g[n,t])^T``:

- ``tnconv``: ``tnconv.curvature.kfac_reduce_factor`` (the derived network:
  ``X`` contracted with ``sum_o Pi`` per dim, run as window sums);
- ``unfold``: form the unfolded input ``u`` with PyTorch alone, sum it over
  locations, take the per-group outer products. ``F.unfold`` for 1-d/2-d
  layers; for 3-d a ``conv3d`` with one-hot kernels (``groups=C``); for the
  transposed layer ``F.unfold`` of the input with ``stride - 1`` zeros
  between pixels, padded by ``dilation*(K-1) - padding`` (plus
  ``output_padding`` on the right), whose taps run backwards.

Reported per layer: median time of each (warm calls, one thread), the ratio
unfold/tnconv (> 1: tnconv faster), the extra peak memory of one warm call,
and the max relative difference of the two results.

Peak memory: torch's CPU allocator is invisible to tracemalloc, so each
(layer, method) runs in a fresh child process that samples its resident set
size (/proc/self/statm) every 0.2 ms during one warm call; extra peak = max
RSS during the call - RSS just before it. glibc is told to serve every
allocation above 128 KiB by mmap (MALLOC_MMAP_THRESHOLD_), so freed buffers
leave the RSS at once and cannot hide later allocations. The analytic size
of the unfolded input (``N * C_in * prod(K) * T`` elements) is printed beside it.

Usage: python benchmarks/bench_kfac.py [--batch 8] [--repeats 5] [--threads 1] [--layers NAME ...]
       [--layers-file layers.json] [--dtype float32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

SHARED_LAYERS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "layers.json"
PACKAGE_LAYERS = Path(__file__).resolve().parents[1] / "tnconv" / "layers.json"
LAYERS = SHARED_LAYERS if SHARED_LAYERS.exists() else PACKAGE_LAYERS
PAGE = os.sysconf("SC_PAGE_SIZE")


def load_layers(path: Path) -> list[dict]:
    return json.loads(path.read_text())["layers"]


def hyper(layer: dict) -> dict:
    """Keyword arguments of kfac_reduce_factor for a layer entry."""
    transposed = bool(layer.get("transposed", False))
    w = layer["w"]
    groups = layer.get("groups", 1)
    return dict(
        kernel_size=tuple(w[2:]), stride=layer.get("stride", 1), padding=layer.get("padding", 0),
        dilation=layer.get("dilation", 1), groups=groups, transposed=transposed,
    )


def unfold_based(x: torch.Tensor, layer: dict) -> torch.Tensor:
    """KFAC-reduce through the unfolded input ``u`` (``(N, C_in*prod(K), T)``), PyTorch only.

    Layers with int stride/padding/dilation and symmetric padding (those of layers.json).
    """
    args = hyper(layer)
    kernel, stride, padding, dilation = args["kernel_size"], args["stride"], args["padding"], args["dilation"]
    batch, channels, groups = x.shape[0], x.shape[1], args["groups"]
    flipped = args["transposed"]
    if flipped:  # a transposed conv is a stride-1 conv of the zero-stuffed input with the taps reversed
        stuffed = x.new_zeros(batch, channels, *[(s - 1) * stride + 1 for s in x.shape[2:]])
        stuffed[(slice(None), slice(None), *[slice(None, None, stride)] * (x.ndim - 2))] = x
        border = [dilation * (k - 1) - padding for k in kernel]
        x = F.pad(stuffed, [side for b in reversed(border) for side in (b, b)])
        stride, padding = 1, 0
    if x.ndim == 4:
        u = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    elif x.ndim == 3:
        u = F.unfold(x.unsqueeze(-1), (*kernel, 1), dilation=(dilation, 1), padding=(padding, 0), stride=(stride, 1))
    else:  # one-hot kernels: the N-d im2col PyTorch has no function for
        taps = math.prod(kernel)
        eye = torch.eye(taps, dtype=x.dtype).reshape(taps, 1, *kernel).repeat(channels, 1, *[1] * len(kernel))
        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.ndim]
        u = conv(x, eye, stride=stride, padding=padding, dilation=dilation, groups=channels).flatten(2)
    summed = u.sum(-1)
    if flipped:
        summed = summed.reshape(batch, channels, *kernel).flip(list(range(2, 2 + len(kernel)))).flatten(1)
    summed = summed.reshape(batch, groups, -1)
    return torch.einsum("nga,ngb->gab", summed, summed) / (batch * u.shape[-1] ** 2)


def with_tnconv(x: torch.Tensor, layer: dict) -> torch.Tensor:
    from tnconv.curvature import kfac_reduce_factor

    return kfac_reduce_factor(x, **hyper(layer))


METHODS: dict[str, Callable[[torch.Tensor, dict], torch.Tensor]] = {"tnconv": with_tnconv, "unfold": unfold_based}


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_during(function: Callable[[], object]) -> int:
    """Max RSS growth while ``function`` runs, sampled by a thread."""
    base, peak, running = rss(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        function()
    finally:
        running[0] = False
        thread.join()
    return max(peak[0], rss()) - base


def child(layers: Path, name: str, method: str, batch: int, repeats: int, dtype: str) -> dict:
    """One (layer, method) measurement; runs in a fresh process."""
    layer = next(entry for entry in load_layers(layers) if entry["name"] == name)
    x = torch.randn(batch, *layer["x"], generator=torch.Generator().manual_seed(0), dtype=getattr(torch, dtype))
    function = METHODS[method]
    result = function(x, layer)  # warm: plans, caches
    extra = peak_during(lambda: function(x, layer))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x, layer)
        times.append(time.perf_counter() - start)
    torch.save(result, f"/tmp/bench_kfac_{os.getppid()}_{name}_{method}.pt")
    return {"seconds": statistics.median(times), "extra_peak_bytes": extra}


def unfolded_bytes(layer: dict, batch: int, itemsize: int) -> int:
    """Analytic size of the unfolded input ``(N, C_in*prod(K), T)``."""
    from tnconv.conv.hyper import conv_hyper

    args = hyper(layer)
    h = conv_hyper(
        (batch, *layer["x"]), args["kernel_size"], None, args["stride"], args["padding"], args["dilation"],
        args["groups"], "zeros", 0, args["transposed"],
    )
    return batch * layer["x"][0] * math.prod(args["kernel_size"]) * math.prod(h.output_size) * itemsize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--layers", nargs="*", help="layer names (default: all)")
    parser.add_argument("--layers-file", type=Path, default=LAYERS, help=f"default: {LAYERS}")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", nargs=2, metavar=("LAYER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.layers_file, *args.child, args.batch, args.repeats, args.dtype)))
        return
    table = load_layers(args.layers_file)
    names = args.layers or [entry["name"] for entry in table]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": str(args.threads)}
    itemsize = torch.tensor([], dtype=getattr(torch, args.dtype)).element_size()
    columns = (
        ("tnconv ms", 10), ("unfold ms", 10), ("ratio", 7), ("tnconv +MiB", 12), ("unfold +MiB", 12), ("u MiB", 8),
        ("rel diff", 9),
    )
    header = f"{'layer':24} " + " ".join(f"{name:>{width}}" for name, width in columns)
    print(f"KFAC-reduce, batch {args.batch}, {args.dtype}, {args.threads} thread(s); ratio = unfold / tnconv")
    print(header)
    rows = []
    for name in names:
        layer = next(entry for entry in table if entry["name"] == name)
        measured = {}
        for method in METHODS:
            command = [sys.executable, __file__, "--child", name, method, "--batch", str(args.batch),
                       "--repeats", str(args.repeats), "--threads", str(args.threads), "--dtype", args.dtype,
                       "--layers-file", str(args.layers_file)]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            measured[method] = json.loads(output.strip().splitlines()[-1])
        results = [torch.load(f"/tmp/bench_kfac_{os.getpid()}_{name}_{m}.pt") for m in METHODS]
        for method in METHODS:
            os.remove(f"/tmp/bench_kfac_{os.getpid()}_{name}_{method}.pt")
        difference = ((results[0] - results[1]).abs().max() / results[1].abs().max()).item()
        row = {
            "layer": name,
            "tnconv_seconds": measured["tnconv"]["seconds"],
            "unfold_seconds": measured["unfold"]["seconds"],
            "ratio": measured["unfold"]["seconds"] / measured["tnconv"]["seconds"],
            "tnconv_extra_peak_bytes": measured["tnconv"]["extra_peak_bytes"],
            "unfold_extra_peak_bytes": measured["unfold"]["extra_peak_bytes"],
            "unfolded_bytes": unfolded_bytes(layer, args.batch, itemsize),
            "max_relative_difference": difference,
        }
        rows.append(row)
        mib = 2.0**20
        print(
            f"{name:24} {row['tnconv_seconds'] * 1e3:10.2f} {row['unfold_seconds'] * 1e3:10.2f} {row['ratio']:7.1f} "
            f"{row['tnconv_extra_peak_bytes'] / mib:12.1f} {row['unfold_extra_peak_bytes'] / mib:12.1f} "
            f"{row['unfolded_bytes'] / mib:8.1f} {difference:9.1e}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
