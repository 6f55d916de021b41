"""Train the digits CNN of ``digits_kfac.py`` with SINGD on tnconv, with singd's own SINGD, and with plain SGD.

    python examples/digits_singd.py

``tnconv.integrations.singd.SINGD`` is singd's optimizer (``pip install tnconv[singd]``) whose
conv statistics come from tnconv: its steps are singd's to rounding on the layers singd
supports (this CNN's ``Conv2d`` and ``Linear``), and it takes the layers singd lacks. Each step
draws a batch, runs the forward and backward pass (the optimizer's hooks record what its
preconditioner needs) and steps; the preconditioner is updated every ``T`` steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from singd.optim.optimizer import SINGD as SingdSINGD

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_kfac import digits, small_cnn  # noqa: E402
from tnconv.integrations.singd import SINGD  # noqa: E402

OPTIMIZERS = {"tnconv": SINGD, "singd": SingdSINGD}
SINGD_SETTINGS = dict(lr=0.1, lr_cov=0.005, T=1, structures=("dense", "dense"), kfac_approx="expand")
"""Among lr 0.02-0.5 and lr_cov 0.005-0.1 (damping 1e-3, singd's default) one of the lowest losses after 40 steps;
larger lr_cov diverge."""
SGD_LR = 0.5  # the best of 0.05-1.0 over 40 steps (as in digits_kfac.py)


def train(method: str, steps: int = 40, batch_size: int = 64, seed: int = 0) -> list[float]:
    """Train with ``method`` ("tnconv", "singd" or "sgd"); the loss on the whole data set after each step."""
    images, labels = digits()
    model, loss_function = small_cnn(seed), torch.nn.CrossEntropyLoss()
    if method == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    else:
        optimizer = OPTIMIZERS[method](model, **SINGD_SETTINGS)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
        optimizer.zero_grad()
        loss_function(model(images[batch]), labels[batch]).backward()
        optimizer.step()
        with torch.no_grad():
            losses.append(loss_function(model(images), labels).item())
    return losses


if __name__ == "__main__":
    for method in ("sgd", "singd", "tnconv"):
        losses = train(method)
        print(f"{method:>6}: loss {losses[0]:.3f} after 1 step, {losses[-1]:.3f} after {len(losses)} steps")
