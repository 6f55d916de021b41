"""Symmetric factorisations of a loss Hessian, and their pullback to a layer output."""

from __future__ import annotations

import math
from typing import Callable

import torch

from tnconv.conv.checks import check_tensor
from tnconv.limits import check_allocation

LOSSES = ("cross_entropy", "mse")
REDUCTIONS = ("mean", "sum")


def sqrt_ggn(
    output: torch.Tensor, loss: str = "cross_entropy", reduction: str = "mean", mc_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A symmetric factorisation ``S`` (``(M, N, C)``) of the loss Hessian w.r.t. the model output.

    ``sum_m S[m, n] S[m, n]^T`` is the Hessian of sample n's loss term w.r.t.
    ``output[n]`` (``(N, C)``), exactly with ``M = C`` columns when ``mc_samples``
    is None, in expectation with ``M = mc_samples`` random columns otherwise.

    - ``"cross_entropy"`` (``torch.nn.functional.cross_entropy`` on logits):
      ``H = diag(p) - p p^T`` with ``p = softmax(output)``; exact columns
      ``diag(sqrt p) - p sqrt(p)^T``, sampled ones ``(p - onehot(y)) / sqrt(M)`` with ``y ~ p``.
    - ``"mse"`` (``torch.nn.functional.mse_loss``): ``H = 2 I``; exact columns
      ``sqrt(2) I``, sampled ones ``sqrt(2) * eps / sqrt(M)`` with ``eps ~ N(0, I)``.

    ``reduction`` as in torch: ``"mean"`` divides by N (cross-entropy) or by
    ``N*C`` (MSE), so the columns are scaled by the square root of that.
    The Hessians do not depend on the targets, so none are needed.

    ``output`` is detached: the columns are constants for autograd (curvature is
    not differentiated further), whatever graph ``output`` belongs to.
    ``generator`` (a ``torch.Generator``) draws the Monte-Carlo columns.
    """
    output = check_tensor(output, "output", ndim=2, min_ndim=2)
    if output.shape[0] == 0 or output.shape[1] == 0:
        raise ValueError(f"output must hold at least one sample and one class, got shape {tuple(output.shape)}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1):
        raise ValueError(f"mc_samples must be None or an int >= 1, got {mc_samples!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} ({type(generator).__name__})")
    output = output.detach()
    if mc_samples is not None and loss == "cross_entropy" and not bool(output.isfinite().all()):
        bad = int((~output.isfinite()).sum())
        raise ValueError(
            f"output (the logits) must be finite to sample labels from softmax(output), got {bad} NaN or inf "
            f"entr{'y' if bad == 1 else 'ies'} in shape {tuple(output.shape)}"
        )
    batch, classes = output.shape
    draws = classes if mc_samples is None else mc_samples
    check_allocation(draws * batch * classes, output.dtype.itemsize,
                     f"the GGN columns (M, N, C) = ({draws}, {batch}, {classes}) (M: mc_samples={mc_samples})")
    if loss == "cross_entropy":
        p = output.softmax(dim=1)
        if mc_samples is None:
            root = p.sqrt()
            columns = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]  # [n, c, m]
            columns = columns.permute(2, 0, 1)
        else:
            source = p if generator is None else p.to(generator.device)
            labels = torch.multinomial(source, draws, replacement=True, generator=generator).to(p.device)  # [n, m]
            onehot = torch.nn.functional.one_hot(labels.T, classes).to(p.dtype)  # [m, n, c]
            columns = (p[None] - onehot) / math.sqrt(draws)
        count = batch
    else:
        if mc_samples is None:
            columns = math.sqrt(2.0) * torch.eye(classes, dtype=output.dtype, device=output.device)[:, None, :]
            columns = columns.expand(classes, batch, classes).clone()
        else:
            device = output.device if generator is None else generator.device
            noise = torch.randn(draws, batch, classes, generator=generator, dtype=output.dtype, device=device)
            columns = math.sqrt(2.0 / draws) * noise.to(output.device)
        count = batch * classes
    return columns / math.sqrt(count) if reduction == "mean" else columns


def pullback(
    columns: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], layer_output: torch.Tensor
) -> torch.Tensor:
    """Carry GGN columns ``(M, *function(layer_output).shape)`` back to ``(M, *layer_output.shape)``.

    ``function`` maps the layer output to the model output; each column is
    multiplied by its transposed Jacobian (``torch.func.vjp``, batched over M).
    The result is the ``sqrt_ggn`` argument of ``diag_ggn_weight``.

    ``layer_output`` is detached (``function`` is linearised at its value, and
    the result is a constant for autograd); ``columns`` must be shaped
    ``(M, *function(layer_output).shape)``.
    """
    columns = check_tensor(columns, "columns", min_ndim=2)
    layer_output = check_tensor(layer_output, "layer_output", min_ndim=1)
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    # torch.func.vjp's annotation unions in the has_aux=True triple; without has_aux it returns a pair
    model_output, vjp = torch.func.vjp(function, layer_output.detach())  # type: ignore[misc]
    if not isinstance(model_output, torch.Tensor):
        raise TypeError(f"function must return one tensor (the model output), got {type(model_output).__name__}")
    if tuple(columns.shape[1:]) != tuple(model_output.shape):
        raise ValueError(
            f"columns must have shape (M, *function(layer_output).shape) = (M, {', '.join(map(str, model_output.shape))}), "
            f"got {tuple(columns.shape)}"
        )
    (result,) = torch.func.vmap(vjp)(columns)
    return result
