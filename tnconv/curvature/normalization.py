"""Per-sample gradients of the affine parameters of normalisation layers: ``GroupNorm``, ``LayerNorm``, ``InstanceNorm``.

A normalisation layer maps its input ``x`` to ``y = xhat * w + b``, ``xhat`` the
input normalised per sample (over channel groups, the trailing ``normalized_shape``
dims, or each channel's locations), ``w`` and ``b`` broadcast over the other dims.
Sample n's gradient of ``w`` is ``sum (v[n] * xhat[n])`` over every dim that ``w``
is broadcast over (its locations), that of ``b`` is ``sum v[n]``: tiny ``(N, *w.shape)``
tensors, formed from the layer's input and the gradient ``v`` w.r.t. its output.
Differentially private models use these layers (BatchNorm mixes samples).

A subclass that changes ``forward`` (a channels-first LayerNorm that moves the
channels last) gets its per-sample gradients from ``torch.func`` (a VJP per sample,
vmapped): whatever it does to its input, its parameters' per-sample gradients are exact.

``captured(layers)`` records, during one forward, each such layer's input and adds a zero
probe to its output (as ``tnconv.curvature.hooks.Capture`` does for conv layers), so that
one backward gives the gradient w.r.t. every layer output.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.instancenorm import _InstanceNorm

NORMALIZATIONS: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm, _InstanceNorm)
"""The normalisation layers whose affine parameters get per-sample gradients (``InstanceNorm1d/2d/3d`` through
their base class)."""
_FORWARDS = (nn.GroupNorm.forward, nn.LayerNorm.forward, _InstanceNorm.forward)


@dataclass(frozen=True)
class NormLayer:
    """A normalisation layer with a trainable affine parameter: its name, module and parameter names.

    ``weight`` / ``bias`` name the parameters in ``model.named_parameters()`` (None where the
    layer has none or it needs no gradient).
    """

    name: str
    module: nn.Module
    weight: str | None
    bias: str | None


def find_normalizations(model: nn.Module) -> list[NormLayer]:
    """The ``NORMALIZATIONS`` layers of ``model`` with a trainable weight or bias, in ``named_modules`` order."""
    names = {id(p): name for name, p in model.named_parameters()}
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, NORMALIZATIONS):
            continue
        weight, bias = (_trainable(getattr(module, attribute, None), names) for attribute in ("weight", "bias"))
        if weight is not None or bias is not None:
            found.append(NormLayer(name, module, weight, bias))
    return found


def _trainable(parameter: object, names: dict[int, str]) -> str | None:
    """The name of ``parameter`` when it is a parameter that needs a gradient, else None."""
    if isinstance(parameter, nn.Parameter) and parameter.requires_grad:
        return names[id(parameter)]
    return None


def normalized(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``xhat``: the layer's output without its affine part, ``(N, ...)`` like its input (standard forwards only)."""
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(x, module.num_groups, eps=module.eps)
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, eps=module.eps)
    assert isinstance(module, _InstanceNorm)
    statistics = module.training or not module.track_running_stats
    mean, var = (None, None) if statistics else (module.running_mean, module.running_var)
    return F.instance_norm(x, mean, var, use_input_stats=statistics, eps=module.eps)


def summed_dims(module: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The dims of the layer's input (and output) that its affine parameters are broadcast over, batch excepted:
    the locations ``2..`` (GroupNorm, InstanceNorm), the dims before ``normalized_shape`` (LayerNorm)."""
    if isinstance(module, nn.LayerNorm):
        return tuple(range(1, x.ndim - len(module.normalized_shape)))
    return tuple(range(2, x.ndim))


def per_sample_affine(layer: NormLayer, x: torch.Tensor, gradient: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter name -> each sample's gradient ``(N, *param.shape)`` of the layer's trainable affine parameters,
    from its input ``x`` and the gradient ``gradient`` w.r.t. its output (``(N, ...)``, as the loss weights it)."""
    module = layer.module
    if type(module).forward not in _FORWARDS:
        return _by_autograd(layer, x, gradient)
    dims = summed_dims(module, x)
    result = {}
    if layer.weight is not None:
        result[layer.weight] = _summed(gradient * normalized(module, x), dims)
    if layer.bias is not None:
        result[layer.bias] = _summed(gradient, dims)
    return result


def _summed(value: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``value`` summed over ``dims`` (none: ``value`` itself; torch's ``sum(())`` would sum every dim)."""
    return value.sum(dims) if dims else value


def _by_autograd(layer: NormLayer, x: torch.Tensor, gradient: torch.Tensor) -> dict[str, torch.Tensor]:
    """``per_sample_affine`` of a layer with its own ``forward``: one VJP per sample of its trainable affine
    parameters, vmapped over the samples (``torch.func``)."""
    module = layer.module
    own = {attribute: name for attribute, name in (("weight", layer.weight), ("bias", layer.bias)) if name is not None}
    parameters = {attribute: getattr(module, attribute).detach() for attribute in own}

    def one(sample: torch.Tensor, sample_gradient: torch.Tensor) -> dict[str, torch.Tensor]:
        def output(values: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.func.functional_call(module, values, (sample[None],))

        # torch.func.vjp's annotation unions in the has_aux=True triple; without has_aux it returns a pair
        _, vjp = torch.func.vjp(output, parameters)  # type: ignore[misc]
        return vjp(sample_gradient[None])[0]

    grads = torch.func.vmap(one)(x, gradient)
    return {own[attribute]: value for attribute, value in grads.items()}


@dataclass(frozen=True)
class NormRecord:
    """What one forward captured at a normalisation layer: its input and the zero probe added to its output."""

    x: torch.Tensor
    probe: torch.Tensor


@contextmanager
def captured(layers: list[NormLayer]) -> Iterator[dict[str, NormRecord]]:
    """Within the context, forward hooks on the normalisation ``layers`` fill the yielded dict (layer name ->
    ``NormRecord``); on leaving it normally, every layer must have run (ValueError naming those that did not)."""
    records: dict[str, NormRecord] = {}

    def hook(name: str) -> Callable[..., torch.Tensor]:
        def record(module: nn.Module, args: tuple[object, ...], output: torch.Tensor) -> torch.Tensor:
            if name in records:
                raise ValueError(f"layer {name!r} ran more than once in one forward; shared layers get no per-sample "
                                 f"gradients")
            x = args[0]
            if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape != output.shape:
                raise ValueError(f"layer {name!r} needs a batched tensor input shaped like its output, got "
                                 f"{getattr(x, 'shape', type(x).__name__)} -> {tuple(output.shape)}")
            probe = output.new_zeros(()).expand(output.shape).detach().requires_grad_()
            records[name] = NormRecord(x.detach(), probe)
            return output + probe

        return record

    handles = [layer.module.register_forward_hook(hook(layer.name)) for layer in layers]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer.name for layer in layers if layer.name not in records]
    if missing:
        raise ValueError(f"layers {missing} did not run in the forward pass, so they have no per-sample gradients")
