"""Call cost of small programs vs a bare ``torch.einsum`` of one pairwise step (CPU, 1 thread).

Each program is called with its operands by position; the reference is
``torch.einsum`` of one precomputed two-operand step of the same size (a
``4 x 4`` matrix product), the cheapest thing a program could be made of.
Interleaved rounds, medians (``benchmarks/common.py``). The target of issue 6
is at most about 2x per call of a small network.

Usage: python benchmarks/bench_lower_overhead.py [--rounds 30] [--number 2000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnconv  # noqa: E402
from common import interleaved  # noqa: E402
from tnconv.ir.network import Network  # noqa: E402


def cases() -> dict[str, tuple[object, list[torch.Tensor]]]:
    def four(legs: str) -> dict[str, int]:
        return {leg: 4 for leg in legs}

    a, b, c, d = (torch.randn(4, 4) for _ in range(4))
    matmul = tnconv.compile(Network.from_einsum("ij,jk->ik", "A", "B", sizes=four("ijk")))
    chain = tnconv.compile(Network.from_einsum("ij,jk,kl,lm->im", "A", "B", "C", "D", sizes=four("ijklm")))
    outer = tnconv.compile(Network.from_einsum("ij,jk,ik->ij", "A", "B", "C", sizes=four("ijk")))
    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    conv = tnconv.compile(tnconv.conv_network("forward", x.shape, (3, 3), 3, padding=1, simplify=False))
    unfold = tnconv.compile(tnconv.conv_network("unfold", x.shape, (3, 3), padding=1, simplify=False),
                            memory_limit=10**9)
    return {
        f"2 operands ({matmul.strategy})": (matmul, [a, b]),
        f"3 operands, 2 steps ({outer.strategy})": (outer, [a, b, c]),
        f"4 operands, 3 steps ({chain.strategy})": (chain, [a, b, c, d]),
        f"tiny conv ({conv.strategy})": (conv, [x, w]),
        f"tiny unfold, gather ({unfold.strategy})": (unfold, [x]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    number = args.number

    def repeat(call):
        return lambda: timeit.timeit(call, number=number)

    functions = {"bare torch.einsum step": repeat(lambda: torch.einsum("ij,jk->ik", a, b))}
    for name, (program, operands) in cases().items():
        functions[name] = repeat(lambda program=program, operands=operands: program(*operands))
    medians = interleaved(functions, args.rounds)
    base = medians["bare torch.einsum step"]
    print(f"{'call':50s} {'us':>8s} {'x einsum step':>14s}")
    for name, seconds in medians.items():
        print(f"{name:50s} {seconds / number * 1e6:8.1f} {seconds / base:14.2f}")


if __name__ == "__main__":
    main()
