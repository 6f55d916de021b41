"""The columns at the model output ``(M, N, C)`` that whole-model curvature pulls back to every layer.

- ``"type-2"``: the exact symmetric factorisation of the loss Hessian (``sqrt_ggn``, ``M = C``);
- ``"mc"``: ``mc_samples`` columns from labels drawn from the model's predictive distribution;
- ``"empirical"``: the gradient of the loss on the actual targets (``M = 1``), times the
  square root of the mean's divisor (``N`` for cross-entropy, ``N*C`` for MSE, 1 for a sum), so
  that its outer product is scaled as the Hessian factor's (curvlinops' empirical Fisher);
- ``loss_gradient``: the plain gradient of the loss, for per-sample gradients.

Per sample ``n``, ``sum_m S[m, n] S[m, n]^T`` is (an estimate of) the Hessian of sample n's term
of the loss as its ``reduction`` weights it; the losses are ``torch.nn.CrossEntropyLoss`` (logits
``(N, C)``, class indices or probabilities) and ``torch.nn.MSELoss`` (``(N, C)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tnconv.curvature.loss import sqrt_ggn

FISHERS = ("type-2", "mc", "empirical")
REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Loss:
    """A supported loss function: ``kind`` is ``sqrt_ggn``'s loss name, ``reduction`` ``"mean"`` or ``"sum"``."""

    function: torch.nn.Module
    kind: str
    reduction: str


def check_loss(loss_function: object) -> Loss:
    """``loss_function`` as a ``Loss``: a plain ``CrossEntropyLoss`` or ``MSELoss`` with a mean or sum."""
    if isinstance(loss_function, torch.nn.CrossEntropyLoss):
        if loss_function.weight is not None:
            raise ValueError("loss_function must be a CrossEntropyLoss without class weights, got weight=<tensor>")
        if loss_function.label_smoothing != 0:
            raise ValueError(
                f"loss_function must be a CrossEntropyLoss without label smoothing, "
                f"got label_smoothing={loss_function.label_smoothing!r}"
            )
        kind = "cross_entropy"
    elif isinstance(loss_function, torch.nn.MSELoss):
        kind = "mse"
    else:
        raise ValueError(
            f"loss_function must be a torch.nn.CrossEntropyLoss or torch.nn.MSELoss instance, got {loss_function!r}"
        )
    if loss_function.reduction not in REDUCTIONS:
        raise ValueError(
            f"loss_function.reduction must be one of {REDUCTIONS}, got {loss_function.reduction!r}"
        )
    return Loss(loss_function, kind, loss_function.reduction)


def check_model_output(output: object) -> torch.Tensor:
    """The model output must be a non-empty floating-point ``(N, C)`` tensor; returns it."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(output).__name__}")
    if output.ndim != 2 or output.shape[0] == 0 or output.shape[1] == 0 or not output.is_floating_point():
        raise ValueError(
            f"the model output must be a non-empty floating-point (N, C) tensor, got {output.dtype} "
            f"of shape {tuple(output.shape)}"
        )
    return output


def check_output(output: torch.Tensor, targets: object, loss: Loss) -> torch.Tensor:
    """The model output must be ``(N, C)`` and ``targets`` fit it; returns ``targets``."""
    check_model_output(output)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape[:1] != output.shape[:1] or (loss.kind == "mse" and targets.shape != output.shape):
        raise ValueError(
            f"targets must fit the model output {tuple(output.shape)} for {type(loss.function).__name__}, "
            f"got shape {tuple(targets.shape)}"
        )
    if loss.kind == "cross_entropy" and not targets.is_floating_point():
        ignore = int(loss.function.ignore_index)  # type: ignore[arg-type]
        if bool((targets == ignore).any()):
            raise ValueError(f"targets must not hold the loss's ignore_index={ignore} (every sample counts)")
    return targets


def mean_divisor(output: torch.Tensor, loss: Loss) -> int:
    """What the loss's mean divides by: ``N`` (cross-entropy), ``N*C`` (MSE); 1 for a sum."""
    if loss.reduction == "sum":
        return 1
    return output.shape[0] if loss.kind == "cross_entropy" else output.numel()


def loss_gradient(output: torch.Tensor, targets: torch.Tensor, loss: Loss) -> torch.Tensor:
    """The gradient ``(N, C)`` of the loss w.r.t. the model output."""
    leaf = output.detach().requires_grad_()
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(loss.function(leaf, targets), leaf)
    return gradient


def fisher_columns(
    output: torch.Tensor, targets: torch.Tensor | None, loss: Loss, fisher: str, mc_samples: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The columns ``(M, N, C)`` of ``fisher`` (one of ``FISHERS``) for this batch (``targets``: empirical only)."""
    if fisher == "empirical":
        assert targets is not None  # the gradient of the loss on them
        return loss_gradient(output, targets, loss)[None] * math.sqrt(mean_divisor(output, loss))
    samples = mc_samples if fisher == "mc" else None
    return sqrt_ggn(output, loss.kind, loss.reduction, mc_samples=samples, generator=generator)
