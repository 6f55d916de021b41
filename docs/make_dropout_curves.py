"""Draw docs/dropout_curves.png: a small CNN trained on scikit-learn's digits with exact and approximate backprop.

The digits (``sklearn.datasets.load_digits``: 1797 8x8 images, 10 classes, bundled with
scikit-learn, no download) are upsampled to 16x16 so that the convolutions do most of
the work and standardised; 1500 images train, 297 test. The same CNN (same
initial weights, same batches) is trained with exact gradients and with
``tnconv.nn.approximate_backprop`` at keep 0.5 and 0.25, modes ``"channel"`` and
``"rows"``, one step of each run in turn, on the same batches. Each run records the training loss of every
step and the median wall time of a step (forward, backward, optimizer) after ``WARMUP``
steps, on one CPU thread;
the test accuracy after the last step goes into the legend. Prints the table that
docs/dropout.md shows.

Usage: python docs/make_dropout_curves.py [--epochs 8] [--lr 0.02] [--out docs/dropout_curves.png]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from tnconv.nn import approximate_backprop

RUNS = (("exact", 1.0, None), ("channel", 0.5, "channel"), ("channel", 0.25, "channel"), ("rows", 0.5, "rows"),
        ("rows", 0.25, "rows"))
WARMUP = 5
BATCH = 64
TRAIN = 1500


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test images ``(n, 1, 16, 16)``, standardised with the training set's mean and deviation, and labels."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    images = (images - images[:TRAIN].mean()) / images[:TRAIN].std()
    labels = torch.tensor(data.target)
    return images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]


def cnn() -> torch.nn.Module:
    """Three 3x3 conv layers (32, 64, 64 channels) with ReLU and max-pooling, then a linear classifier."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10),
    )


class Run:
    """One training run: a fresh CNN (the same initial weights for every run), its optimizer and dropout handle."""

    def __init__(self, mode: str | None, keep: float, lr: float) -> None:
        self.model = cnn()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)
        self.handle = approximate_backprop(self.model, keep, mode, torch.Generator().manual_seed(1)) if mode else None
        self.losses: list[float] = []
        self.times: list[float] = []

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step on a batch, timed (forward, backward and optimizer step)."""
        start = time.perf_counter()
        loss = F.cross_entropy(self.model(images), labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.times.append(time.perf_counter() - start)
        self.losses.append(loss.item())

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            return (self.model(images).argmax(1) == labels).float().mean().item()


def train(epochs: int, lr: float) -> dict[tuple[str, float], dict]:
    """Train every run of ``RUNS`` on the same batches, one step of each in turn (so that other load on the
    machine slows them alike); returns per run the losses, the median step time (s) and the test accuracy."""
    x_train, y_train, x_test, y_test = digits()
    runs = {(name, keep): Run(mode, keep, lr) for name, keep, mode in RUNS}
    order = torch.Generator().manual_seed(2)
    for _ in range(epochs):
        for batch in torch.randperm(TRAIN, generator=order).split(BATCH):
            for run in runs.values():
                run.step(x_train[batch], y_train[batch])
    return {
        key: {"losses": run.losses, "step": statistics.median(run.times[WARMUP:]),
              "accuracy": run.accuracy(x_test, y_test)}
        for key, run in runs.items()
    }


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average (as TensorBoard draws loss curves)."""
    out, running = [], values[0]
    for value in values:
        running = weight * running + (1 - weight) * value
        out.append(running)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "dropout_curves.png"))
    options = parser.parse_args()
    torch.set_num_threads(1)
    results = train(options.epochs, options.lr)
    exact_step = results[("exact", 1.0)]["step"]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    print("| gradients | keep | final loss (smoothed) | test accuracy | ms per step | vs exact |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, keep), result in results.items():
        curve = smooth(result["losses"])
        label = "exact" if name == "exact" else f"{name}, keep {keep:g}"
        axis.plot(curve, label=f"{label} (test acc. {result['accuracy']:.1%})", linewidth=1.3)
        print(f"| {name} | {keep:g} | {curve[-1]:.3f} | {result['accuracy']:.1%} | {result['step'] * 1e3:.1f} | "
              f"{result['step'] / exact_step:.2f} |")
    axis.set_xlabel("step (batch of 64)")
    axis.set_ylabel("training loss (smoothed)")
    axis.set_yscale("log")
    axis.set_title("CNN on sklearn digits (16x16): exact vs approximate backprop")
    axis.legend()
    figure.tight_layout()
    figure.savefig(options.out, dpi=110)
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
