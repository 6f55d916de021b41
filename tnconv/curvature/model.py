"""Per-sample gradients and the GGN diagonal of every supported layer of a model (BackPACK's BatchGrad, DiagGGN).

One forward captures each supported layer's input at every call (``tnconv.curvature.hooks``);
one batched backward pulls the columns at the model output back to every call's output;
the per-layer routines (``tnconv.curvature.factors``) finish the job. A parameter used more than
once (a layer called twice, a weight tied between layers) gets the contributions of every use:
its per-sample gradients are their sums, and its GGN diagonal is taken from the sum of the uses'
per-column weight VJPs (exact, cross terms between uses included). Samples are assumed not to
interact in the forward (BatchNorm in eval mode), as for BackPACK: per-sample quantities are
read off the batch's output gradients (a warning names BatchNorm layers that use batch statistics).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from tnconv.curvature.columns import check_loss, check_output, fisher_columns, loss_gradient
from tnconv.curvature.factors import Geometry, bias_diag_ggn, per_sample_bias, per_sample_weight, weight_diag_ggn
from tnconv.curvature.hooks import capture, pull_back_calls
from tnconv.curvature.supported import check_model, check_unshared, find_layers
from tnconv.routines.gram import HALF

SHARED_CHUNK = 1 << 22
"""Elements of the per-sample VJPs of a parameter used several times, with their operands (all uses), for one chunk of
columns in ``diag_ggn``: the columns run ``k`` at a time as ``k * N`` samples (at least one column a chunk)."""


@dataclass(frozen=True)
class Use:
    """One use of a parameter: the call's input (``x``), the columns ``(M, N, *y.shape[1:])`` at its output, the
    call's geometry, whether the parameter is the layer's weight (else its bias), and its number of elements."""

    x: torch.Tensor
    columns: torch.Tensor
    geometry: Geometry
    weight: bool
    size: int

    def per_sample(self, columns: slice) -> torch.Tensor:
        """Each sample's VJP of each of the ``columns`` for this use: ``(k, N, *param.shape)``, the ``k`` columns
        taken as ``k * N`` samples of one call (the input repeated ``k`` times)."""
        v = self.columns[columns]
        count = v.shape[0]
        if not self.weight:
            return per_sample_bias(v.flatten(0, 1), self.geometry).unflatten(0, (count, -1))
        x = self.x.expand(count, *self.x.shape).flatten(0, 1)
        return per_sample_weight(x, v.flatten(0, 1), self.geometry).unflatten(0, (count, -1))

    def diagonal(self) -> torch.Tensor:
        """``sum_{m,n}`` of this use's squared per-column VJPs (the GGN diagonal where it is the only use)."""
        if self.weight:
            return weight_diag_ggn(self.x, self.columns, self.geometry)
        return bias_diag_ggn(self.columns, self.geometry)


def parameter_uses(
    model: torch.nn.Module, inputs: torch.Tensor, targets: object, loss_function: torch.nn.Module, fisher: str | None,
    mc_samples: int | None = None, generator: torch.Generator | None = None,
) -> dict[str, list[Use]]:
    """Key -> every use of that parameter in one forward of ``model``, with the columns of ``fisher`` pulled back
    to the use's output (``fisher`` None: the loss gradient, one column)."""
    model = check_model(model)
    loss = check_loss(loss_function)
    layers = find_layers(model)
    check_unshared(model, layers, allowed=True)
    output, calls = capture(model, layers, inputs)
    targets = check_output(output, targets, loss)
    if fisher is None:
        columns = loss_gradient(output, targets, loss)[None]
    else:
        columns = fisher_columns(output, targets, loss, fisher, mc_samples, generator)
    pulled = pull_back_calls(output, calls, columns)
    uses: dict[str, list[Use]] = {}
    for layer in layers:
        for record, layer_columns in zip(calls.get(layer.name, ()), pulled.get(layer.name, ())):
            weight = Use(record.x, layer_columns, record.geometry, True, layer.weight_shape.numel())
            uses.setdefault(layer.weight, []).append(weight)
            if layer.bias is not None:
                bias = Use(record.x, layer_columns, record.geometry, False, layer.layout.out_channels)
                uses.setdefault(layer.bias, []).append(bias)
    return uses


def per_sample_grads(
    model: torch.nn.Module, loss_function: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each sample's gradient of the weights and biases of the supported layers.

    Args:
        model: any ``torch.nn.Module``; its supported layers are ``Conv1d/2d/3d``,
            ``ConvTranspose1d/2d/3d``, ``Linear``, and the ``tnconv.nn`` twins.
        loss_function: a ``torch.nn.CrossEntropyLoss`` or ``MSELoss`` (reduction ``"mean"`` or ``"sum"``).
        inputs, targets: one batch; ``model(inputs)`` must be ``(N, C)``.

    Returns:
        Parameter name (as in ``model.named_parameters()``; ``layer name + ".weight"`` for a
        computed weight: parametrizations, pruning) -> ``(N, *param.shape)``: sample n's term of
        the loss as the reduction weights it, so the entries sum over ``N`` to the batch gradient
        (BackPACK's ``BatchGrad``). A parameter used several times (a layer called twice, tied
        weights) gets the sum over its uses; one that a module other than a supported layer holds
        too raises a ``ValueError``. ``.grad`` is left as it was.
    """
    uses = parameter_uses(model, inputs, targets, loss_function, None)
    return {key: _sum(use.per_sample(slice(0, 1))[0] for use in each) for key, each in uses.items()}


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
        Parameter name (keyed as by ``per_sample_grads``) -> a tensor shaped like the parameter:
        ``diag(J^T H J)`` with ``H`` the Hessian of the loss (as its reduction scales it) w.r.t.
        the model output, in the dtype of the layer's input (float16/bfloat16 layers are computed
        in float32). A parameter used several times gets the diagonal of its whole Jacobian (the
        uses' per-column VJPs summed before they are squared: ``M`` per-sample VJPs per use).
    """
    fisher = "type-2" if mc_samples is None else "mc"
    uses = parameter_uses(model, inputs, targets, loss_function, fisher, mc_samples, generator)
    return {key: _diagonal(each) for key, each in uses.items()}


def _diagonal(uses: list[Use]) -> torch.Tensor:
    """The GGN diagonal of a parameter from its uses, computed in float32 for half inputs and returned in theirs."""
    dtype = uses[0].x.dtype
    if dtype in HALF:
        uses = [Use(use.x.float(), use.columns.float(), use.geometry, use.weight, use.size) for use in uses]
    if len(uses) == 1:
        return uses[0].diagonal().to(dtype)
    columns, samples = uses[0].columns.shape[:2]
    per_column = sum(use.x.numel() + use.columns[0].numel() + samples * use.size for use in uses)
    step = max(1, SHARED_CHUNK // per_column)
    chunks = (slice(start, start + step) for start in range(0, columns, step))
    diagonal = _sum(_sum(use.per_sample(chunk) for use in uses).square().sum((0, 1)) for chunk in chunks)
    return diagonal.to(dtype)


def _sum(values: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of an iterable of tensors (at least one)."""
    iterator = iter(values)
    total = next(iterator)
    for value in iterator:
        total = total + value
    return total
