"""Train a small CNN on scikit-learn's digits with KFAC-preconditioned SGD, and with plain SGD.

    python examples/digits_kfac.py

Each step draws a batch and computes the gradient inside ``with kfac.track():``, which adds the
batch to the running KFAC factors (an exponential moving average) from that same forward and
backward, preconditions the gradient in place with ``KFAC(...).preconditioner(damping).step()``
and lets ``torch.optim.SGD`` take the step (docs/training.md).
The digits (1797 images of 8x8 pixels, 10 classes) ship with scikit-learn: no download.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from sklearn.datasets import load_digits

from tnconv.curvature import KFAC


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``(1797, 1, 8, 8)`` scaled to [0, 1] and their labels ``(1797,)``."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    return images, torch.tensor(data.target)


def small_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 2 * 2, 10),
    )  # fmt: skip


def train(
    method: str, steps: int = 40, batch_size: int = 64, lr: float | None = None, damping: float = 0.1,
    seed: int = 0,
) -> list[float]:
    """Train with ``method`` ("kfac" or "sgd"); the loss on the whole data set after each step."""
    images, labels = digits()
    model, loss_function = small_cnn(seed), torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr if lr is not None else LEARNING_RATES[method])
    kfac = KFAC(model, loss_function, ema_decay=0.9) if method == "kfac" else None
    preconditioner = kfac.preconditioner(damping) if kfac is not None else None
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
        x, y = images[batch], labels[batch]
        optimizer.zero_grad()
        with kfac.track() if kfac is not None else nullcontext():  # the factors of this very step
            loss_function(model(x), y).backward()
        if preconditioner is not None:
            preconditioner.step()
        optimizer.step()
        with torch.no_grad():
            losses.append(loss_function(model(images), labels).item())
    return losses


LEARNING_RATES = {"kfac": 0.05, "sgd": 0.5}  # the best of 0.05-1.0 for each, over 40 steps

if __name__ == "__main__":
    for method in ("sgd", "kfac"):
        losses = train(method)
        print(f"{method:>4}: loss {losses[0]:.3f} after 1 step, {losses[-1]:.3f} after {len(losses)} steps")
