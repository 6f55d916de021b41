"""Per-sample gradient statistics of a whole model: squared norms, sums of squares, variance (BackPACK's first order).

One forward captures the input of every supported layer (``tnconv.curvature.hooks``) and
normalisation layer (``tnconv.curvature.normalization``) and adds a zero probe to its output;
one backward of the loss gives the gradient w.r.t. every layer output (``layer_gradients``:
input gradients only, no weight gradients). Then, per layer:

- ``per_sample_grad_norms``: each sample's squared gradient norm of each parameter,
  taken through pairs of output locations where that is cheaper than forming the
  per-sample gradients (``tnconv.curvature.norms``; BackPACK's ``BatchL2Grad``);
- ``sum_grad_squared``: ``sum_n g_n**2`` (the GGN diagonal's ways with the output gradient
  as its one column; BackPACK's ``SumGradSquared``);
- ``grad_variance``: ``sum_n g_n**2 / N - (sum_n g_n / N)**2`` (BackPACK's ``Variance``).

``g_n`` is sample n's term of the loss gradient as the loss's reduction weights it
(``1/N`` of its own gradient under a mean), as in ``per_sample_grads``. The affine
parameters of ``GroupNorm``, ``LayerNorm`` and ``InstanceNorm`` layers count too (their
per-sample gradients are sums over locations). Samples must not interact in the forward
(no BatchNorm in training mode), as for BackPACK. ``.grad`` is left as it was.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from tnconv.curvature.columns import check_loss, check_output
from tnconv.curvature.factors import (
    bias_diag_ggn, channels_last, locations, per_sample_bias, per_sample_weight, weight_diag_ggn,
)
from tnconv.curvature.hooks import Layer, Record, check_model, find_layers, forward
from tnconv.curvature.checks import layer as conv_layer
from tnconv.curvature.normalization import NormCapture, NormLayer, NormRecord, find_normalizations, per_sample_affine
from tnconv.curvature.norms import bias_norms, weight_norms
from tnconv.routines.run import run_routine
from tnconv.routines.table import TABLE


@dataclass(frozen=True)
class LayerGradients:
    """One forward and backward of a batch: every supported layer's and normalisation layer's input and the
    gradient of the loss w.r.t. its output (``gradients``, by layer name, as the loss's reduction weights it)."""

    layers: list[Layer]
    records: dict[str, Record]
    norm_layers: list[NormLayer]
    norm_records: dict[str, NormRecord]
    gradients: dict[str, torch.Tensor]

    @property
    def batch(self) -> int:
        return next(iter(self.gradients.values())).shape[0]

    def per_sample_affine(self) -> dict[str, torch.Tensor]:
        """Parameter name -> ``(N, *param.shape)``: the normalisation layers' per-sample gradients (added over the
        layers that share a parameter)."""
        result: dict[str, torch.Tensor] = {}
        for layer in self.norm_layers:
            grads = per_sample_affine(layer, self.norm_records[layer.name].x, self.gradients[layer.name])
            for name, value in grads.items():
                result[name] = result[name] + value if name in result else value
        return result


def layer_gradients(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> LayerGradients:
    """Run ``model(inputs)`` capturing every supported and normalisation layer, then one backward of
    ``loss_function(output, targets)`` to their outputs (no parameter gradients are computed)."""
    model = check_model(model)
    loss = check_loss(loss_function)
    layers, norm_layers = find_layers(model), find_normalizations(model)
    with NormCapture(norm_layers) as norm_capture:
        output, records = forward(model, layers, inputs)
    norm_capture.check_complete()
    targets = check_output(output, targets, loss)
    names = [layer.name for layer in layers] + [layer.name for layer in norm_layers]
    probes = [records[layer.name].probe for layer in layers]
    probes += [norm_capture.records[layer.name].probe for layer in norm_layers]
    with torch.enable_grad():
        value = loss.function(output, targets)
    gradients = torch.autograd.grad(value, probes, materialize_grads=True)
    return LayerGradients(layers, records, norm_layers, norm_capture.records, dict(zip(names, gradients)))


def per_sample_grad_norms(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each sample's squared gradient norm of every parameter (BackPACK's ``BatchL2Grad``).

    Args:
        model: any ``torch.nn.Module``; its supported layers (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``,
            ``Linear`` and the ``tnconv.nn`` twins) and its ``GroupNorm``, ``LayerNorm`` and
            ``InstanceNorm`` layers with affine parameters each run once.
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (reduction ``"mean"`` or ``"sum"``).
        inputs, targets: one batch; ``model(inputs)`` must be ``(N, C)``.

    Returns:
        Parameter name -> ``(N,)``: ``||g_n||^2`` with ``g_n`` sample n's term of the loss gradient
        as the reduction weights it. Conv and ``Linear`` weights: through pairs of output
        locations where that is cheaper than forming the per-sample gradients.
    """
    pulled = layer_gradients(model, loss_function, inputs, targets)
    return in_model_order(model, {**layer_statistic(pulled, "norms"), **affine_statistic(pulled, "norms")})


def sum_grad_squared(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``sum_n g_n**2`` of every parameter, shaped like it (BackPACK's ``SumGradSquared``); arguments and ``g_n`` as
    ``per_sample_grad_norms``."""
    pulled = layer_gradients(model, loss_function, inputs, targets)
    return in_model_order(model, {**layer_statistic(pulled, "squares"), **affine_statistic(pulled, "squares")})


def grad_variance(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``sum_n g_n**2 / N - (sum_n g_n / N)**2`` of every parameter, shaped like it (BackPACK's ``Variance``);
    arguments and ``g_n`` as ``per_sample_grad_norms``."""
    pulled = layer_gradients(model, loss_function, inputs, targets)
    squares = {**layer_statistic(pulled, "squares"), **affine_statistic(pulled, "squares")}
    sums = {**layer_statistic(pulled, "sums"), **affine_statistic(pulled, "sums")}
    batch = pulled.batch
    return in_model_order(model, {name: squares[name] / batch - (sums[name] / batch).square() for name in squares})


def in_model_order(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` (by parameter name) in the order of ``model.named_parameters()``."""
    return {name: values[name] for name, _ in model.named_parameters() if name in values}


def layer_statistic(pulled: LayerGradients, kind: str) -> dict[str, torch.Tensor]:
    """Parameter name -> the statistic ``kind`` of the supported layers' weights and biases: ``"norms"`` (``(N,)``
    squared norms), ``"squares"`` (``sum_n g_n**2``) or ``"sums"`` (``sum_n g_n``, the batch gradient).

    A parameter that several layers share (tied weights) gets the statistic of its per-sample gradients
    added over the layers that use it."""
    uses = Counter(name for layer in pulled.layers for name in (layer.weight, layer.bias) if name is not None)
    result: dict[str, torch.Tensor] = {}
    tied: dict[str, torch.Tensor] = {}
    for layer in pulled.layers:
        record, gradient = pulled.records[layer.name], pulled.gradients[layer.name]
        if uses[layer.weight] > 1:
            grads = per_sample_weight(record.x, gradient, record.geometry)
            tied[layer.weight] = tied[layer.weight] + grads if layer.weight in tied else grads
        else:
            result[layer.weight] = weight_statistic(record.x, gradient, record, kind)
        if layer.bias is None:
            continue
        if uses[layer.bias] > 1:
            grads = per_sample_bias(gradient, record.geometry)
            tied[layer.bias] = tied[layer.bias] + grads if layer.bias in tied else grads
        else:
            result[layer.bias] = bias_statistic(gradient, record, kind)
    return {**result, **{name: from_per_sample(grads, kind) for name, grads in tied.items()}}


def weight_statistic(x: torch.Tensor, gradient: torch.Tensor, record: Record, kind: str) -> torch.Tensor:
    """``layer_statistic`` of one weight from the layer's input and output gradient."""
    geometry = record.geometry
    if kind == "norms":
        return weight_norms(x, gradient, geometry)
    if kind == "squares":
        return weight_diag_ggn(x, gradient[None], geometry)
    return weight_gradient(x, gradient, record)


def weight_gradient(x: torch.Tensor, gradient: torch.Tensor, record: Record) -> torch.Tensor:
    """The weight gradient ``sum_n g_n`` of a supported layer for the output gradient ``gradient`` (its weight VJP)."""
    geometry = record.geometry
    if geometry.kind == "linear":
        v = channels_last(gradient[None], geometry)[0].flatten(2)
        return torch.einsum("nto,nti->oi", v, locations(x))
    hyper = conv_layer(x, geometry.conv, geometry.out_channels)
    return run_routine(TABLE["weight_vjp"], hyper, {"X": x, "V": gradient})


def bias_statistic(gradient: torch.Tensor, record: Record, kind: str) -> torch.Tensor:
    """``layer_statistic`` of one bias from the layer's output gradient."""
    geometry = record.geometry
    if kind == "norms":
        return bias_norms(gradient, geometry)
    if kind == "squares":
        return bias_diag_ggn(gradient[None], geometry)
    return per_sample_bias(gradient, geometry).sum(0)


def affine_statistic(pulled: LayerGradients, kind: str) -> dict[str, torch.Tensor]:
    """``layer_statistic`` of the normalisation layers' affine parameters, from their per-sample gradients."""
    return {name: from_per_sample(grads, kind) for name, grads in pulled.per_sample_affine().items()}


def from_per_sample(grads: torch.Tensor, kind: str) -> torch.Tensor:
    """The statistic ``kind`` (see ``layer_statistic``) of per-sample gradients ``(N, *param.shape)``."""
    if kind == "norms":
        flat = grads.flatten(1)
        return torch.linalg.vecdot(flat, flat)
    return grads.square().sum(0) if kind == "squares" else grads.sum(0)
