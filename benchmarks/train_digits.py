"""Training quality on real data (issue 23): SGD, Adam and tracked KFAC on scikit-learn's digits, loss against seconds.

The digits CNN of ``examples/digits_kfac.py`` (seed 0, the 1797 images of 8x8 pixels, 10 classes,
cross-entropy), batches of ``--batch`` drawn with one seeded generator per run, ``--steps`` steps, 1 thread
(``--threads``). Each method runs at every learning rate of its grid (``GRIDS``, small and documented):

- ``sgd``: ``torch.optim.SGD`` with momentum 0.9;
- ``adam``: ``torch.optim.Adam`` (default betas);
- ``kfac``: ``KFAC(model, loss, fisher="type-2", ema_decay=0.9)`` recorded inside each step
  (``with kfac.track():``), ``kfac.preconditioner(0.1).step()``, then ``torch.optim.SGD`` without momentum,
  as in the example.

The wall-clock seconds of a run count its training steps only (the evaluations, the loss on the whole data
set every ``--eval-every`` steps, are timed out). Each method's best learning rate is the one with the lowest
final loss; the target is the best SGD run's final loss, and for each method's best run the seconds until
its loss first reached it are reported (None: never).

Output: a line per run and the verdict on stdout, the runs in ``--json`` (benchmarks/digits.json) and the
loss of each method's best run against seconds in ``--plot`` (benchmarks/digits.png).

Usage: python benchmarks/train_digits.py [--steps 300] [--batch 64] [--eval-every 5] [--threads 1]
       [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType

import torch

from tnconv.curvature import KFAC

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {"sgd": [0.01, 0.03, 0.1, 0.3], "adam": [0.001, 0.003, 0.01, 0.03], "kfac": [0.02, 0.05, 0.1, 0.2]}
DAMPING = 0.1


def example() -> ModuleType:
    """``examples/digits_kfac.py`` (its data and model)."""
    spec = importlib.util.spec_from_file_location("digits_kfac", ROOT / "examples" / "digits_kfac.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(method: str, lr: float, steps: int, batch: int, eval_every: int, seed: int = 0) -> dict:
    """One training run: ``seconds`` (training time so far) and ``losses`` (whole data set) at each evaluation."""
    digits = example()
    images, labels = digits.digits()
    model, loss_function = digits.small_cnn(seed), torch.nn.CrossEntropyLoss()
    kfac, preconditioner = None, None
    if method == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    elif method == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        kfac = KFAC(model, loss_function, fisher="type-2", ema_decay=0.9)
        preconditioner = kfac.preconditioner(DAMPING)
    generator = torch.Generator().manual_seed(seed)
    seconds, losses, elapsed = [0.0], [evaluate(model, loss_function, images, labels)], 0.0
    for step in range(1, steps + 1):
        chosen = torch.randint(0, len(labels), (batch,), generator=generator)
        x, y = images[chosen], labels[chosen]
        start = time.perf_counter()
        optimizer.zero_grad()
        if kfac is not None and preconditioner is not None:
            with kfac.track():
                loss_function(model(x), y).backward()
            preconditioner.step()
        else:
            loss_function(model(x), y).backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        if step % eval_every == 0 or step == steps:
            seconds.append(elapsed)
            losses.append(evaluate(model, loss_function, images, labels))
    return {"method": method, "lr": lr, "seconds": seconds, "losses": losses}


def evaluate(model: torch.nn.Module, loss_function: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
             ) -> float:  # fmt: skip
    with torch.no_grad():
        return float(loss_function(model(images), labels))


def reached(result: dict, target: float) -> float | None:
    """The training seconds after which ``result``'s loss first was at or below ``target`` (None: never)."""
    return next((s for s, loss in zip(result["seconds"], result["losses"]) if loss <= target), None)


def study(steps: int, batch: int, eval_every: int, grids: dict[str, list[float]]) -> dict:
    """Every run of ``grids``, each method's best, the target and the seconds to reach it."""
    runs = []
    for method, rates in grids.items():
        for lr in rates:
            result = run(method, lr, steps, batch, eval_every)
            runs.append(result)
            print(f"{method:4s} lr={lr:<6g} final loss {result['losses'][-1]:.4f} after {result['seconds'][-1]:.2f} s",
                  flush=True)  # fmt: skip
    finite = [r for r in runs if r["losses"][-1] == r["losses"][-1]]
    best = {method: min((r for r in finite if r["method"] == method), key=lambda r: r["losses"][-1])
            for method in grids}  # fmt: skip
    target = best["sgd"]["losses"][-1]
    times = {method: reached(result, target) for method, result in best.items()}
    return {"steps": steps, "batch": batch, "eval_every": eval_every, "grids": grids, "damping": DAMPING,
            "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "target": target,
            "best": {method: result["lr"] for method, result in best.items()}, "seconds_to_target": times,
            "runs": runs}  # fmt: skip


def plot(path: Path, results: dict) -> None:
    """The loss of each method's best run against its training seconds, the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method, lr in results["best"].items():
        result = next(r for r in results["runs"] if r["method"] == method and r["lr"] == lr)
        axes.plot(result["seconds"], result["losses"], label=f"{method} (lr {lr:g})")
    axes.axhline(results["target"], color="gray", linestyle="--", linewidth=0.8, label="best SGD's final loss")
    axes.set_yscale("log")
    axes.set_xlabel("training seconds (evaluations excluded)")
    axes.set_ylabel("loss on all 1797 digits")
    axes.set_title(f"digits CNN, batch {results['batch']}, {results['steps']} steps, {results['threads']} thread(s)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", choices=["full", "first"], default="full",
                        help="'first': the first learning rate of each grid only (a smoke run)")  # fmt: skip
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "digits.json"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "digits.png"))
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    grids = GRIDS if options.grid == "full" else {method: rates[:1] for method, rates in GRIDS.items()}
    results = study(options.steps, options.batch, options.eval_every, grids)
    for method, seconds in results["seconds_to_target"].items():
        when = "never" if seconds is None else f"after {seconds:.2f} s"
        print(f"best {method} (lr {results['best'][method]:g}) reaches the best SGD's final loss "
              f"{results['target']:.4f} {when}")  # fmt: skip
    Path(options.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    plot(Path(options.plot), results)


if __name__ == "__main__":
    main()
