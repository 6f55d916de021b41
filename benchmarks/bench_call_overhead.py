"""Call overhead of a compiled Program on a small 4-operand network.

Compares, side by side in one process (interleaved rounds, medians):
- ``program(*operands)``: tnconv's cached plan;
- ``torch.einsum(equation, *operands)``: torch recomputes its contraction path on every call;
- one ``torch.einsum`` of a single precomputed pairwise step (the floor for any einsum-based call).

Usage: python benchmarks/bench_call_overhead.py [--rounds 30] [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

import tnconv


def per_call_seconds(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = {"i": 8, "j": 9, "k": 10, "l": 11, "m": 12}
    equation = "ij,jk,kl,lm->im"
    net = tnconv.Network.from_einsum(equation, "A", "B", "C", "D", sizes=sizes)
    program = tnconv.compile(net)
    operands = [torch.randn(sizes[a], sizes[b]) for a, b in ("ij", "jk", "kl", "lm")]
    pair = (operands[0], operands[1])
    candidates = {
        "tnconv program": lambda: program(*operands),
        "torch.einsum (uncached)": lambda: torch.einsum(equation, *operands),
        "torch.einsum one pairwise step": lambda: torch.einsum("ij,jk->ik", *pair),
    }
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, function in candidates.items():
            timings[name].append(per_call_seconds(function, args.calls))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    base = medians["tnconv program"]
    print(f"network {equation} sizes {sizes}; torch {torch.__version__}, 1 thread, {args.rounds} rounds x {args.calls} calls")
    print(f"| call | median [us] | tnconv / this |")
    print(f"| --- | ---: | ---: |")
    for name, median in medians.items():
        print(f"| {name} | {median * 1e6:.1f} | {base / median:.2f} |")


if __name__ == "__main__":
    main()
