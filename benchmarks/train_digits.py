"""Training quality on real data (issue 23): SGD, Adam and tracked KFAC on scikit-learn's digits, loss against seconds.

The digits CNN of ``examples/digits_kfac.py`` (seed 0, the 1797 images of 8x8 pixels, 10 classes,
cross-entropy), batches of ``--batch`` drawn with one seeded generator per run, ``--steps`` steps, 1 thread
(``--threads``). Each method runs at every learning rate of its grid (``GRIDS``, small and documented) and, for
KFAC, at every ``invert_every`` of ``INVERT_EVERY`` (1: fresh inverses every step; 10: reused for 10 steps):

- ``sgd``: ``torch.optim.SGD`` with momentum 0.9;
- ``adam``: ``torch.optim.Adam`` (default betas);
- ``kfac``: ``KFAC(model, loss, fisher="type-2", ema_decay=0.9)`` (KFAC-expand) recorded inside each step
  (``with kfac.track():``: one extra backward of the 10 Hessian columns),
  ``kfac.preconditioner(0.1, invert_every=k).step()``, then ``torch.optim.SGD`` without momentum, as in the
  example;
- ``kfac-empirical``: the same with ``approx="reduce", fisher="empirical"``: the factors from the step's own
  backward, no extra pass (the cheapest tracked KFAC).

A KFAC run that diverges ends at the batch that ``track()`` refuses (its factors not finite) with a NaN loss.
The wall-clock seconds of a run count its training steps only (the evaluations, the loss on the whole data
set every ``--eval-every`` steps, are timed out). Each method's best learning rate is the one with the lowest
final loss (for KFAC, the best pair of learning rate and ``invert_every``); the target is the best SGD run's
final loss, and for each method's best run the seconds until its loss first reached it are reported (None:
never), with each method's median seconds per step over its runs (the per-step cost behind those seconds).

Output: a line per run and the verdict on stdout, the runs in ``--json`` (benchmarks/digits.json) and the
loss of each method's best run against seconds in ``--plot`` (benchmarks/digits.png).

Usage: python benchmarks/train_digits.py [--steps 300] [--batch 64] [--eval-every 5] [--threads 1]
       [--grid full|first] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import time
from pathlib import Path
from types import ModuleType

import torch

from tnconv.curvature import KFAC

ROOT = Path(__file__).resolve().parent.parent
GRIDS = {"sgd": [0.01, 0.03, 0.1, 0.3], "adam": [0.001, 0.003, 0.01, 0.03], "kfac": [0.02, 0.05, 0.1, 0.2],
         "kfac-empirical": [0.02, 0.05, 0.1, 0.2]}  # fmt: skip
INVERT_EVERY = [1, 10]
KFAC_SETTINGS = {"kfac": {"approx": "expand", "fisher": "type-2"},
                 "kfac-empirical": {"approx": "reduce", "fisher": "empirical"}}  # fmt: skip
DAMPING = 0.1


def example() -> ModuleType:
    """``examples/digits_kfac.py`` (its data and model)."""
    spec = importlib.util.spec_from_file_location("digits_kfac", ROOT / "examples" / "digits_kfac.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(method: str, lr: float, steps: int, batch: int, eval_every: int, invert_every: int | None = None,
        seed: int = 0) -> dict:  # fmt: skip
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
        kfac = KFAC(model, loss_function, **KFAC_SETTINGS[method], ema_decay=0.9)
        preconditioner = kfac.preconditioner(DAMPING, invert_every=invert_every or 1)
    generator = torch.Generator().manual_seed(seed)
    seconds, losses, elapsed = [0.0], [evaluate(model, loss_function, images, labels)], 0.0
    for step in range(1, steps + 1):
        chosen = torch.randint(0, len(labels), (batch,), generator=generator)
        x, y = images[chosen], labels[chosen]
        start = time.perf_counter()
        optimizer.zero_grad()
        if kfac is not None and preconditioner is not None:
            try:
                with kfac.track():
                    loss_function(model(x), y).backward()
            except ValueError:  # a diverged run's batch is refused (not finite): the run ends with a NaN loss
                seconds.append(elapsed + time.perf_counter() - start)
                losses.append(math.nan)
                break
            preconditioner.step()
        else:
            loss_function(model(x), y).backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        if step % eval_every == 0 or step == steps:
            seconds.append(elapsed)
            losses.append(evaluate(model, loss_function, images, labels))
    return {"method": method, "lr": lr, "invert_every": invert_every, "seconds": seconds, "losses": losses}


def evaluate(model: torch.nn.Module, loss_function: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor
             ) -> float:  # fmt: skip
    with torch.no_grad():
        return float(loss_function(model(images), labels))


def reached(result: dict, target: float) -> int | None:
    """The index of ``result``'s first evaluation with a loss at or below ``target`` (None: never)."""
    return next((index for index, loss in enumerate(result["losses"]) if loss <= target), None)


