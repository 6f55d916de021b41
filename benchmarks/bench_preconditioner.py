"""Ways to refresh and apply KFAC's damped inverses (issue 23), on the factor shapes of a whole model.

For every supported layer of the model (``tnconv.models``, CIFAR batch 8: only the shapes matter), random
symmetric positive definite factors ``A`` ``(G, dA, dA)`` and ``B`` ``(G, dB, dB)`` and a gradient
``(G, dB, dA)``, float32, CPU, 1 thread (``--threads``). Sides, interleaved with the order rotated each round
(``common.rotated``), medians of ``--rounds`` rounds:

- refresh, over all layers: ``cholesky`` (``torch.linalg.cholesky`` of the damped factor, then
  ``torch.cholesky_inverse``: what ``inverses.invert`` runs) against ``eigh`` (``torch.linalg.eigh``, the
  decomposition that would make a new damping free);
- apply, over all layers: ``inverses`` (two products with the explicit inverses: what the preconditioner
  runs), ``cholesky_solve`` (two triangular solve pairs against the Cholesky factors) and ``eigen``
  (``Q diag(1 / (l + damping)) Q^T`` on each side: four products and a scaling).

The preconditioner holds explicit inverses: refreshing them costs the Cholesky plus its inverse (a new
damping costs one more refresh), and applying them is the floor of two products per layer.

Usage: python benchmarks/bench_preconditioner.py [--model resnet18] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rotated  # noqa: E402
from tnconv import models  # noqa: E402
from tnconv.curvature import KFAC  # noqa: E402
from tnconv.curvature.kfac_batch import factor_shapes  # noqa: E402

DAMPING = 1e-3
FACTORIES = {"resnet18": models.resnet18_cifar, "vgg19": models.vgg19_cifar}


def spd(groups: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """A random symmetric positive definite ``(groups, d, d)`` factor of a Gram's scale."""
    rows = torch.randn(groups, d, 2 * d, generator=generator)
    return rows @ rows.mT / (2 * d)


def problems(name: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(A, B, G)`` of each supported layer of the model ``name``."""
    model = FACTORIES[name]()
    generator = torch.Generator().manual_seed(0)
    result = []
    for layer in KFAC(model, torch.nn.CrossEntropyLoss()).layers:
        (groups, d_a, _), (_, d_b, _) = factor_shapes(layer, joined=False)
        gradient = torch.randn(groups, d_b, d_a, generator=generator)
        result.append((spd(groups, d_a, generator), spd(groups, d_b, generator), gradient))
    return result


def damped(factor: torch.Tensor) -> torch.Tensor:
    return factor + DAMPING * torch.eye(factor.shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(FACTORIES), default="resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    layers = problems(options.model)
    lowers = [(torch.linalg.cholesky(damped(a)), torch.linalg.cholesky(damped(b))) for a, b, _ in layers]
    inverses = [(torch.cholesky_inverse(la), torch.cholesky_inverse(lb)) for la, lb in lowers]
    eigens = [(torch.linalg.eigh(a), torch.linalg.eigh(b)) for a, b, _ in layers]

    def refresh_cholesky() -> None:
        for a, b, _ in layers:
            torch.cholesky_inverse(torch.linalg.cholesky(damped(a)))
            torch.cholesky_inverse(torch.linalg.cholesky(damped(b)))

    def refresh_eigh() -> None:
        for a, b, _ in layers:
            torch.linalg.eigh(a)
            torch.linalg.eigh(b)

    def apply_inverses() -> None:
        for (inverse_a, inverse_b), (_, _, g) in zip(inverses, layers):
            inverse_b @ g @ inverse_a

    def apply_solves() -> None:
        for (lower_a, lower_b), (_, _, g) in zip(lowers, layers):
            left = torch.cholesky_solve(g, lower_b)
            torch.cholesky_solve(left.mT, lower_a).mT

    def apply_eigen() -> None:
        for ((values_a, q_a), (values_b, q_b)), (_, _, g) in zip(eigens, layers):
            rotated_g = q_b.mT @ g @ q_a
            scaled = rotated_g / (values_b[..., :, None] + DAMPING) / (values_a[..., None, :] + DAMPING)
            q_b @ scaled @ q_a.mT

    refresh = rotated({"cholesky": refresh_cholesky, "eigh": refresh_eigh}, options.rounds)
    apply = rotated({"inverses": apply_inverses, "cholesky_solve": apply_solves, "eigen": apply_eigen},
                    options.rounds)  # fmt: skip
    load = os.getloadavg()[0]
    print(f"{options.model}: {len(layers)} layers, {options.threads} thread(s), {options.rounds} rounds, "
          f"load {load:.1f}")  # fmt: skip
    print("refresh: " + "  ".join(f"{k}={v:.3f}s" for k, v in refresh.items())
          + f"  (eigh / cholesky = {refresh['eigh'] / refresh['cholesky']:.2f})")  # fmt: skip
    print("apply:   " + "  ".join(f"{k}={v:.3f}s" for k, v in apply.items())
          + f"  (cholesky_solve / inverses = {apply['cholesky_solve'] / apply['inverses']:.2f}, "
          f"eigen / inverses = {apply['eigen'] / apply['inverses']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
