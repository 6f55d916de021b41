"""Differentially private gradients: each sample's gradient clipped to a total norm, summed, plus Gaussian noise.

``clip_grads(model, loss_function, inputs, targets, max_norm, noise_multiplier)`` is the
gradient step of DP-SGD (Abadi et al. 2016) in two passes over the layers, never
materialising per-sample gradients where their norms are cheaper without them:

1. the norms: one forward capturing every layer's input, one backward of the loss to the
   layer outputs only (no parameter gradients), then each sample's squared gradient norm of
   every parameter (``tnconv.curvature.per_sample_grad_norms``' ways: conv layers through
   pairs of output locations where that is cheaper than forming the per-sample gradients);
2. the clipped sum: sample n's gradient ``g_n`` is linear in the gradients ``v_n`` w.r.t. the
   layer outputs of that sample, so ``sum_n c_n g_n`` is each layer's weight VJP (an ordinary
   one, batched over samples) of the output gradients scaled by the clip factors
   ``c_n = min(1, max_norm / ||g_n||)``: no second backward through the model.

``g_n`` is sample n's term of the loss gradient as the loss's reduction weights it (as in
``tnconv.curvature.per_sample_grads``): with ``reduction="sum"`` it is the gradient of the sample's
own loss, as DP-SGD clips it; with ``"mean"`` it carries the loss's ``1/N`` (so a ``max_norm``
of ``C / N`` clips the samples' own gradients at ``C``). With no clipping (a large
``max_norm``) and no noise, ``.grad`` is what ``loss_function(model(inputs), targets).backward()``
gives.

Supported trainable parameters: those of ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``, ``Linear``
(and the ``tnconv.nn`` twins) and the affine parameters of ``GroupNorm``, ``LayerNorm`` and
``InstanceNorm``; any other trainable parameter is refused. Samples must not interact in the
forward (no BatchNorm in training mode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from tnconv.curvature.hooks import SUPPORTED, Layer, check_model, find_layers
from tnconv.curvature.normalization import NORMALIZATIONS, find_normalizations
from tnconv.curvature.statistics import LayerGradients, Statistics, in_model_order, layer_gradients
from tnconv.namespace import public_dir

__all__ = ["clip_grads"]
__dir__ = public_dir(globals(), __all__)


def clip_grads(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
    max_norm: float, noise_multiplier: float = 0.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Write ``sum_n min(1, max_norm / ||g_n||) g_n`` (+ noise) into every trainable parameter's ``.grad``.

    Args:
        model: any ``torch.nn.Module`` whose trainable parameters all belong to supported layers
            (see the module docstring), each of which runs once per forward.
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (reduction ``"mean"`` or ``"sum"``).
        inputs, targets: one batch; ``model(inputs)`` must be ``(N, C)``.
        max_norm: the clipping bound (> 0) on each sample's total gradient norm ``||g_n||`` over all
            trainable parameters.
        noise_multiplier: the noise's standard deviation over ``max_norm`` (>= 0): Gaussian noise of
            std ``noise_multiplier * max_norm`` is added to every entry of every gradient.
        generator: the random source of the noise (torch's default one if None).

    Returns:
        ``(N,)``: each sample's gradient norm ``||g_n||`` before clipping.

    Raises:
        ValueError: a trainable parameter of an unsupported module (all of them are listed) or of a supported
            layer that did not run in the forward (another module may use it through a functional call), a bad
            ``max_norm`` or ``noise_multiplier``, or what ``per_sample_grad_norms`` refuses.
    """
    model = check_model(model)
    max_norm = _number(max_norm, "max_norm", positive=True)
    noise_multiplier = _number(noise_multiplier, "noise_multiplier", positive=False)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} ({type(generator).__name__})")
    check_supported(model)
    taken = Statistics(find_layers(model), ("norms",))
    pulled = layer_gradients(model, loss_function, inputs, targets, taken.add, keep=True)
    check_ran(taken.uses, pulled.layers)
    norms = torch.stack(list(taken.result("norms", pulled.affine).values())).sum(0).sqrt()
    factors = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
    sums = in_model_order(model, clipped_sums(pulled, factors))
    parameters = dict(model.named_parameters())
    for name, value in sums.items():
        parameter = parameters[name]
        if noise_multiplier:
            value = value + noise(parameter, noise_multiplier * max_norm, generator)
        if parameter.grad is None:
            parameter.grad = value.to(parameter.dtype).contiguous()
        else:
            parameter.grad.copy_(value)
    return norms


def check_supported(model: torch.nn.Module) -> None:
    """ValueError listing the trainable parameters of ``model`` that no supported layer owns."""
    covered = {name for layer in find_layers(model) for name in (layer.weight, layer.bias) if name is not None}
    covered |= {name for layer in find_normalizations(model) for name in (layer.weight, layer.bias) if name}
    owners = {id(p): type(module).__name__ for module in model.modules() for p in module.parameters(recurse=False)}
    refused = [f"{name} ({owners[id(p)]})" for name, p in model.named_parameters() if p.requires_grad and name not in covered]
    if refused:
        kinds = sorted({cls.__name__ for cls in (*SUPPORTED, *NORMALIZATIONS)})
        raise ValueError(
            f"model has trainable parameters of unsupported modules: {', '.join(refused)}; clip_grads supports the "
            f"trainable parameters of {', '.join(kinds)} (freeze the others with requires_grad_(False))"
        )


def check_ran(parameters: Iterable[str], ran: list[Layer]) -> None:
    """ValueError naming the supported layers' ``parameters`` that no layer which ran in the forward uses (another
    module may use them through a functional call, which clip_grads cannot see, so their gradients could not be
    clipped)."""
    used = {name for layer in ran for name in (layer.weight, layer.bias) if name is not None}
    unclipped = [name for name in parameters if name not in used]
    if unclipped:
        raise ValueError(
            f"parameters {unclipped} belong to layers that did not run in the forward pass: clip_grads cannot clip "
            f"their gradients (freeze them with requires_grad_(False))"
        )


def clipped_sums(pulled: LayerGradients, factors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter name -> ``sum_n factors[n] g_n``: each layer's weight VJP (and bias sum) of its output gradients
    scaled per sample by ``factors`` ``(N,)``, and the normalisation layers' per-sample gradients so weighted.
    (Not in place: two layers whose outputs are added get one gradient tensor from autograd.)"""
    summed = Statistics(pulled.layers, ("sums",))
    for layer in pulled.layers:
        gradient = pulled.gradients.pop(layer.name)
        summed.add(layer, pulled.records[layer.name], gradient * per_sample(factors, gradient))
    return summed.result("sums", {name: grads * per_sample(factors, grads) for name, grads in pulled.affine.items()})


def per_sample(factors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``factors`` ``(N,)`` shaped to scale ``like`` ``(N, ...)`` per sample, in its dtype."""
    return factors.to(like.dtype).reshape(-1, *(1,) * (like.ndim - 1))


def noise(parameter: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise of standard deviation ``std`` shaped like ``parameter`` (drawn on ``generator``'s device)."""
    device = parameter.device if generator is None else generator.device
    drawn = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype, device=device)
    return drawn.to(parameter.device).mul_(std)


def _number(value: object, name: str, positive: bool) -> float:
    """``value`` as a finite float that is > 0 (``positive``) or >= 0; ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)
