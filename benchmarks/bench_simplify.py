"""Time of ``tnconv.simplify`` on a convolution with many size-1 spatial dims (1x1 kernels), by the number of dims.

Each dim gives one ``1x1`` rewrite (its pattern dropped, ``i`` split into ``(o, k)`` on
X) and one ``squeeze`` of ``k`` (from X and W): 2 * dims rewrites on networks of about
3 * dims legs. Before issue 22 item 24 a squeeze rebuilt the network and cancelled a
split deep in X's view chain (400 dims 0.35 s, 800 2.0 s, 1600 11.6 s); after it, each 1x1 rewrite
rebuilt the network and scanned its tensors per site (1600: 2.5 s); now the phase's rewrites build one
network and a network visited site by site indexes its legs once. The growth from
one row to the next says how the cost scales (4x per doubling is quadratic). The pass
runs uncached (``SIMPLIFY.traced``, not ``simplify``, which caches by network); the CPU
time of this process is reported (``time.process_time``, median of ``--rounds``), with
the machine's load.

Usage: python benchmarks/bench_simplify.py [--dims 400 800 1600] [--rounds 3] [--markdown benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnconv  # noqa: E402
from common import write_section  # noqa: E402
from tnconv.passes.simplify import SIMPLIFY  # noqa: E402


def size_one_conv(dims: int) -> tnconv.Network:
    """The forward network of a conv with ``dims`` spatial dims of size 1 and a 1x1 kernel, unsimplified."""
    return tnconv.conv_network("forward", (1, 2) + (1,) * dims, (1,) * dims, out_channels=3, simplify=False)


def seconds(dims: int, rounds: int) -> float:
    """Median CPU seconds of one uncached simplify of ``size_one_conv(dims)``."""
    net = size_one_conv(dims)
    times = []
    for _ in range(rounds):
        start = time.process_time()
        SIMPLIFY.traced(net)
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[400, 800, 1600])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows, previous = [], None
    for dims in args.dims:
        value = seconds(dims, args.rounds)
        growth = f"{value / previous[1]:.1f}x for {dims / previous[0]:.0f}x the dims" if previous else ""
        rows.append(f"| {dims} | {2 * dims} | {value:.3f} | {growth} |")
        previous = (dims, value)
    body = "\n".join([
        f"{datetime.date.today()}, load average {load:.1f} (1 min) on {os.cpu_count()} CPUs, median of {args.rounds} "
        "(CPU seconds of the process).", "",
        "| dims | rewrites | simplify s | growth |", "| --- | --- | --- | --- |", *rows,
    ])
    print(body)
    if args.markdown is not None:
        write_section(args.markdown, "Simplify with many size-1 dims", body)


if __name__ == "__main__":
    main()
