"""Call cost of small programs vs a bare ``torch.einsum`` of one pairwise step (CPU, 1 thread).

Each program is called with its operands by position; the reference is
``torch.einsum`` of one precomputed two-operand step of the same size (a
``4 x 4`` matrix product), the cheapest thing a program could be made of.
One more row calls ``torch.einsum`` on the 4-operand chain itself: torch then
plans its contraction path on every call, which a compiled program does once.
Interleaved rounds, medians (``benchmarks/common.py``). Targets: a program
call well under half of the uncached ``torch.einsum`` (issue 2), and at most
about 2x the pairwise step on a small network (issue 6).

Usage: python benchmarks/bench_lower_overhead.py [--rounds 30] [--number 2000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnconv  # noqa: E402
from common import interleaved  # noqa: E402
from tnconv.ir.network import Network  # noqa: E402


def cases() -> dict[str, tuple[Callable[..., torch.Tensor], list[torch.Tensor]]]:
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
        "4 operands, uncached torch.einsum": (lambda *t: torch.einsum("ij,jk,kl,lm->im", *t), [a, b, c, d]),
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
    for name, (call, operands) in cases().items():
        functions[name] = repeat(lambda call=call, operands=operands: call(*operands))
    medians = interleaved(functions, args.rounds)
    base = medians["bare torch.einsum step"]
    print(f"{'call':50s} {'us':>8s} {'x einsum step':>14s}")
    for name, seconds in medians.items():
        print(f"{name:50s} {seconds / number * 1e6:8.1f} {seconds / base:14.2f}")


if __name__ == "__main__":
    main()
