"""Draw docs/dropout_curves.png: a small CNN trained on scikit-learn's digits with exact and approximate backprop.

The digits (``sklearn.datasets.load_digits``: 1797 8x8 images, 10 classes, bundled with
scikit-learn, no download) are scaled to [0, 1] and upsampled to 16x16 so that the
convolutions do most of the work; 1500 images train, 297 test. The same CNN (same
initial weights, same batches) is trained with exact gradients and with
``tnconv.nn.approximate_backprop`` at keep 0.5 and 0.25, modes ``"channel"`` and
``"rows"``. Each run records the training loss of every step and the median wall time
of a step (forward, backward, optimizer) after ``WARMUP`` steps, on one CPU thread;
the test accuracy after the last step goes into the legend. Prints the table that
docs/dropout.md shows.

Usage: python docs/make_dropout_curves.py [--epochs 8] [--out docs/dropout_curves.png]
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
    """Train and test images ``(n, 1, 16, 16)`` in [0, 1] and their labels."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    labels = torch.tensor(data.target)
    return images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]


def cnn() -> torch.nn.Module:
    """Three 3x3 conv layers (16, 32, 32 channels) with ReLU and max-pooling, then a linear classifier."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 10),
    )


def train(mode: str | None, keep: float, epochs: int) -> dict:
    """Train a fresh CNN; returns the loss per step, the median step time (s) and the test accuracy."""
    x_train, y_train, x_test, y_test = digits()
    model = cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    handle = approximate_backprop(model, keep, mode, torch.Generator().manual_seed(1)) if mode else None
    order = torch.Generator().manual_seed(2)
    losses, times = [], []
    for _ in range(epochs):
        for batch in torch.randperm(TRAIN, generator=order).split(BATCH):
            start = time.perf_counter()
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
    if handle is not None:
        handle.remove()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return {"losses": losses, "step": statistics.median(times[WARMUP:]), "accuracy": accuracy}


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
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "dropout_curves.png"))
    options = parser.parse_args()
    torch.set_num_threads(1)
    results = {(name, keep): train(mode, keep, options.epochs) for name, keep, mode in RUNS}
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
