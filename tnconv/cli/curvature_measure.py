"""``tnconv curvature``'s work: load the model, describe each layer's KFAC routine, time and profile ``update``.

- The model comes from ``tnconv.models`` or from a file's factory, built under
  seed ``SEED``; inputs and targets are random (seeded) of the requested shape.
- Each supported layer's row comes from one forward with the hooks of
  ``tnconv.curvature`` (the input its routines see, its geometry): factor shapes,
  and what ``KFAC.update`` runs for ``A`` with its FLOPs, from the function that sits
  beside the code that runs it (``tnconv.curvature.factors.input_factor_cost``): for a
  conv layer the ``kfac_expand``/``kfac_reduce`` routine's shortcut (the patches in
  chunks of samples, or the patch sums, then their symmetric Gram by upper panels,
  ``tnconv.routines.gram``), for ``Linear`` the Gram of its inputs (or of their sums).
- Time: one warm-up ``update``, then ``repeats`` timed ones (min, median, max);
  each layer's ``A`` and ``B`` are timed inside them, the rest of an update is
  its forward and batched backward.
- Memory: one more ``update`` under ``torch.profiler`` with ``profile_memory``,
  which records every allocation and free of torch's CPU allocator with a time
  stamp. The extra peak memory is the highest level of allocated minus freed
  bytes since the update began (for a layer: since its factors began). It counts
  tensors (activations kept for the backward, the pulled-back columns, the
  factors); memory that math libraries (oneDNN, MKL) allocate outside torch's
  allocator and Python objects are not in it. Unlike the process's peak RSS, it
  does not depend on what the allocator kept from earlier calls.
"""

from __future__ import annotations

import bisect
import math
import os
import runpy
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tnconv import models
from tnconv.cli.curvature import DEFAULT_CLASSES, SEED, CurvatureRequest, ModelSource
from tnconv.cli.measure import spread
from tnconv.cli.names import hint
from tnconv.cli.show import EXACT_FLOAT_INTEGERS
from tnconv.curvature.columns import check_output
from tnconv.curvature.factors import input_factor_cost
from tnconv.curvature.hooks import Layer, Record, forward
from tnconv.curvature.kfac import KFAC
from tnconv.curvature.kfac_batch import LayerBatch
from tnconv.limits import check_allocation

DTYPE = torch.float32
LAYER_MARK = "tnconv.curvature layer "  # the profiler range of one layer's factors
MEMORY_EVENT = "[memory]"  # the profiler's name of an allocation (bytes > 0) or free (bytes < 0)
MEMORY_METHOD = "tensors allocated minus freed by torch's CPU allocator, recorded by torch.profiler"
Progress = Callable[[int, int, str], None]


