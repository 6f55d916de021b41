"""Per-sample gradient statistics of a whole model: squared norms, sums of squares, variance (BackPACK's first order).

One forward captures the input of every supported layer (``tnconv.curvature.hooks``) and
normalisation layer (``tnconv.curvature.normalization``) and adds a zero probe to its output;
one backward of the loss reaches every layer output (``layer_gradients``: input gradients only,
no parameter gradients). Each layer's statistics are taken *during* that backward, as its
output gradient arrives (a hook on its probe), and the gradient is then dropped unless the caller
keeps it, so that the backward holds what a plain one holds, not every layer's output gradient:

- ``per_sample_grad_norms``: each sample's squared gradient norm of each parameter, taken
  through pairs of output locations where that is cheaper than forming the per-sample
  gradients (``tnconv.curvature.norms``; BackPACK's ``BatchL2Grad``);
- ``sum_grad_squared``: ``sum_n g_n**2`` (the GGN diagonal's ways with the output gradient as
  its one column; BackPACK's ``SumGradSquared``);
- ``grad_variance``: ``sum_n g_n**2 / N - (sum_n g_n / N)**2`` (BackPACK's ``Variance``).

``g_n`` is sample n's term of the loss gradient as the loss's reduction weights it (``1/N``
of its own gradient under a mean), as in ``per_sample_grads``. The affine parameters of
``GroupNorm``, ``LayerNorm`` and ``InstanceNorm`` layers count too (their per-sample gradients
are sums over locations, formed in the backward). Samples must not interact in the forward (no
BatchNorm in training mode), as for BackPACK. ``.grad`` is left as it was.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

from tnconv.conv.checks import layer as conv_layer
from tnconv.curvature.columns import check_loss, check_output
from tnconv.curvature.factors import (
    bias_diag_ggn, channels_last, locations, per_sample_bias, per_sample_weight, weight_diag_ggn,
)
from tnconv.curvature.hooks import Layer, Record, check_model, find_layers, forward
from tnconv.curvature.normalization import captured, find_normalizations, per_sample_affine
from tnconv.curvature.norms import bias_norms, weight_norms
from tnconv.routines.run import run_routine
from tnconv.routines.table import TABLE

KINDS = ("norms", "squares", "sums")
"""The statistics of a parameter: ``(N,)`` squared per-sample norms, ``sum_n g_n**2``, ``sum_n g_n``."""

AtLayer = Callable[[Layer, Record, torch.Tensor], None]


@dataclass(frozen=True)
class LayerGradients:
    """One forward and backward of a batch: the supported layers that ran, what the forward captured at each
    (``records``) and, where the caller kept them, the gradients of the loss w.r.t. their outputs
    (``gradients``, by layer name, as the loss's reduction weights them); and the per-sample gradients of
    the normalisation layers' affine parameters (``affine``: name -> ``(N, *param.shape)``)."""

    layers: list[Layer]
    records: dict[str, Record]
    gradients: dict[str, torch.Tensor]
    affine: dict[str, torch.Tensor]
    batch: int


def layer_gradients(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
    at_layer: AtLayer, keep: bool,
) -> LayerGradients:
    """Run ``model(inputs)`` capturing every supported and normalisation layer, then one backward of
    ``loss_function(output, targets)`` to their outputs (no parameter gradients are computed).

    ``at_layer(layer, record, gradient)`` is called for each supported layer that ran as its output gradient
    arrives in the backward (with zeros, after it, for a layer the loss does not depend on); the
    gradient is kept in the result when ``keep``, else dropped at once. The normalisation layers'
    per-sample gradients are formed as their output gradients arrive, which are then dropped.
    """
    model = check_model(model)
    loss = check_loss(loss_function)
    layers, norm_layers = find_layers(model), find_normalizations(model)
    with captured(norm_layers) as norm_records:
        output, records = forward(model, layers, inputs)
    layers = [layer for layer in layers if layer.name in records]  # those that did not run are left out, warned of
    targets = check_output(output, targets, loss)
    affine: dict[str, torch.Tensor] = {}
    waiting: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    by_name = {layer.name: layer for layer in norm_layers}

    def arrived(name: str, handle: Callable[[torch.Tensor], bool]) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(gradient: torch.Tensor) -> torch.Tensor:
            waiting.pop(name)
            return gradient if handle(gradient) else gradient.new_zeros(()).expand(gradient.shape)

        waiting[name] = hook
        return hook

    def at_norm(layer_name: str) -> Callable[[torch.Tensor], bool]:
        def handle(gradient: torch.Tensor) -> bool:
            record = norm_records.pop(layer_name)
            for name, value in per_sample_affine(by_name[layer_name], record.x, gradient).items():
                affine[name] = affine[name] + value if name in affine else value
            return False

        return handle

    def at_supported(layer: Layer) -> Callable[[torch.Tensor], bool]:
        def handle(gradient: torch.Tensor) -> bool:
            at_layer(layer, records[layer.name] if keep else records.pop(layer.name), gradient)
            return keep

        return handle

    probes = []
    for layer in layers:
        probes.append(records[layer.name].probe)
        probes[-1].register_hook(arrived(layer.name, at_supported(layer)))
    for norm_layer in norm_layers:
        probes.append(norm_records[norm_layer.name].probe)
        probes[-1].register_hook(arrived(norm_layer.name, at_norm(norm_layer.name)))
    with torch.enable_grad():
        value = loss.function(output, targets)
    batch = output.shape[0]
    del output
    gradients = dict(zip([layer.name for layer in layers], torch.autograd.grad(value, probes, materialize_grads=True)))
    for name, probe in zip([*(layer.name for layer in layers), *by_name], probes):
        if name in waiting:  # not reached by the backward: its gradient is zero
            waiting[name](probe.new_zeros(probe.shape))
    return LayerGradients(layers, records, gradients if keep else {}, affine, batch)


class Statistics:
    """The statistics ``kinds`` (of ``KINDS``) of the supported layers' weights and biases, taken layer by layer
    (``add``, an ``AtLayer`` for ``layer_gradients``); ``result(kind)``: parameter name -> value.

    A parameter that several layers share (tied weights) gets the statistic of its per-sample gradients added
    over the layers that use it.
    """

    def __init__(self, layers: list[Layer], kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.uses = Counter(name for layer in layers for name in (layer.weight, layer.bias) if name is not None)
        self.values: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in kinds}
        self.tied: dict[str, torch.Tensor] = {}

    def add(self, layer: Layer, record: Record, gradient: torch.Tensor) -> None:
        """Take the statistics of ``layer``'s parameters from its input and output gradient."""
        if self.uses[layer.weight] > 1:
            self._tie(layer.weight, per_sample_weight(record.x, gradient, record.geometry))
        else:
            for kind in self.kinds:
                self.values[kind][layer.weight] = weight_statistic(record, gradient, kind)
        if layer.bias is None:
            return
        if self.uses[layer.bias] > 1:
            self._tie(layer.bias, per_sample_bias(gradient, record.geometry))
        else:
            for kind in self.kinds:
                self.values[kind][layer.bias] = bias_statistic(record, gradient, kind)

    def _tie(self, name: str, grads: torch.Tensor) -> None:
        self.tied[name] = self.tied[name] + grads if name in self.tied else grads

    def result(self, kind: str, affine: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Parameter name -> the statistic ``kind``, the normalisation layers' from their per-sample gradients
        ``affine`` (``LayerGradients.affine``)."""
        per_sample = {**self.tied, **affine}
        return {**self.values[kind], **{name: from_per_sample(grads, kind) for name, grads in per_sample.items()}}


def statistics(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
    kinds: tuple[str, ...],
) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
    """The statistics ``kinds`` of every parameter (kind -> name -> value, in ``model.named_parameters()``
    order) from one forward and backward, and the batch size."""
    taken = Statistics(find_layers(check_model(model)), kinds)
    pulled = layer_gradients(model, loss_function, inputs, targets, taken.add, keep=False)
    return {kind: in_model_order(model, taken.result(kind, pulled.affine)) for kind in kinds}, pulled.batch


def per_sample_grad_norms(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each sample's squared gradient norm of every parameter (BackPACK's ``BatchL2Grad``).

    Args:
        model: any ``torch.nn.Module``; its supported layers (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``,
            ``Linear`` and the ``tnconv.nn`` twins) and its ``GroupNorm``, ``LayerNorm`` and
            ``InstanceNorm`` layers with affine parameters each run once (a supported layer that does not run
            is left out, with a warning, as in ``per_sample_grads``).
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (reduction ``"mean"`` or ``"sum"``).
        inputs, targets: one batch; ``model(inputs)`` must be ``(N, C)``.

    Returns:
        Parameter name -> ``(N,)``: ``||g_n||^2`` with ``g_n`` sample n's term of the loss gradient
        as the reduction weights it. Conv and ``Linear`` weights: through pairs of output
        locations where that is cheaper than forming the per-sample gradients.
    """
    return statistics(model, loss_function, inputs, targets, ("norms",))[0]["norms"]


def sum_grad_squared(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``sum_n g_n**2`` of every parameter, shaped like it (BackPACK's ``SumGradSquared``); arguments and ``g_n`` as
    ``per_sample_grad_norms``."""
    return statistics(model, loss_function, inputs, targets, ("squares",))[0]["squares"]


def grad_variance(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``sum_n g_n**2 / N - (sum_n g_n / N)**2`` of every parameter, shaped like it (BackPACK's ``Variance``);
    arguments and ``g_n`` as ``per_sample_grad_norms``."""
    taken, batch = statistics(model, loss_function, inputs, targets, ("squares", "sums"))
    return {name: squares / batch - (taken["sums"][name] / batch).square() for name, squares in taken["squares"].items()}


def in_model_order(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` (by parameter name) in the order of ``model.named_parameters()``."""
    return {name: values[name] for name, _ in model.named_parameters() if name in values}


def weight_statistic(record: Record, gradient: torch.Tensor, kind: str) -> torch.Tensor:
    """The statistic ``kind`` of a supported layer's weight from its input (in ``record``) and output gradient."""
    x, geometry = record.x, record.geometry
    if kind == "norms":
        return weight_norms(x, gradient, geometry)
    if kind == "squares":
        return weight_diag_ggn(x, gradient[None], geometry)
    if geometry.kind == "linear":  # the weight gradient: its weight VJP
        v = channels_last(gradient[None], geometry)[0].flatten(2)
        return torch.einsum("nto,nti->oi", v, locations(x))
    hyper = conv_layer(x, geometry.conv, geometry.out_channels)
    return run_routine(TABLE["weight_vjp"], hyper, {"X": x, "V": gradient})


def bias_statistic(record: Record, gradient: torch.Tensor, kind: str) -> torch.Tensor:
    """The statistic ``kind`` of a supported layer's bias from its output gradient."""
    geometry = record.geometry
    if kind == "norms":
        return bias_norms(gradient, geometry)
    if kind == "squares":
        return bias_diag_ggn(gradient[None], geometry)
    return per_sample_bias(gradient, geometry).sum(0)


def from_per_sample(grads: torch.Tensor, kind: str) -> torch.Tensor:
    """The statistic ``kind`` of per-sample gradients ``(N, *param.shape)``."""
    if kind == "norms":
        flat = grads.flatten(1)
        return torch.linalg.vecdot(flat, flat)
    return grads.square().sum(0) if kind == "squares" else grads.sum(0)
