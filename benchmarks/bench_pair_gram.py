"""KFAC-expand (unnormalised ``sum_{n,t} u u^T``) by pattern-pair Grams against the im2col Gram, side by side.

For each layer (float32, CPU, zero padding ``K // 2``: 'same' at stride 1; stride 1 or 2):

- ``pair``: the pattern-pair Gram (``tnconv.lower.pair_gram``, strategy ``pair_gram``) of the KFAC-expand
  network (``tnconv.conv_network("kfac_expand", ...)``), run whether or not the planner picks it (the
  ``picks`` column: the strategy of the compiled network, chosen by ``tnconv.lower.pair_choice``);
- ``gram``: the same network's einsum plan (``Program.run_einsum_plan``): the gather/Gram path the
  planner runs where it does not pick the pair Gram;
- ``unfold``: ``F.unfold`` and one ``matmul`` (the unfold-based code of curvlinops and BackPACK).

The functions of a layer run round-robin in one process after a warm-up round (``interleaved``), each
round starting one function later, and the medians are printed with the pair's exact FLOPs
(``Program.flops``) as a ratio to the im2col Gram's ``2 N T (C K^2)^2`` (``PairGram.gram_flops``) and
its time against the gather/Gram path's and the unfold code's.

Usage: python benchmarks/bench_pair_gram.py [--threads 1] [--repeats 5] [--stride 2]
(``--stride S``: only the layers of stride S)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rotated  # noqa: E402

import tnconv  # noqa: E402
from tnconv.backends.torch.pair_gram import pair_gram  # noqa: E402
from tnconv.lower.pair_gram import lower  # noqa: E402

LAYERS = (  # (name, x shape, kernel, stride)
    ("3x3 56x56 C=64 N=8", (8, 64, 56, 56), 3, 1),
    ("3x3 28x28 C=128 N=8", (8, 128, 28, 28), 3, 1),
    ("5x5 28x28 C=64 N=8", (8, 64, 28, 28), 5, 1),
    ("7x7 56x56 C=64 N=2", (2, 64, 56, 56), 7, 1),
    ("3x3 S=2 56x56 C=64 N=8", (8, 64, 56, 56), 3, 2),
    ("3x3 S=2 32x32 C=64 N=32", (32, 64, 32, 32), 3, 2),  # ResNet-18 CIFAR layer2.0.conv1
    ("5x5 S=2 56x56 C=64 N=8", (8, 64, 56, 56), 5, 2),
    ("7x7 S=2 56x56 C=64 N=2", (2, 64, 56, 56), 7, 2),
)


def unfold_gram(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    patches = F.unfold(x, kernel, padding=kernel // 2, stride=stride)  # (N, C K^2, T)
    flat = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return flat.T @ flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stride", type=int, default=None, help="only the layers of this stride")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| layer | pair FLOPs / im2col Gram | pair ms | gather/Gram ms | unfold ms | pair / gather-Gram "
          "| pair / unfold | picks |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape, kernel, stride in LAYERS:
        if args.stride is not None and stride != args.stride:
            continue
        net = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=kernel // 2)
        plan = lower(net)
        assert plan is not None, name
        program = tnconv.compile(net)
        pair, picks = pair_gram(plan), program.strategy
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        d = shape[1] * kernel * kernel
        expected = unfold_gram(x, kernel, stride)
        got = pair([x]).reshape(d, d)
        assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item()), name
        medians = rotated(
            {"pair": lambda: pair([x]), "gram": lambda: program.run_einsum_plan(x), "unfold": lambda: unfold_gram(x, kernel, stride)},
            args.repeats,
        )
        ms = {key: 1e3 * value for key, value in medians.items()}
        print(f"| {name} | {plan.flops / plan.gram_flops:.3f} | {ms['pair']:.1f} | {ms['gram']:.1f} "
              f"| {ms['unfold']:.1f} | {medians['pair'] / medians['gram']:.2f} | {medians['pair'] / medians['unfold']:.2f} "
              f"| {picks} |", flush=True)


if __name__ == "__main__":
    main()
