"""Call cost of a symbolic program vs the concretely compiled program and an uncached ``torch.einsum`` (CPU, 1 thread).

A program compiled from a network with symbolic sizes reads its symbols off
the operands on the first call for a shape and keeps the concrete program of
that shape; a repeated call finds it by the operands' shapes (one dict
lookup). Each case times, interleaved (``benchmarks/common.py``, medians):
the repeated call of the symbolic program, the call of the program compiled
with the same sizes given, and ``torch.einsum`` of the same equation (which
plans its path on every call). Targets (issue 13): symbolic / concrete
<= 1.3, symbolic / torch.einsum <= 0.5.

Usage: python benchmarks/bench_symbolic.py [--rounds 30] [--number 1000] [--markdown benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import timeit
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnconv  # noqa: E402
from common import ROOT, interleaved, write_section  # noqa: E402

TITLE = "Symbolic programs (issue 13): repeated call vs concrete program and torch.einsum"


def cases() -> dict[str, tuple[str, tuple[torch.Tensor, ...]]]:
    """Equation and operands of each case (small tensors: the call overhead is what is measured)."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "2 operands, ij,jk->ik (4x4)": ("ij,jk->ik", (randn(4, 4), randn(4, 4))),
        "4 operands, ij,jk,kl,lm->im (4x4)": ("ij,jk,kl,lm->im", tuple(randn(4, 4) for _ in range(4))),
        "Gram, X twice, ij,kj->ik (8x16)": ("ij,kj->ik", (randn(8, 16),)),
        "kfac_reduce (2,8,8,8), K=3, P=1": ("kfac_reduce", (randn(2, 8, 8, 8),)),
    }


def programs(equation: str, operands: tuple[torch.Tensor, ...]) -> tuple[Callable, Callable, Callable]:
    """The symbolic program, the concrete program and the reference, each a callable on ``operands``."""
    if equation == "kfac_reduce":
        symbolic = tnconv.compile(tnconv.conv_network("kfac_reduce", ("N", "C", "H", "W"), 3, padding=1))
        concrete = tnconv.compile(tnconv.conv_network("kfac_reduce", operands[0].shape, 3, padding=1))
        x = operands[0]
        unfolded = lambda: torch.nn.functional.unfold(x, 3, padding=1)  # noqa: E731
        reference = lambda: torch.einsum("nkl,njl->kj", unfolded(), unfolded())  # noqa: E731
        return (lambda: symbolic(*operands)), (lambda: concrete(*operands)), reference
    names = [f"T{n}" for n in range(len(equation.split("->")[0].split(",")))]
    if equation == "ij,kj->ik":
        names = ["X", "X"]
    letters = equation.split("->")[0].split(",")
    sizes = {leg: size for term, operand in zip(letters, [operands[0]] * 2 if len(operands) == 1 else operands)
             for leg, size in zip(term, operand.shape)}
    symbolic = tnconv.compile(tnconv.Network.from_einsum(equation, *names))
    concrete = tnconv.compile(tnconv.Network.from_einsum(equation, *names, sizes=sizes))
    einsum_operands = [operands[0]] * 2 if len(operands) == 1 else list(operands)
    return (lambda: symbolic(*operands)), (lambda: concrete(*operands)), (
        lambda: torch.einsum(equation, *einsum_operands))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--number", type=int, default=1000)
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    number = args.number
    rows = []
    for name, (equation, operands) in cases().items():
        symbolic, concrete, reference = programs(equation, operands)
        torch.testing.assert_close(symbolic(), concrete())
        functions = {label: (lambda call=call: timeit.timeit(call, number=number))
                     for label, call in (("symbolic", symbolic), ("concrete", concrete), ("einsum", reference))}
        medians = {label: seconds / number * 1e6 for label, seconds in interleaved(functions, args.rounds).items()}
        rows.append((name, medians))
        print(f"{name:40s} symbolic {medians['symbolic']:7.1f} us  concrete {medians['concrete']:7.1f} us  "
              f"torch.einsum {medians['einsum']:7.1f} us")
    lines = [
        f"Produced by `python benchmarks/bench_symbolic.py` ({datetime.date.today()}, torch {torch.__version__}, "
        f"1 thread, {args.rounds} interleaved rounds of {number} calls, medians). **Measured on a shared machine "
        "(2 cores, other jobs running)**: ratios of calls timed side by side hold better than the times; the "
        "lead re-runs it on a quiet machine. Targets: symbolic / concrete <= 1.3, symbolic / torch.einsum <= 0.5 "
        "(the kfac_reduce reference is unfold + einsum, what unfold-based code does).",
        "",
        "| case | symbolic us | concrete us | torch.einsum us | symbolic / concrete | symbolic / einsum |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(f"| {name} | {m['symbolic']:.1f} | {m['concrete']:.1f} | {m['einsum']:.1f} | "
                     f"{m['symbolic'] / m['concrete']:.2f} | {m['symbolic'] / m['einsum']:.2f} |")
    write_section(Path(args.markdown), TITLE, "\n".join(lines))


if __name__ == "__main__":
    main()
