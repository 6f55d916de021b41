"""Find the supported layers of a model and capture their inputs and output gradients in one forward.

A forward hook on each supported layer records its input and adds a zero
"probe" to its output: a leaf tensor (zero strides, so it costs no memory)
whose gradient is the gradient w.r.t. that output, even when a later module
changes the output in place (``ReLU(inplace=True)``, ``out += identity``).
All probes then get the pullback of ``M`` columns at the model output in one
batched backward pass (``torch.autograd.grad(..., is_grads_batched=True)``,
vmap over the backward), never one backward per column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tnconv.curvature.factors import Geometry, geometry, layout
from tnconv.limits import check_allocation
from tnconv.nn.base import ConvBase

SUPPORTED: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
    ConvBase,
)


@dataclass(frozen=True)
class Layer:
    """A supported layer: its name in ``model.named_modules()``, its parameters' names, its layout.

    ``bias`` is None when the layer has no bias or its bias needs no gradient; ``layout``
    (kind, groups, output channels) reshapes its parameters.
    """

    name: str
    module: torch.nn.Module
    weight: str
    bias: str | None
    layout: Geometry


@dataclass(frozen=True)
class Record:
    """What one forward captured at a layer: its input (as its routines take it), its probe, its geometry."""

    x: torch.Tensor
    probe: torch.Tensor
    geometry: Geometry


def check_model(model: object) -> torch.nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def find_layers(model: torch.nn.Module) -> list[Layer]:
    """The supported layers of ``model`` whose weight needs a gradient, in ``named_modules`` order."""
    names = {id(p): name for name, p in model.named_parameters()}
    layers = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, SUPPORTED) or weight is None or not weight.requires_grad:
            continue
        bias = getattr(module, "bias", None)
        bias_name = names[id(bias)] if bias is not None and bias.requires_grad else None
        layers.append(Layer(name, module, names[id(weight)], bias_name, layout(module)))
    if not layers:
        kinds = ", ".join(sorted({cls.__name__ for cls in SUPPORTED}))
        raise ValueError(f"model has no supported layer with a trainable weight ({kinds}), got {type(model).__name__}")
    return layers


@dataclass
class Capture:
    """Forward hooks on ``layers`` that fill ``records`` (layer name -> ``Record``) during one forward."""

    layers: list[Layer]

    def __post_init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook(self, name: str) -> Callable[..., torch.Tensor]:
        def record(module: torch.nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
            if name in self.records:
                raise ValueError(
                    f"layer {name!r} ran more than once in one forward; shared layers get no curvature"
                )
            x = args[0]
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"layer {name!r} must get a tensor input, got {type(x).__name__}")
            x, layer = geometry(name, module, x.detach(), output)
            probe = output.new_zeros(()).expand(output.shape).detach().requires_grad_()
            self.records[name] = Record(x, probe, layer)
            return output + probe

        return record

    def __enter__(self) -> Capture:
        self.handles = [layer.module.register_forward_hook(self.hook(layer.name)) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def check_complete(self) -> None:
        """Every layer must have run in the forward."""
        missing = [layer.name for layer in self.layers if layer.name not in self.records]
        if missing:
            raise ValueError(f"layers {missing} did not run in the forward pass, so they have no curvature")


def forward(
    model: torch.nn.Module, layers: list[Layer], inputs: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Record]]:
    """Run ``model(inputs)`` with gradients on, capturing every layer once; the output and the records."""
    with torch.enable_grad(), Capture(layers) as capture:
        output = model(inputs)
    capture.check_complete()
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(output).__name__}")
    return output, capture.records


def pull_back(output: torch.Tensor, records: dict[str, Record], columns: torch.Tensor) -> dict[str, torch.Tensor]:
    """Columns ``(M, *output.shape)`` carried back to every layer output: name -> ``(M, *y.shape)``.

    One batched backward pass; a layer the output does not depend on gets zeros.
    """
    names = list(records)
    for name in names:
        check_allocation(columns.shape[0] * records[name].probe.numel(), columns.dtype.itemsize,
                         f"the {columns.shape[0]} columns pulled back to layer {name!r} (M, *y.shape)")
    grads = torch.autograd.grad(
        output, [records[name].probe for name in names], columns, is_grads_batched=True, materialize_grads=True
    )
    return dict(zip(names, grads))