def label(result: dict) -> str:
    """A run's method and settings in words."""
    every = "" if result["invert_every"] is None else f", invert_every {result['invert_every']}"
    return f"{result['method']} (lr {result['lr']:g}{every})"


def study(steps: int, batch: int, eval_every: int, grids: dict[str, list[float]], invert_every: list[int]) -> dict:
    """Every run of ``grids`` (KFAC's at each of ``invert_every``), each method's best, the target and the seconds
    and steps that each best run takes to reach it; each method's median seconds per step over its runs."""
    runs = []
    for method, rates in grids.items():
        for every in invert_every if method in KFAC_SETTINGS else [None]:
            for lr in rates:
                result = run(method, lr, steps, batch, eval_every, every)
                runs.append(result)
                print(f"{label(result):42s} final loss {result['losses'][-1]:.4f} after {result['seconds'][-1]:.2f} s",
                      flush=True)  # fmt: skip
    finite = [r for r in runs if r["losses"][-1] == r["losses"][-1]]
    best = {method: min((r for r in finite if r["method"] == method), key=lambda r: r["losses"][-1])
            for method in grids}  # fmt: skip
    target = best["sgd"]["losses"][-1]
    reaching = {method: reached(result, target) for method, result in best.items()}
    per_step = {method: statistics.median(r["seconds"][-1] / steps for r in finite if r["method"] == method)
                for method in grids}  # fmt: skip
    return {"steps": steps, "batch": batch, "eval_every": eval_every, "grids": grids, "invert_every": invert_every,
            "damping": DAMPING, "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "target": target,
            "best": {method: {"lr": result["lr"], "invert_every": result["invert_every"]}
                     for method, result in best.items()},
            "seconds_to_target": {method: None if index is None else best[method]["seconds"][index]
                                  for method, index in reaching.items()},
            "steps_to_target": {method: None if index is None else min(index * eval_every, steps)
                                for method, index in reaching.items()},
            "seconds_per_step": per_step, "runs": runs}  # fmt: skip


def best_run(results: dict, method: str) -> dict:
    """The run of ``method``'s best settings."""
    best = results["best"][method]
    return next(r for r in results["runs"] if r["method"] == method and r["lr"] == best["lr"]
                and r["invert_every"] == best["invert_every"])  # fmt: skip


def plot(path: Path, results: dict) -> None:
    """The loss of each method's best run against its training seconds, the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in results["best"]:
        result = best_run(results, method)
        axes.plot(result["seconds"], result["losses"], label=label(result))
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
                        help="'first': the first learning rate of each grid and the first invert_every only (a smoke "
                             "run)")  # fmt: skip
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "digits.json"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "digits.png"))
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    full = options.grid == "full"
    grids = GRIDS if full else {method: rates[:1] for method, rates in GRIDS.items()}
    results = study(options.steps, options.batch, options.eval_every, grids, INVERT_EVERY if full else INVERT_EVERY[:1])
    for method, seconds in results["seconds_to_target"].items():
        when = "never" if seconds is None else f"after {seconds:.2f} s ({results['steps_to_target'][method]} steps)"
        print(f"best {label(best_run(results, method))} reaches the best SGD's final loss {results['target']:.4f} "
              f"{when}; {results['seconds_per_step'][method] * 1e3:.2f} ms a step (median of its runs)")  # fmt: skip
    Path(options.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    plot(Path(options.plot), results)


if __name__ == "__main__":
    main()
