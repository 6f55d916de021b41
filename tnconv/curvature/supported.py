"""Which layers of a model get curvature, the keys of their parameters, and what stops a per-sample split.

- ``find_layers``: the supported layers (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``, ``Linear``
  and the ``tnconv.nn`` twins) whose weight needs a gradient, in ``named_modules`` order.
- A layer's weight and bias are keyed by their names in ``model.named_parameters()``. A weight
  that is computed rather than registered (``torch.nn.utils.parametrize`` parametrizations such as
  ``parametrizations.weight_norm`` and ``spectral_norm``, or ``torch.nn.utils.prune``) gets the
  attribute's path, ``layer name + ".weight"``: its curvature is that of the effective weight the
  layer computes with, not of the tensors it is computed from.
- ``shared_parameters``: parameters of supported layers that more than one module registers (tied
  weights), with the modules that hold them.
- ``batch_statistics``: the BatchNorm layers that normalise with the batch's statistics, so that
  samples interact in the forward.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from tnconv.curvature.factors import Geometry, layout
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
    """A supported layer: its name in ``model.named_modules()``, its parameters' keys, its layout.

    ``weight`` and ``bias`` are the keys of the results (``tensor_key``); ``bias`` is None when
    the layer has no bias or its bias needs no gradient. ``layout`` (kind, groups, output
    channels) reshapes its parameters; ``weight_shape`` is the weight's shape (read from the
    layer's arguments, so that a parametrized weight is not computed to find it).
    """

    name: str
    module: torch.nn.Module
    weight: str
    bias: str | None
    layout: Geometry
    weight_shape: torch.Size


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
        if not isinstance(module, SUPPORTED):
            continue
        weight = tensor_key(name, module, "weight", names)
        if weight is None:
            continue
        bias = tensor_key(name, module, "bias", names)
        layers.append(Layer(name, module, weight, bias, layout(module), weight_shape(module)))
    if not layers:
        kinds = ", ".join(sorted({cls.__name__ for cls in SUPPORTED}))
        raise ValueError(f"model has no supported layer with a trainable weight ({kinds}), got {type(model).__name__}")
    return layers


def tensor_key(name: str, module: torch.nn.Module, attribute: str, names: dict[int, str]) -> str | None:
    """The key of ``module.<attribute>`` (``"weight"`` or ``"bias"``) of the layer ``name``, or None when it is
    absent or needs no gradient.

    A registered parameter is keyed by its name in ``named_parameters`` (``names``: id -> name);
    a computed tensor (a parametrization, or pruning's ``weight_orig * weight_mask``) by the
    attribute's path. A parametrized tensor is not computed here (``spectral_norm`` would take a
    power-iteration step): it needs a gradient when one of the tensors it comes from does.
    """
    path = f"{name}.{attribute}" if name else attribute
    if parametrize.is_parametrized(module, attribute):
        sources = module.parametrizations[attribute].parameters()  # type: ignore[union-attr,index]
        return path if any(p.requires_grad for p in sources) else None
    value = getattr(module, attribute, None)
    if not isinstance(value, torch.Tensor) or not value.requires_grad:
        return None
    return names.get(id(value), path)


def weight_shape(module: torch.nn.Module) -> torch.Size:
    """The weight's shape of a supported layer, from its arguments: ``(out, in)`` for ``Linear``,
    ``(C_out, C_in // G, *K)`` for a conv, ``(C_in, C_out // G, *K)`` for a transposed conv."""
    if isinstance(module, torch.nn.Linear):
        return torch.Size((module.out_features, module.in_features))
    kernel: tuple[int, ...] = tuple(module.kernel_size)  # type: ignore[arg-type]
    c_in, c_out = int(module.in_channels), int(module.out_channels)  # type: ignore[arg-type]
    groups = int(module.groups)  # type: ignore[arg-type]
    if module.transposed:
        return torch.Size((c_in, c_out // groups, *kernel))
    return torch.Size((c_out, c_in // groups, *kernel))


def patch_size(layer: Layer) -> int:
    """``d``, the length of one group's patch: ``C_in // G * prod(K)`` (``in_features`` for ``Linear``)."""
    if layer.layout.kind == "linear":
        return layer.weight_shape[1]
    shape = layer.weight_shape
    per_group = shape[1] if layer.layout.kind == "conv" else shape[0] // layer.layout.groups
    return per_group * math.prod(shape[2:])


def shared_parameters(model: torch.nn.Module, layers: list[Layer]) -> dict[str, list[str]]:
    """Key -> the modules that register it, for each parameter of ``layers`` that more than one module holds."""
    holders: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for parameter in module._parameters.values():
            if parameter is not None:
                holders.setdefault(id(parameter), []).append(name)
    shared = {}
    for layer in layers:
        for attribute, key in (("weight", layer.weight), ("bias", layer.bias)):
            registered = layer.module._parameters.get(attribute)
            if key is not None and registered is not None and len(holders[id(registered)]) > 1:
                shared[key] = holders[id(registered)]
    return shared


def check_unshared(model: torch.nn.Module, layers: list[Layer], allowed: bool) -> None:
    """Raise a ValueError naming each parameter of ``layers`` that other modules hold too: all of them
    (``allowed=False``), or those held by a module that is not one of ``layers`` (whose use of it gets no
    curvature, so the sum over its uses would miss one)."""
    names = {layer.name for layer in layers}
    for key, holders in shared_parameters(model, layers).items():
        others = [holder for holder in holders if holder not in names]
        if not allowed or others:
            reason = (
                "KFAC has no Kronecker block for a weight used by several layers"
                if not allowed
                else f"{others} {'is' if len(others) == 1 else 'are'} not a supported layer, so the curvature of "
                f"its use would be missing"
            )
            raise ValueError(f"parameter {key!r} is shared by the modules {holders}: {reason}")


def batch_statistics(model: torch.nn.Module) -> list[str]:
    """The BatchNorm layers of ``model`` that normalise with the batch's statistics (training mode, or no
    running statistics), through which the samples of a batch interact."""
    return [
        name for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and (module.training or module.running_mean is None)
    ]  # fmt: skip


def warn_batch_statistics(model: torch.nn.Module) -> None:
    """One warning naming the BatchNorm layers that use batch statistics, if there are any: per-sample
    quantities of such a model are not per sample (docs/whole-models.md, "BatchNorm")."""
    names = batch_statistics(model)
    if names:
        warnings.warn(
            f"BatchNorm layers {names} normalise with batch statistics (training mode), so the samples of a batch "
            f"interact: the per-sample split behind KFAC's B, per_sample_grads and diag_ggn does not exist "
            f"(each sample's slice of a column pulled back through the batch is used as its own). Call model.eval() "
            f"for exact per-sample results",
            UserWarning,
            stacklevel=5,  # the caller of KFAC.update, per_sample_grads, diag_ggn
        )
