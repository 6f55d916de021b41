"""The report of ``bench_models.py``: its section of benchmarks/RESULTS.md and its plot.

Each row of ``bench_models.measure`` holds a model, a thread count, a comparison (``task``) and
the median seconds of each side; ``RATIOS`` says which sides each ratio divides (< 1: tnconv
faster). The section ``SECTION`` replaces the one of the same heading in the markdown file
(``common.write_section``), so the other benchmarks' sections stay.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from common import write_section

SECTION = "Whole models (issue 15)"
# comparison -> (numerator side, denominator side, label) of each ratio
RATIOS = {
    "A expand": [("tnconv", "unfold", "A expand"), ("in place", "unfold", "A expand, in place")],
    "A reduce": [("tnconv", "unfold", "A reduce"), ("in place", "unfold", "A reduce, in place")],
    **{f"update {a}/{f}": [("tnconv", "curvlinops", f"update {a}/{f}")]
       for a in ("expand", "reduce") for f in ("type-2", "empirical")},  # fmt: skip
    "per-sample": [("tnconv", "backpack", "per-sample")],
    "diag GGN": [("tnconv", "backpack", "diag GGN")],
    "train step": [("kfac step", "sgd", "KFAC step / SGD step")],
}
# issue 15's targets: (model, ratio label) -> the largest ratio
TARGETS = {
    ("resnet18", "A expand"): 0.4,
    ("resnet18", "A reduce"): 0.2,
    **{(model, label): limit for model in ("resnet18", "vgg19", "convnext")
       for label, limit in (("update expand/empirical", 0.5), ("update reduce/type-2", 0.4), ("per-sample", 0.7),
                            ("diag GGN", 0.7))},  # fmt: skip
}
REFRESH_EVERY = 10
NOTES = (
    "- `A expand` / `A reduce`: all supported layers' input factors from the inputs of one forward. `tnconv` "
    "returns new factors as `kfac_*_factor` do (one triangle of each Gram, mirrored; KFAC-expand's patches in "
    "chunks of samples); `in place` blends them into existing factors as `KFAC.update` does (no new factor "
    "allocated: a 512-channel 3x3 layer's A is 85 MB, whose fresh pages cost more than its product for "
    "KFAC-reduce); `unfold` is `F.unfold` and `torch.einsum` (or `u^T u`).",
    "- `update`: `KFAC.update` (one forward, one batched backward of all columns, the factors accumulated in "
    "place) against curvlinops' `compute_kronecker_factors` (one forward, one backward per column of the loss "
    "Hessian's square root for type-2); grouped convs' weights frozen for both (curvlinops supports no groups).",
    "- `per-sample`, `diag GGN`: forward and backward of both, evaluation mode; BackPACK through its fx "
    "converter (residual adds); `n/a` where BackPACK cannot run the model (the ConvNeXt's LayerNorm and "
    "channels-last `Linear`s).",
    "- `train step`: SGD with momentum; the KFAC step adds `KFAC.update` every step (its own forward and "
    "backward), `Preconditioner.step` and a refresh of the Cholesky factors every 10 steps, counted at a "
    "tenth. Peak memory of the KFAC step includes an update and a refresh.",
    "- Peak memory: extra resident set of one call (its second) in a fresh process with glibc forced to "
    "`mmap` large blocks; MB = 2^20 bytes.",
)


def amortized(row: dict) -> dict[str, float]:
    """The row's side times, with the KFAC training step's refresh counted at ``1/REFRESH_EVERY``."""
    times = dict(row["times"])
    if row["task"] == "train step":
        times["kfac step"] = times["kfac"] + times["refresh"] / REFRESH_EVERY
    return times


def ratios(row: dict) -> dict[str, float]:
    """Label -> ratio of the row's sides (missing sides give no ratio)."""
    times = amortized(row)
    return {label: times[top] / times[bottom] for top, bottom, label in RATIOS[row["task"]]
            if top in times and bottom in times}  # fmt: skip


def measured(row: dict) -> str:
    """When and how a row was measured: its date, timed rounds and the load average at its end."""
    if "repeats" not in row:
        return row.get("date", "")
    return f"{row['date']}, {row['repeats']} round(s), load {row['load']:.1f}"


