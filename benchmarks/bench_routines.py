"""tnconv vs PyTorch on the benchmark layers: time ratios, compile times, extra peak memory.

For every layer of ``tnconv/layers.json`` (= ../shared/benchmarks/layers.json plus two tiny
layers; batch 8, float32, CPU), with 1 and 2 threads, routines run side by side in one
process (interleaved rounds, medians; see ``benchmarks/common.py``):

- forward, input VJP, weight VJP: the compiled program of ``tnconv.conv_network(op, ...)``
  (default ``simplify=True``) vs ``F.conv{N}d`` / ``torch.nn.grad.conv{N}d_input`` /
  ``conv{N}d_weight`` (for the transposed layer: ``F.conv_transpose2d``, the conv, and the
  conv's weight gradient with input and output swapped);
- unfold: the program, reshaped to ``(N, C*prod(K), L)``, vs ``F.unfold`` (2-d layers);
- KFAC-expand / KFAC-reduce input factors vs unfold-based code (``u u^T`` per group;
  ``(sum_t u)(sum_t u)^T``), both through ``tnconv.curvature`` (``kfac_*``) and as the
  compiled derived network alone (``kfac_*_net``: what the lowering does); per-sample
  weight gradients vs ``torch.func.vmap(torch.func.grad(...))`` - when ``tnconv.curvature``
  is importable (KFAC-expand is skipped above 50 GFLOP a call: VGG's layer);
- compile time of each routine: cold (every cache cleared: build + simplify + plan) and
  cached (``tnconv.compile`` of the same network again), the largest over the routines;
- extra peak memory of one call (bytes above the resident set before it) for both.

Times are taken under glibc's default allocator, as a training loop runs: once a
freed block has been returned, glibc raises its mmap threshold (up to 32 MiB), so
later buffers of that size are reused without page faults. Peak memory needs the
opposite - every large block mapped afresh, so that a freed buffer cannot hide a
new one - so it is measured in a child process per layer (``--memory LAYER``) with
``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB (``common.MMAP_THRESHOLD``).

Every pair is checked to agree (float32, relative 1e-3) before it is timed.
Ratios are tnconv / PyTorch time (< 1: tnconv faster). Results go to stdout, to
``--markdown`` (default benchmarks/RESULTS.md) and a plot ``--plot`` (PNG).

Usage: python benchmarks/bench_routines.py [--layers NAME ...] [--threads 1 2] [--budget 0.6]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tnconv  # noqa: E402
from common import (  # noqa: E402
    LAYER_FILES, MMAP_THRESHOLD, ROOT, Layer, ensure_mmap_allocations, interleaved, load_layers, peak_extra,
    write_sections,
)
from tnconv.programs.compile import compile  # noqa: E402

ROUTINES = (
    "forward", "input_vjp", "weight_vjp", "unfold", "kfac_expand", "kfac_expand_net", "kfac_reduce",
    "kfac_reduce_net", "per_sample",
)
NOTES = (
    "- Where the strategy is `native:*`, tnconv calls the very PyTorch kernel the reference calls "
    "(`F.conv*d`, `conv_transpose*d` / `aten.convolution_backward`, `F.unfold`), so the true ratio is 1 plus "
    "the Python cost of a program call (about 5 us: operand checks, layout views). Deviations beyond that "
    "in single cells (say 0.9 or 1.3 for one layer and thread count) are load from other jobs on the two "
    "shared cores, which interleaving and medians damp but do not remove.",
    "- `native:matmul` / `einsum` rows (stride = kernel layers after `tnconv.simplify`, 1x1 stride-2 "
    "layers, KFAC networks) run tnconv's own plans; those ratios are tnconv's.",
    "- `kfac_*` columns time `tnconv.curvature` as it stood when the benchmark ran (its own choice of "
    "network and reshapes); `kfac_*_net` time the compiled derived network (`tnconv.conv_network(op)`) "
    "alone, i.e. the lowering.",
    "- Times are taken under glibc's default allocator (as in a training loop, buffers up to 32 MiB are "
    "reused without page faults); extra peak memory is the resident-set growth during one call, including "
    "the output, measured in a child process with glibc forced to `mmap` every block above 128 KiB. "
    "Tables before 2026-11-23's window sums timed under that forced threshold too, which charges every "
    "buffer above 128 KiB with fresh page faults (about 0.3 ms per MB here): timed that way, KFAC-reduce "
    "measured 107x (convnext_base_dw7) and 22x (resnet18_layer1_3x3) faster than unfold-based code with "
    "1 thread, 89x and 21x with 2.",
)
KFAC_REDUCE_TARGETS = (
    ("convnext_base_dw7", "kfac_reduce", 100), ("convnext_base_dw7", "kfac_reduce_net", 100),
    ("resnet18_layer1_3x3", "kfac_reduce", 20), ("resnet18_layer1_3x3", "kfac_reduce_net", 20),
)
MAX_KFAC_EXPAND_FLOP = 50e9  # skip KFAC-expand rows above this (VGG's: 266 GFLOP a call on 2 cores)
HAS_CURVATURE = importlib.util.find_spec("tnconv.curvature") is not None
TARGETS = (
    ("forward", 1.1, ""), ("input_vjp", 1.1, ""), ("weight_vjp", 1.1, ""), ("unfold", 1.1, ""),
    ("kfac_expand", 1.0, " (unfold + matmul)"), ("kfac_expand_net", 1.0, " (unfold + matmul)"),
    ("per_sample", 1.0, " (torch.func)"),
)


def program(layer: Layer, op: str):
    return compile(tnconv.conv_network(op, **layer.hyper()))


def pairs(layer: Layer) -> dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor], str]]:
    """routine -> (tnconv call, PyTorch call, strategy), each returning a torch-layout tensor."""
    x, w, v = layer.x, layer.w, layer.v
    found = {}
    forward, input_vjp, weight_vjp = (program(layer, op) for op in ("forward", "input_vjp", "weight_vjp"))
    w_shape, y_shape = tuple(w.shape), tuple(v.shape)
    x_shape = tuple(x.shape)
    found["forward"] = (lambda: forward(X=x, W=w).reshape(y_shape), layer.torch_forward, forward.strategy)
    found["input_vjp"] = (lambda: input_vjp(V=v, W=w).reshape(x_shape), layer.torch_input_vjp, input_vjp.strategy)
    found["weight_vjp"] = (lambda: weight_vjp(X=x, V=v).reshape(w_shape), layer.torch_weight_vjp, weight_vjp.strategy)
    if layer.dims == 2 and not layer.transposed:
        unfold = program(layer, "unfold")
        columns = tuple(layer.torch_unfold().shape)
        found["unfold"] = (lambda: unfold(X=x).reshape(columns), layer.torch_unfold, unfold.strategy)
    if HAS_CURVATURE and not layer.transposed:
        found.update(curvature_pairs(layer))
    return found


def curvature_pairs(layer: Layer) -> dict:
    from tnconv import curvature

    x, v, g = layer.x, layer.v, layer.groups
    s, p = layer.spec["stride"], layer.spec["padding"]
    n = layer.batch

    def expand_reference() -> torch.Tensor:
        u = layer.unfolded()
        u = u.reshape(n, g, u.shape[1] // g, u.shape[2]).permute(1, 0, 3, 2).reshape(g, -1, u.shape[1] // g)
        return u.transpose(1, 2) @ u / u.shape[1]

    def reduce_reference() -> torch.Tensor:
        u = layer.unfolded()
        t = u.shape[2]
        summed = u.sum(2).reshape(n, g, -1).transpose(0, 1)
        return summed.transpose(1, 2) @ summed / (n * t * t)

    def per_sample_reference() -> torch.Tensor:
        from torch.func import grad, vmap

        conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
        conv = conv[layer.dims]

        def loss(weight, xi, vi):
            return (conv(xi[None], weight, None, s, p, 1, g) * vi[None]).sum()

        return vmap(grad(loss), in_dims=(None, 0, 0))(layer.w, x, v)

    kw = dict(stride=s, padding=p, groups=g)
    t = math.prod(layer.v.shape[2:])
    d = layer.spec["x"][0] // g * math.prod(layer.kernel)
    shape = (g, d, d)
    expand_net, reduce_net = (compile(tnconv.conv_network(op, x.shape, layer.kernel, **kw))
                              for op in ("kfac_expand", "kfac_reduce"))
    found = {
        "kfac_expand": (lambda: curvature.kfac_expand_factor(x, layer.kernel, **kw), expand_reference, "curvature"),
        "kfac_expand_net": (lambda: expand_net(X=x).reshape(shape) / (n * t), expand_reference, expand_net.strategy),
        "kfac_reduce": (lambda: curvature.kfac_reduce_factor(x, layer.kernel, **kw), reduce_reference, "curvature"),
        "kfac_reduce_net": (lambda: reduce_net(X=x).reshape(shape) / (n * t * t), reduce_reference,
                            reduce_net.strategy),
        "per_sample": (lambda: curvature.per_sample_weight_grad(x, v, layer.kernel, **kw), per_sample_reference,
                       "curvature"),
    }
    if 2 * g * d * d * n * t > MAX_KFAC_EXPAND_FLOP:
        del found["kfac_expand"], found["kfac_expand_net"]
    return found


def compile_times(layer: Layer) -> tuple[float, float]:
    """Largest cold and cached compile time (seconds) over the routines of the layer."""
    cold, cached = 0.0, 0.0
    ops = ("forward", "input_vjp", "weight_vjp") + (("unfold",) if not layer.transposed else ())
    compile(tnconv.conv_network("forward", (1, 2, 5, 5), (3, 3), 2))  # imports and first-use costs
    for op in ops:
        tnconv.clear_caches()
        start = time.perf_counter()
        net = tnconv.conv_network(op, **layer.hyper())
        compile(net)
        cold = max(cold, time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(100):
            compile(net)
        cached = max(cached, (time.perf_counter() - start) / 100)
    return cold, cached


def agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = b.abs().max().item() or 1.0
    return a.shape == b.shape and (a - b).abs().max().item() <= 1e-3 * scale


def measure(layer: Layer, threads: int, budget: float) -> dict:
    torch.set_num_threads(threads)
    row: dict = {"layer": layer.name, "threads": threads}
    for routine, (ours, theirs, strategy) in pairs(layer).items():
        start = time.perf_counter()
        a = ours()
        single = time.perf_counter() - start
        b = theirs()
        if not agree(a, b):
            raise AssertionError(f"{layer.name} {routine}: tnconv and PyTorch disagree")
        del a, b
        repeats = max(3, min(15, int(budget / max(single, 1e-6))))
        times = interleaved({"ours": ours, "theirs": theirs}, repeats)
        row[routine] = {
            "ratio": times["ours"] / times["theirs"], "ours": times["ours"], "theirs": times["theirs"],
            "strategy": strategy,
        }
    return row


def memory(spec: dict) -> dict[str, tuple[int, int]]:
    """Extra peak bytes (tnconv, PyTorch) of each routine of the layer, one thread (in this process:
    run it through ``--memory``, which fixes glibc's mmap threshold first)."""
    torch.set_num_threads(1)
    layer = Layer(spec, batch=8)
    found = {}
    for routine, (ours, theirs, _) in pairs(layer).items():
        ours(), theirs()  # compile, and first-call costs
        found[routine] = (peak_extra(ours), peak_extra(theirs))
    return found


def memory_in_child(name: str) -> dict[str, tuple[int, int]]:
    """``memory`` of layer ``name``, measured by this script in a child process."""
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    result = subprocess.run(
        [sys.executable, __file__, "--memory", name], env=environment, capture_output=True, text=True, check=True
    )
    return {routine: tuple(pair) for routine, pair in json.loads(result.stdout.splitlines()[-1]).items()}


def shared_layers() -> set[str]:
    """Names of the layers of the shared list (all layers when only the package copy exists)."""
    shared = LAYER_FILES[1]
    return {spec["name"] for spec in load_layers(str(shared) if shared.exists() else None)}


def markdown(rows: list[dict], compile_rows: dict, device: str) -> str:
    lines = [
        "# Benchmark results: tnconv vs PyTorch",
        "",
        f"Machine: {device}; torch {torch.__version__}; batch 8, float32. Produced by "
        "`python benchmarks/bench_routines.py` (interleaved medians in one process; the machine is shared, "
        "so expect noise of about 10%). Ratio = tnconv time / PyTorch time (< 1: tnconv faster).",
        "",
    ]
    shared = shared_layers()
    listed = [row for row in rows if row["layer"] in shared]
    extra = sorted({row["layer"] for row in rows} - shared)
    lines += [
        "## Targets (issue 6)", "",
        "Worst ratio over the layers of ../shared/benchmarks/layers.json and both thread counts"
        + (f"; in brackets the worst over the extra layers ({', '.join(extra)}), whose calls take tens of "
           "microseconds, so that the Python-side cost of a call (about 5 us) shows" if extra else "") + ".", "",
        "| quantity | target | reached |", "|---|---|---|",
    ]
    for routine, target, note in TARGETS:
        found = [(row[routine]["ratio"], row["layer"]) for row in listed if routine in row]
        others = [(row[routine]["ratio"], row["layer"]) for row in rows if routine in row and row not in listed]
        if found:
            worst, where = max(found)
            verdict = "yes" if worst <= target else "no"
            aside = f" [{max(others)[0]:.2f}]" if others else ""
            lines.append(f"| {routine} ratio | <= {target}{note} | {verdict}: {worst:.2f} ({where}){aside} |")
    for layer, routine, target in KFAC_REDUCE_TARGETS:
        for row in (r for r in rows if r["layer"] == layer and routine in r):
            speedup = 1 / row[routine]["ratio"]
            verdict = "yes" if speedup >= target else "no"
            lines.append(f"| {routine} speed-up, {layer}, {row['threads']} thread(s) | >= {target}x | "
                         f"{verdict}: {speedup:.0f}x |")
            if "memory" in row[routine]:
                mine, theirs = row[routine]["memory"]
                share = mine / max(theirs, 1)
                lines.append(f"| {routine} extra peak memory, {layer} | < 5% of unfold-based | "
                             f"{'yes' if share < 0.05 else 'no'}: {100 * share:.1f}% |")
    colds = [(cold, name) for name, (cold, _) in compile_rows.items()]
    cacheds = [(cached, name) for name, (_, cached) in compile_rows.items()]
    if colds:
        cold, where = max(colds)
        lines.append(f"| cold compile | < 20 ms | {'yes' if cold < 0.02 else 'no'}: {cold * 1e3:.1f} ms ({where}) |")
        cached, where = max(cacheds)
        lines.append(f"| cached compile | < 50 us | {'yes' if cached < 5e-5 else 'no'}: {cached * 1e6:.1f} us ({where}) |")
    lines.append("")
    for threads in sorted({r["threads"] for r in rows}):
        lines += [f"## {threads} thread(s)", "", "| layer | " + " | ".join(ROUTINES) + " |",
                  "|---" * (len(ROUTINES) + 1) + "|"]
        for row in (r for r in rows if r["threads"] == threads):
            cells = [f"{row[r]['ratio']:.2f}" if r in row else "n/a" for r in ROUTINES]
            lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Strategies, PyTorch times (1 thread) and extra peak memory (MB, tnconv / PyTorch)", "",
              "| layer | routine | strategy | PyTorch ms | tnconv ms | extra peak MB |", "|---|---|---|---|---|---|"]
    for row in (r for r in rows if r["threads"] == 1):
        for r in ROUTINES:
            if r in row:
                cell = row[r]
                mine, theirs = (m / 2**20 for m in cell["memory"])
                lines.append(f"| {row['layer']} | {r} | {cell['strategy']} | {cell['theirs'] * 1e3:.2f} | "
                             f"{cell['ours'] * 1e3:.2f} | {mine:.1f} / {theirs:.1f} |")
    lines += ["", "## Compile time (largest over forward / input VJP / weight VJP / unfold)", "",
              "| layer | cold ms (build + simplify + plan) | cached us (`tnconv.compile` again) |", "|---|---|---|"]
    for name, (cold, cached) in compile_rows.items():
        lines.append(f"| {name} | {cold * 1e3:.1f} | {cached * 1e6:.1f} |")
    lines += ["", "## Reading the numbers", "", *NOTES]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routines = [r for r in ROUTINES if any(r in row for row in rows)]
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    figure, axes = plt.subplots(1, 2, figsize=(15, 6), sharey=True)
    for axis, threads in zip(axes, (1, 2)):
        width = 0.8 / len(routines)
        for n, routine in enumerate(routines):
            values = [next((r[routine]["ratio"] for r in rows if r["layer"] == name and r["threads"] == threads
                            and routine in r), math.nan) for name in layers]
            axis.bar([i + n * width for i in range(len(layers))], values, width, label=routine)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.axhline(1.1, color="red", linewidth=0.8, linestyle="--")
        axis.set_yscale("log")
        axis.set_xticks([i + 0.4 for i in range(len(layers))])
        axis.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
        axis.set_title(f"tnconv / PyTorch time, {threads} thread(s)")
    axes[0].set_ylabel("ratio (log scale; < 1: tnconv faster)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(routines), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", nargs="*", default=None, help="layer names (default: all)")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--budget", type=float, default=0.6, help="seconds of timing per routine and side")
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "ratios.png"))
    parser.add_argument("--memory", metavar="LAYER", help="print the layer's extra peak memory as JSON and exit")
    args = parser.parse_args()
    specs = [s for s in load_layers() if args.layers is None or s["name"] in args.layers]
    if args.memory:
        ensure_mmap_allocations()
        print(json.dumps(memory(next(s for s in load_layers() if s["name"] == args.memory))))
        return
    rows, compile_rows = [], {}
    for spec in specs:
        layer = Layer(spec, batch=8)
        compile_rows[layer.name] = compile_times(layer)
        for threads in args.threads:
            row = measure(layer, threads, args.budget)
            rows.append(row)
            cells = "  ".join(f"{r}={row[r]['ratio']:.2f}" for r in ROUTINES if r in row)
            print(f"{layer.name:22s} threads={threads}  {cells}", flush=True)
        del layer
        peaks = memory_in_child(spec["name"])
        for routine, pair in peaks.items():
            rows[-len(args.threads)][routine]["memory"] = pair
        cold, cached = compile_rows[spec["name"]]
        print(f"{spec['name']:22s} compile cold={cold * 1e3:.1f} ms cached={cached * 1e6:.1f} us", flush=True)
    write_sections(Path(args.markdown), markdown(rows, compile_rows, "CPU (2 cores shared with other jobs)"))
    Path(args.markdown).with_suffix(".json").write_text(json.dumps({"rows": rows, "compile": compile_rows}, indent=1))
    plot(rows, Path(args.plot))


if __name__ == "__main__":
    main()
