"""Per-sample gradients and the GGN diagonal of every supported layer of a model (BackPACK's BatchGrad, DiagGGN).

One forward captures each supported layer's input (``tnconv.curvature.hooks``);
one batched backward pulls the columns at the model output back to every layer
output; the per-layer routines (``tnconv.curvature.factors``) finish the job.
Samples are assumed not to interact in the forward (BatchNorm in eval mode),
as for BackPACK: per-sample quantities are read off the batch's output gradients.
"""

from __future__ import annotations

import torch

from tnconv.curvature.columns import check_loss, check_output, fisher_columns, loss_gradient
from tnconv.curvature.factors import bias_diag_ggn, per_sample_bias, per_sample_weight, weight_diag_ggn
from tnconv.curvature.hooks import check_model, find_layers, forward, pull_back


def per_sample_grads(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each sample's gradient of the weights and biases of the supported layers.

    Args:
        model: any ``torch.nn.Module`` whose supported layers (``Conv1d/2d/3d``,
            ``ConvTranspose1d/2d/3d``, ``Linear``, and the ``tnconv.nn`` twins) each run once.
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (reduction ``"mean"`` or ``"sum"``).
        inputs, targets: one batch; ``model(inputs)`` must be ``(N, C)``.

    Returns:
        Parameter name (as in ``model.named_parameters()``) -> ``(N, *param.shape)``: sample n's
        term of the loss as the reduction weights it, so the entries sum over ``N`` to the
        batch gradient (BackPACK's ``BatchGrad``). ``.grad`` is left as it was.
    """
    model = check_model(model)
    loss = check_loss(loss_function)
    layers = find_layers(model)
    output, records = forward(model, layers, inputs)
    targets = check_output(output, targets, loss)
    gradients = pull_back(output, records, loss_gradient(output, targets, loss)[None])
    result = {}
    for layer in layers:
        record, gradient = records[layer.name], gradients[layer.name][0]
        result[layer.weight] = per_sample_weight(record.x, gradient, record.geometry)
        if layer.bias is not None:
            result[layer.bias] = per_sample_bias(gradient, record.geometry)
    return result


def diag_ggn(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
    mc_samples: int | None = None, generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The GGN diagonal of the weights and biases of the supported layers.

    Args:
        model, loss_function, inputs, targets: as for ``per_sample_grads``.
        mc_samples: None for the exact diagonal (``C`` columns of the loss Hessian's
            factorisation pulled back, BackPACK's ``DiagGGNExact``), or the number of
            labels drawn per sample from the model's predictive distribution (``DiagGGNMC``).
        generator: the random source of the drawn labels.

    Returns:
        Parameter name -> a tensor shaped like the parameter: ``diag(J^T H J)`` with ``H``
        the Hessian of the loss (as its reduction scales it) w.r.t. the model output.
    """
    model = check_model(model)
    loss = check_loss(loss_function)
    layers = find_layers(model)
    output, records = forward(model, layers, inputs)
    targets = check_output(output, targets, loss)
    fisher = "type-2" if mc_samples is None else "mc"
    columns = pull_back(output, records, fisher_columns(output, targets, loss, fisher, mc_samples, generator))
    result = {}
    for layer in layers:
        record, layer_columns = records[layer.name], columns[layer.name]
        result[layer.weight] = weight_diag_ggn(record.x, layer_columns, record.geometry)
        if layer.bias is not None:
            result[layer.bias] = bias_diag_ggn(layer_columns, record.geometry)
    return result
