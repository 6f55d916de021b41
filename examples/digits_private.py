"""Train a small CNN on scikit-learn's digits with differential privacy (DP-SGD), by ``tnconv.privacy.clip_grads``.

    python examples/digits_private.py

Each step draws a Poisson batch (every training image with probability ``sample_rate``),
writes into ``.grad`` the sum of the per-sample gradients clipped to norm ``max_norm`` plus
Gaussian noise of std ``noise_multiplier * max_norm`` (``clip_grads``: per-sample norms, then
one weighted weight VJP per layer), divides it by the expected batch size and takes an SGD step.
The privacy spent, epsilon at ``delta = 1e-5``, comes from Opacus's RDP accountant (the same
steps, noise multiplier and sample rate). The digits (1797 images of 8x8 pixels, 10 classes)
ship with scikit-learn: no download; the last 297 images are the test set.

With the defaults (30 expected epochs: 703 steps of expected batch 64, noise multiplier 1.5,
clipping norm 0.5) the test accuracy is 0.87 at epsilon 4.2 (delta 1e-5); the same training
without clipping and noise reaches 0.95.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from opacus.accountants import RDPAccountant
from sklearn.datasets import load_digits

from tnconv.privacy import clip_grads

TEST = 297
DELTA = 1e-5


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``(1797, 1, 8, 8)`` scaled to [0, 1] and their labels ``(1797,)``."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    return images, torch.tensor(data.target)


def private_cnn(seed: int = 0) -> torch.nn.Module:
    """Two convs with GroupNorm (BatchNorm would mix the samples of a batch) and a Linear head."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.GroupNorm(4, 32), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 10),
    )  # fmt: skip


class Result(NamedTuple):
    """The test accuracy after training, the privacy spent (epsilon at ``DELTA``) and the steps taken."""

    accuracy: float
    epsilon: float
    steps: int


def train(
    epochs: int = 30, sample_rate: float = 64 / 1500, noise_multiplier: float = 1.5, max_norm: float = 0.5,
    lr: float = 0.5, seed: int = 0,
) -> Result:
    """DP-SGD for ``epochs`` passes (in expectation) over the training images; test accuracy and epsilon."""
    images, labels = digits()
    train_x, train_y, test_x, test_y = images[:-TEST], labels[:-TEST], images[-TEST:], labels[-TEST:]
    model, loss_function = private_cnn(seed), torch.nn.CrossEntropyLoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5)
    generator = torch.Generator().manual_seed(seed)
    accountant = RDPAccountant()
    expected_batch = sample_rate * len(train_y)
    steps = round(epochs / sample_rate)
    for _ in range(steps):
        chosen = torch.rand(len(train_y), generator=generator) < sample_rate
        if chosen.any():
            clip_grads(model, loss_function, train_x[chosen], train_y[chosen], max_norm, noise_multiplier, generator)
        else:  # an empty Poisson batch: the noise alone
            for parameter in model.parameters():
                parameter.grad = torch.randn(parameter.shape, generator=generator) * noise_multiplier * max_norm
        for parameter in model.parameters():
            parameter.grad /= expected_batch
        optimizer.step()
        accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    return Result(accuracy, accountant.get_epsilon(DELTA), steps)


if __name__ == "__main__":
    result = train()
    print(f"test accuracy {result.accuracy:.3f} at epsilon {result.epsilon:.2f} (delta {DELTA:g}), "
          f"{result.steps} steps")
