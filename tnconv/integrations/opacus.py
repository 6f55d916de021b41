"""tnconv's per-sample gradients and per-sample gradient norms as Opacus's samplers for conv layers.

``register()`` puts tnconv's samplers into Opacus's registries (``opacus.grad_sample``'s
``register_grad_sampler`` and ``register_norm_sampler``, Opacus 1.6) for ``Conv1d/2d/3d``,
``ConvTranspose1d/2d/3d`` and their ``tnconv.nn`` twins, so that every Opacus model built
afterwards (``PrivacyEngine``, ``GradSampleModule``; ``grad_sample_mode="hooks"`` and the
ghost-clipping ``"ghost"``) uses them:

- the grad sampler: each sample's weight gradient by tnconv's ``per_sample_grad`` routine
  (any padding mode, groups, dilation, transposed layers; Opacus unfolds the input for
  convs and falls back to ``torch.func`` for transposed convs);
- the norm sampler (ghost clipping, which Opacus offers for ``Linear`` and ``Embedding``
  only): each sample's gradient norm (not squared, as Opacus wants it) through pairs of
  output locations where that is cheaper than forming the per-sample gradients
  (``tnconv.curvature.norms``).

A sampler gets ``(layer, activations, backprops)``: the layer, its forward inputs and the
gradients w.r.t. its output (scaled by Opacus per its ``loss_reduction``), and returns a dict
parameter -> ``(N, *param.shape)`` gradients or ``(N,)`` norms for its trainable parameters.
"""

from __future__ import annotations

import torch
from torch import nn

import tnconv.nn as tnn
from tnconv.curvature.factors import Geometry, geometry, per_sample_bias, per_sample_weight
from tnconv.curvature.norms import bias_norms, weight_norms

__all__ = ["CONV_LAYERS", "grad_sampler", "norm_sampler", "register"]

CONV_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    tnn.Conv1d, tnn.Conv2d, tnn.Conv3d, tnn.ConvNd,
    tnn.ConvTranspose1d, tnn.ConvTranspose2d, tnn.ConvTranspose3d, tnn.ConvTransposeNd,
)
"""The layer classes ``register`` gives tnconv's samplers (Opacus looks samplers up by the exact class)."""


def register() -> None:
    """Make tnconv's ``grad_sampler`` and ``norm_sampler`` Opacus's samplers of ``CONV_LAYERS`` (Opacus 1.6's
    registries; models wrapped afterwards use them). Calling it again changes nothing."""
    from opacus.grad_sample import register_grad_sampler, register_norm_sampler

    register_grad_sampler(list(CONV_LAYERS))(grad_sampler)
    register_norm_sampler(list(CONV_LAYERS))(norm_sampler)


def _layer(layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
    """The layer's input as tnconv's routines take it (in the backprops' dtype, padded for a padding mode) and its
    geometry."""
    x = activations[0].detach().to(backprops.dtype)
    return geometry(type(layer).__name__, layer, x, backprops)


def _trainable(layer: nn.Module) -> dict[str, nn.Parameter]:
    """The layer's ``weight`` and ``bias`` that are parameters needing a gradient, by attribute name."""
    found = {role: getattr(layer, role, None) for role in ("weight", "bias")}
    return {role: p for role, p in found.items() if isinstance(p, nn.Parameter) and p.requires_grad}


def grad_sampler(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Each sample's gradient of the conv ``layer``'s trainable weight and bias: ``(N, *param.shape)``."""
    trainable = _trainable(layer)
    if backprops.shape[0] == 0:
        return {p: backprops.new_zeros((0, *p.shape)) for p in trainable.values()}
    x, shape = _layer(layer, activations, backprops)
    result = {}
    if "weight" in trainable:
        result[trainable["weight"]] = per_sample_weight(x, backprops, shape)
    if "bias" in trainable:
        result[trainable["bias"]] = per_sample_bias(backprops, shape)
    return result


def norm_sampler(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Each sample's gradient norm (not squared) of the conv ``layer``'s trainable weight and bias: ``(N,)``."""
    trainable = _trainable(layer)
    if backprops.shape[0] == 0:
        return {p: backprops.new_zeros(0) for p in trainable.values()}
    x, shape = _layer(layer, activations, backprops)
    result = {}
    if "weight" in trainable:
        result[trainable["weight"]] = weight_norms(x, backprops, shape).clamp_(min=0).sqrt_()
    if "bias" in trainable:
        result[trainable["bias"]] = bias_norms(backprops, shape).sqrt_()
    return result
