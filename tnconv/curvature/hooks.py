"""Capture the supported layers' inputs and output gradients of a model in one forward.

A forward hook on each supported layer records its input and adds a zero
"probe" to its output: a leaf tensor (zero strides, so it costs no memory)
whose gradient is the gradient w.r.t. that output, even when a later module
changes the output in place (``ReLU(inplace=True)``, ``out += identity``).
All probes then get the pullback of ``M`` columns at the model output in one
batched backward pass (``torch.autograd.grad(..., is_grads_batched=True)``,
vmap over the backward), never one backward per column.

The forward runs eagerly and exactly: a ``torch.compile``d model runs its
original modules (``torch.compiler.set_stance("force_eager")``; a compiled
backward cannot be batched), and layers under ``tnconv.nn.approximate_backprop``
run their own forward (``exact_gradients``). A layer called several times gets
one record per call (``capture``); ``forward`` is for those that take each
layer once. Supported layers that do not run (a weight that another module
uses through ``F.linear``, as ``nn.MultiheadAttention`` does with its
``out_proj``) are left out with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

import torch

from tnconv.curvature.factors import Geometry, geometry
from tnconv.curvature.supported import SUPPORTED, Layer, check_model, find_layers, warn_batch_statistics
from tnconv.limits import check_allocation

__all__ = ["SUPPORTED", "Layer", "Record", "capture", "check_model", "find_layers", "forward", "pull_back",
           "pull_back_calls"]  # fmt: skip


@dataclass(frozen=True)
class Record:
    """What one call of a layer captured: its input (as its routines take it), its probe, its geometry."""

    x: torch.Tensor
    probe: torch.Tensor
    geometry: Geometry


@dataclass
class Capture:
    """Forward hooks on ``layers`` that fill ``records`` (layer name -> a ``Record`` per call) during one forward."""

    layers: list[Layer]

    def __post_init__(self) -> None:
        self.records: dict[str, list[Record]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook(self, name: str) -> Callable[..., torch.Tensor]:
        def record(module: torch.nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"layer {name!r} must get a tensor input, got {type(x).__name__}")
            x, layer = geometry(name, module, x.detach(), output)
            probe = output.new_zeros(()).expand(output.shape).detach().requires_grad_()
            self.records.setdefault(name, []).append(Record(x, probe, layer))
            return output + probe

        return record

    def __enter__(self) -> Capture:
        self.handles = [layer.module.register_forward_hook(self.hook(layer.name)) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def capture(
    model: torch.nn.Module, layers: list[Layer], inputs: torch.Tensor
) -> tuple[torch.Tensor, dict[str, list[Record]]]:
    """Run ``model(inputs)`` with gradients on: the output, and layer name -> a record per call of that layer.

    Layers that did not run are left out, with one warning naming them (a ValueError when none
    ran); BatchNorm layers that use batch statistics get one warning (``warn_batch_statistics``).
    """
    from tnconv.nn.approximate import exact_gradients  # deferred: tnconv.nn.approximate imports tnconv.curvature

    warn_batch_statistics(model)
    eager = torch.compiler.set_stance("force_eager")
    with torch.enable_grad(), exact_gradients(model), eager, Capture(layers) as hooks:
        output = model(inputs)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(output).__name__}")
    missing = [layer.name for layer in layers if layer.name not in hooks.records]
    if len(missing) == len(layers):
        raise ValueError(f"none of the supported layers {missing} ran in the forward pass")
    if missing:
        warnings.warn(
            f"layers {missing} did not run in the forward pass (another module may use their parameters, as "
            f"nn.MultiheadAttention uses its out_proj through F.linear): they get no curvature",
            UserWarning,
            stacklevel=4,  # the caller of KFAC.update, per_sample_grads, diag_ggn
        )
    return output, {layer.name: hooks.records[layer.name] for layer in layers if layer.name in hooks.records}


def forward(
    model: torch.nn.Module, layers: list[Layer], inputs: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Record]]:
    """``capture`` for callers that take each layer once: layer name -> its record; a ValueError naming the
    layer and its parameters when one ran more than once."""
    output, calls = capture(model, layers, inputs)
    for layer in layers:
        count = len(calls.get(layer.name, ()))
        if count > 1:
            keys = [key for key in (layer.weight, layer.bias) if key is not None]
            raise ValueError(
                f"layer {layer.name!r} (parameters {keys}) ran {count} times in one forward: KFAC has no Kronecker "
                f"block for a weight used several times"
            )
    return output, {name: records[0] for name, records in calls.items()}


def pull_back(output: torch.Tensor, records: Mapping[str, Record], columns: torch.Tensor) -> dict[str, torch.Tensor]:
    """Columns ``(M, *output.shape)`` carried back to every layer output: name -> ``(M, *y.shape)``.

    One batched backward pass; a layer the output does not depend on gets zeros.
    """
    names = list(records)
    return dict(zip(names, _pull(output, [(name, records[name].probe) for name in names], columns)))


def pull_back_calls(
    output: torch.Tensor, calls: Mapping[str, Sequence[Record]], columns: torch.Tensor
) -> dict[str, list[torch.Tensor]]:
    """``pull_back`` for layers with a record per call: name -> the columns at each call's output."""
    probes = [(name, record.probe) for name, records in calls.items() for record in records]
    grads = iter(_pull(output, probes, columns))
    return {name: [next(grads) for _ in records] for name, records in calls.items()}


def _pull(
    output: torch.Tensor, probes: list[tuple[str, torch.Tensor]], columns: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The gradients of ``output`` w.r.t. the probes (layer name, probe) for each column, in one batched backward.

    Refused (``tnconv.limits``) before the backward when the ``M`` columns at some layer output would not fit.
    """
    for name, probe in probes:
        check_allocation(columns.shape[0] * probe.numel(), columns.dtype.itemsize,
                         f"the {columns.shape[0]} columns pulled back to layer {name!r} (M, *y.shape)")
    return torch.autograd.grad(output, [probe for _, probe in probes], columns, is_grads_batched=True,
                               materialize_grads=True)  # fmt: skip