class MeasuredKFAC(KFAC):
    """``KFAC`` that times each layer's factors (accumulated into the running ones) and marks them as a
    profiler range."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.layer_seconds: dict[str, list[float]] = {layer.name: [] for layer in self.layers}

    def _accumulate_layer(self, batch: LayerBatch, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.profiler.record_function(LAYER_MARK + batch.layer.name):
            start = time.perf_counter()
            pair = super()._accumulate_layer(batch, *args)
            self.layer_seconds[batch.layer.name].append(time.perf_counter() - start)
        return pair


def load_factory(path: Path, name: str) -> Callable[..., object]:
    """The callable ``name`` defined by the Python file ``path`` (run as a script's module, its folder importable)."""
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="tnconv_curvature_model")
    except Exception as error:  # the file is the user's: any error in it is reported as one line
        raise ValueError(f"MODEL: loading {str(path)!r} failed: {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(folder)
    if name not in namespace:
        defined = sorted(key for key, value in namespace.items() if callable(value) and not key.startswith("_"))
        raise ValueError(f"MODEL: {str(path)!r} defines no {name!r}{_closest(name, defined)}")
    factory = namespace[name]
    if not callable(factory):
        raise TypeError(f"MODEL: {name!r} in {str(path)!r} is a {type(factory).__name__}, not a callable")
    return factory


def _closest(name: str, defined: list[str]) -> str:
    return hint(name, defined) or (f" (its callables: {', '.join(defined)})" if defined else "")


def build_model(source: ModelSource, input_shape: tuple[int, ...], classes: int | None) -> torch.nn.Module:
    """The model of ``source``, initialised under seed ``SEED`` (the global random state is left as it was)."""
    if source.path is None:
        factory: Callable[..., object] = getattr(models, source.factory)
        arguments = {"num_classes": classes or DEFAULT_CLASSES, "in_channels": input_shape[1]}
    else:
        factory, arguments = load_factory(source.path, source.factory), {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        try:
            model = factory(**arguments)
        except Exception as error:  # the user's factory: one line naming it
            raise ValueError(f"MODEL: {source.name}() failed: {type(error).__name__}: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"MODEL: {source.name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def random_targets(output: torch.Tensor, loss: str, classes: int | None, generator: torch.Generator) -> torch.Tensor:
    """Class indices (cross-entropy) or values (MSE) that fit ``output`` ``(N, C)``; ``classes`` must be ``C``."""
    if classes is not None and output.shape[1] != classes:
        raise ValueError(f"--classes {classes}: the model outputs {output.shape[1]} classes (shape "
                         f"{tuple(output.shape)}); give --classes {output.shape[1]} or leave it out")
    if loss == "mse":
        return torch.randn(output.shape, generator=generator, dtype=output.dtype)
    return torch.randint(0, output.shape[1], output.shape[:1], generator=generator)


def loss_function(loss: str) -> torch.nn.Module:
    return torch.nn.MSELoss() if loss == "mse" else torch.nn.CrossEntropyLoss()


def capture(kfac: KFAC, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, Record], dict[str, list[int]]]:
    """One forward with ``kfac``'s hooks: the output, each layer's record and the shape of its input.

    The record holds the input as the routines take it (padded for a ``padding_mode``
    other than zeros); the shape is the one the layer got.
    """
    shapes: dict[str, list[int]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record_shape(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            shapes[name] = list(args[0].shape)

        return record_shape

    handles = [layer.module.register_forward_pre_hook(hook(layer.name)) for layer in kfac.layers]
    try:
        output, records = forward(kfac.model, kfac.layers, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return output, records, shapes


@contextmanager
def model_errors(source: ModelSource, shape: tuple[int, ...]) -> Iterator[None]:
    """The user's model runs inside: any error of it becomes one line naming MODEL and the input shape."""
    try:
        yield
    except Exception as error:
        raise ValueError(f"MODEL: {source.name} on an input of shape {shape}: {type(error).__name__}: {error}") from None


def largest_output(kfac: KFAC, input_shape: tuple[int, ...]) -> int:
    """Elements of the largest layer output of a batch of ``input_shape``: N times that of one sample, from one
    forward of a sample of zeros with the model in eval mode (no statistics move), before the batch is made."""
    model = kfac.model
    training = model.training
    model.eval()
    try:
        _, records, _ = capture(kfac, torch.zeros((1, *input_shape[1:]), dtype=DTYPE))
    finally:
        model.train(training)
    return input_shape[0] * max((record.probe.numel() for record in records.values()), default=0)


def layer_row(layer: Layer, record: Record, input_shape: list[int], approx: str) -> dict[str, Any]:
    """One layer: type, input shape, factor shapes, and what computes ``A`` with its FLOPs."""
    x, geometry = record.x, record.geometry
    groups, per_group = geometry.groups, geometry.out_channels // geometry.groups
    if geometry.kind == "linear":
        d, routine = x.shape[-1], "linear"
    else:  # d = C_in/G * prod(K)
        kernel: tuple[int, ...] = geometry.conv["kernel_size"]  # type: ignore[assignment]
        d, routine = x.shape[1] // groups * math.prod(kernel), f"kfac_{approx}"
    cost = input_factor_cost(x, geometry, approx == "reduce")
    return {
        "name": layer.name, "type": type(layer.module).__name__, "bias": layer.bias is not None,
        "input_shape": input_shape, "groups": groups, "A": [groups, d, d], "B": [groups, per_group, per_group],
        "routine": routine, "strategy": cost.strategy, "kernel": cost.kernel, "flops": cost.flops,
        "flops_exact": cost.flops < EXACT_FLOAT_INTEGERS, "part_flops": cost.part_flops,
        "gram_flops": cost.gram_flops, "largest_intermediate": cost.largest_intermediate,
    }  # fmt: skip


@contextmanager
def quiet_profiler() -> Iterator[None]:
    """Keep kineto (the profiler's engine) from logging its start and stop to stderr."""
    previous = os.environ.get("KINETO_LOG_LEVEL")
    os.environ["KINETO_LOG_LEVEL"] = "99"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["KINETO_LOG_LEVEL"]
        else:
            os.environ["KINETO_LOG_LEVEL"] = previous


def peak_memory(run: Callable[[], None]) -> tuple[int, dict[str, int]]:
    """The extra peak bytes of ``run()``, and of each ``LAYER_MARK`` range in it (above the level at its start)."""
    with quiet_profiler(), torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as profiler:
        run()
    events = profiler.profiler.kineto_results.events()
    changes = sorted((event.start_ns(), event.nbytes()) for event in events
                     if event.name() == MEMORY_EVENT and event.device_type() == torch.autograd.DeviceType.CPU)
    stamps, levels, level = [], [], 0
    for stamp, change in changes:
        level += change
        stamps.append(stamp)
        levels.append(level)
    layers = {}
    for event in events:
        if event.name().startswith(LAYER_MARK):
            first, last = bisect.bisect_left(stamps, event.start_ns()), bisect.bisect_right(stamps, event.end_ns())
            before = levels[first - 1] if first else 0
            layers[event.name().removeprefix(LAYER_MARK)] = max([0, *(lvl - before for lvl in levels[first:last])])
    return max([0, *levels]), layers


def time_updates(kfac: MeasuredKFAC, inputs: torch.Tensor, targets: torch.Tensor, repeats: int,
                 progress: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, tuple[float, int]]]:  # fmt: skip
    """A warm-up update, ``repeats`` timed ones, one profiled for memory.

    Returns the update's times (min, median, max), the median of its part outside
    the layers' factors, its extra peak bytes; and per layer the median seconds and
    the extra peak bytes of its factors.
    """
    kfac.update(inputs, targets)
    progress("warm-up")
    for seconds in kfac.layer_seconds.values():
        seconds.clear()
    totals = []
    for _ in range(repeats):
        start = time.perf_counter()
        kfac.update(inputs, targets)
        totals.append(time.perf_counter() - start)
        progress("update")
    in_layers = [sum(seconds[run] for seconds in kfac.layer_seconds.values()) for run in range(repeats)]
    previous = kfac._layer_factors()  # freed after the profiler stops, which cannot see blocks older than itself
    peak, layer_peaks = peak_memory(lambda: kfac.update(inputs, targets))
    del previous
    progress("memory")
    update = {
        "repeats": repeats, "seconds": spread(totals),
        "forward_backward_seconds": statistics.median(total - part for total, part in zip(totals, in_layers)),
        "peak_bytes": peak, "memory_method": MEMORY_METHOD,
    }
    layers = {name: (statistics.median(seconds[:repeats]), layer_peaks.get(name, 0))
              for name, seconds in kfac.layer_seconds.items() if seconds}  # layers that ran
    return update, layers


def measure(request: CurvatureRequest, progress: Progress | None, ready: Callable[[], None] = lambda: None
            ) -> dict[str, Any]:
    """Everything ``tnconv curvature`` reports, as JSON-ready data (torch's thread count is restored after).

    ``ready`` is called once the model is built and its output checked (``prepare``), before the measuring.
    """
    threads = torch.get_num_threads()
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    try:
        return _measure(request, progress or (lambda done, total, what: None), ready)
    finally:
        torch.set_num_threads(threads)


@dataclass
class Setup:
    """The model's ``MeasuredKFAC``, random inputs and targets, and what one forward captured at each layer."""

    kfac: MeasuredKFAC
    inputs: torch.Tensor
    targets: torch.Tensor
    classes: int
    records: dict[str, Record]
    shapes: dict[str, list[int]]


def prepare(request: CurvatureRequest) -> Setup:
    """Build the model, draw inputs and targets, run one forward; errors of the user's model name MODEL."""
    model = build_model(request.model, request.input_shape, request.classes)
    generator = torch.Generator().manual_seed(SEED)
    try:
        kfac = MeasuredKFAC(model, loss_function(request.loss), approx=request.approx, fisher=request.fisher,
                            generator=torch.Generator().manual_seed(SEED + 1))
    except ValueError as error:  # no supported layer
        raise ValueError(f"MODEL: {request.model.name}: {error}") from None
    with model_errors(request.model, request.input_shape):  # its features: one sample of them runs here
        largest = largest_output(kfac, request.input_shape)
    batch = ",".join(map(str, request.input_shape))
    check_allocation(largest, DTYPE.itemsize, f"--input {batch}: the largest layer output of the batch")
    inputs = torch.randn(request.input_shape, generator=generator, dtype=DTYPE)
    with model_errors(request.model, request.input_shape):
        output, records, shapes = capture(kfac, inputs)
    if output.ndim != 2:
        raise ValueError(f"MODEL: {request.model.name} must return (N, C) logits or predictions, got shape "
                         f"{tuple(output.shape)}")
    targets = check_output(output, random_targets(output, request.loss, request.classes, generator), kfac.loss)
    return Setup(kfac, inputs, targets, output.shape[1], records, shapes)


def _measure(request: CurvatureRequest, progress: Progress, ready: Callable[[], None]) -> dict[str, Any]:
    setup = prepare(request)
    ready()
    layers = [layer for layer in setup.kfac.layers if layer.name in setup.records]  # those that ran
    steps = len(layers) + (request.repeats + 2 if request.timing else 0)
    rows = []
    for done, layer in enumerate(layers, 1):
        rows.append(layer_row(layer, setup.records[layer.name], setup.shapes[layer.name], request.approx))
        progress(done, steps, layer.name)
    setup.records.clear()  # the captured inputs
    update: dict[str, Any] | None = None
    timed: dict[str, tuple[float, int]] = {}
    if request.timing:
        counter = iter(range(len(layers) + 1, steps + 1))
        update, timed = time_updates(setup.kfac, setup.inputs, setup.targets, request.repeats,
                                     lambda what: progress(next(counter), steps, what))
    for row in rows:
        row["seconds"], row["peak_bytes"] = timed.get(row["name"], (None, None))
    factor_elements = sum(math.prod(row["A"]) + math.prod(row["B"]) for row in rows)
    return {
        "model": request.model.name, "factory": request.model.factory,
        "file": None if request.model.path is None else str(request.model.path),
        "input_shape": list(request.input_shape), "dtype": str(DTYPE).removeprefix("torch."), "seed": SEED,
        "loss": request.loss, "classes": setup.classes, "approx": request.approx, "fisher": request.fisher,
        "threads": torch.get_num_threads(), "layers": rows,
        "totals": {
            "layers": len(rows), "flops": sum(row["flops"] for row in rows),
            "flops_exact": all(row["flops_exact"] for row in rows), "factor_elements": factor_elements,
            "factor_bytes": factor_elements * (torch.finfo(DTYPE).bits // 8),
        },
        "update": update,
    }  # fmt: skip