def markdown(path: Path, rows: list[dict], memory: list[dict], shapes: dict, quick: bool) -> None:
    """Write the section ``SECTION`` of ``path`` from the measured ``rows`` and ``memory`` (each with its date)."""
    inputs = "; ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
    lines = [
        f"Produced by `python benchmarks/bench_models.py{' --quick' if quick else ''}` (torch {torch.__version__}, "
        f"CPU with {os.cpu_count()} cores, float32, 10 classes, cross-entropy; inputs {inputs}; medians of the "
        "rounds after a warm-up round, the sides of a comparison interleaved in one process with the order rotated "
        "each round). The rows come from several runs (benchmarks/models.json keeps them; a run replaces the rows "
        "it measures): each names its date, rounds and the load average at its end. On a shared machine cells move "
        "by 10-30% between runs. Ratio = tnconv time / reference time (< 1: tnconv faster).",
        "",
        "### Targets",
        "",
        "| target | threads | ratio | reached | measured |",
        "|---|---:|---:|---|---|",
    ]
    targets = [(row, label, ratio, TARGETS[row["model"], label]) for row in rows
               for label, ratio in ratios(row).items() if (row["model"], label) in TARGETS]  # fmt: skip
    for row, label, ratio, limit in targets:
        verdict = "yes" if ratio <= limit else "no"
        lines.append(f"| {row['model']} {label} <= {limit}x | {row['threads']} | {ratio:.2f} | {verdict} | "
                     f"{measured(row)} |")
    if not targets:
        lines.append("| (no target concerns these models) | | | | |")
    for threads in sorted({row["threads"] for row in rows}):
        lines += ["", f"### {threads} thread(s): median ms per side", "",
                  "| model | comparison | sides (ms) | ratios | measured |", "|---|---|---|---|---|"]
        for row in (r for r in rows if r["threads"] == threads):
            times = amortized(row)
            sides = ", ".join(f"{side} {seconds * 1e3:.1f}" for side, seconds in times.items())
            found = ratios(row)
            cells = ", ".join(f"{label} {ratio:.2f}" for label, ratio in found.items()) or "n/a"
            lines.append(f"| {row['model']} | {row['task']} | {sides} | {cells} | {measured(row)} |")
    steps = [row for row in rows if "parts" in row]
    if steps:
        parts = list(steps[0]["parts"])
        lines += ["", "### Training step: the KFAC step's parts (median ms)", "",
                  "| model | threads | SGD step | KFAC step | " + " | ".join(parts) + " | refresh / 10 |",
                  "|---|---:|---:|---:|" + "---:|" * (len(parts) + 1)]
        for row in steps:
            times = amortized(row)
            cells = " | ".join(f"{row['parts'][part] * 1e3:.1f}" for part in parts)
            lines.append(f"| {row['model']} | {row['threads']} | {times['sgd'] * 1e3:.1f} | "
                         f"{times['kfac step'] * 1e3:.1f} | {cells} | {times['refresh'] / REFRESH_EVERY * 1e3:.1f} |")
    if memory:
        lines += ["", "### Extra peak memory (MB, 1 thread)", "", "| model | comparison | sides | measured |",
                  "|---|---|---|---|"]
        for row in memory:
            cells = ", ".join(f"{side} {peak / 2**20:.0f}" if peak >= 0 else f"{side} n/a"
                              for side, peak in row["peaks"].items())  # fmt: skip
            lines.append(f"| {row['model']} | {row['task']} | {cells} | {measured(row)} |")
    lines += ["", "### Reading the model numbers", "", *NOTES]
    write_section(path, SECTION, "\n".join(lines))


def plot(path: Path, rows: list[dict]) -> None:
    """Bars of every ratio per model, one panel per thread count (log scale; the line at 1 is parity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for pairs in RATIOS.values() for _, _, label in pairs]
    names = list(dict.fromkeys(row["model"] for row in rows))
    thread_counts = sorted({row["threads"] for row in rows})
    figure, axes = plt.subplots(1, len(thread_counts), figsize=(7 * len(thread_counts), 5.5), sharey=True,
                                squeeze=False)  # fmt: skip
    width = 0.8 / len(names)
    for axis, threads in zip(axes[0], thread_counts):
        for n, name in enumerate(names):
            found: dict[str, float] = {}
            for row in rows:
                if row["model"] == name and row["threads"] == threads:
                    found.update(ratios(row))
            values = [found.get(label, math.nan) for label in labels]
            axis.bar([i + n * width for i in range(len(labels))], values, width, label=name)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
        axis.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
        axis.set_title(f"tnconv / reference time, {threads} thread(s)")
    axes[0][0].set_ylabel("ratio (log scale; < 1: tnconv faster)")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
