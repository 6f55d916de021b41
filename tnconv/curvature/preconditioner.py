"""The KFAC preconditioner: ``(B + damping I)^{-1} G (A + damping I)^{-1}`` per layer and group.

``G`` is a layer's gradient as a ``(G, dB, dA)`` matrix per group (``factors.weight_matrix``;
with the bias as a trailing column when it is folded into ``A``). The damped factors are
Cholesky-factorised once per change of the factors (``KFAC.version``): the first call after
an ``update`` or ``load_state_dict`` factorises, later calls reuse them. A factor that is not
finite, or not positive definite after damping (a diverging run), raises a ValueError naming
the layer and group, never a raw linear-algebra error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import torch

from tnconv.curvature.factors import bias_matrix, matrix_weight, weight_matrix
from tnconv.curvature.supported import Layer

if TYPE_CHECKING:
    from tnconv.curvature.kfac import KFAC


def damped_cholesky(factor: torch.Tensor, damping: float, layer: str, which: str) -> torch.Tensor:
    """The lower Cholesky factor of ``factor + damping I`` (batched over groups), for the factor ``which`` ("A" or
    "B") of ``layer``; a ValueError naming them and the group where the factor is not finite or not positive
    definite after damping."""
    if not bool(factor.isfinite().all()):
        raise ValueError(f"layer {layer!r}: its factor {which} is not finite (NaN or inf), so it cannot precondition")
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    lower, info = torch.linalg.cholesky_ex(factor + damping * eye)
    failed = torch.nonzero(info).flatten().tolist()
    if failed:
        group = failed[0]
        raise ValueError(
            f"layer {layer!r}, group {group}: its factor {which} + damping * I (damping={damping}) is not positive "
            f"definite (its leading minor of order {int(info[group])} is not): the factors may hold the curvature of "
            f"a diverging run; a larger damping, a smaller learning rate or fresh factors help "
            f"(docs/whole-models.md, 'Learning rate, damping and momentum')"
        )
    return lower


def solve_both(matrix: torch.Tensor, left: torch.Tensor, right: torch.Tensor | None) -> torch.Tensor:
    """``(L_B L_B^T)^{-1} matrix (L_A L_A^T)^{-1}`` for ``matrix`` ``(G, dB, dA)`` (no right factor: ``dA = 1``).

    The solves run in the factors' dtype (float32 for a float16/bfloat16 model, whose factors
    ``KFAC`` sums in float32) and the result returns in ``matrix``'s dtype.
    """
    dtype = matrix.dtype
    matrix = matrix.to(left.dtype)
    if right is not None:
        matrix = torch.cholesky_solve(matrix.transpose(1, 2), right).transpose(1, 2)
    return torch.cholesky_solve(matrix, left).to(dtype)


class Preconditioner:
    """Applies KFAC's damped inverse to gradients; ``step()`` writes the result into ``.grad``.

    Args:
        kfac: the ``KFAC`` whose factors it uses (always its current ones).
        damping: a number > 0 added to the diagonal of both factors.

    Layers without factors (they did not run) are left alone. A layer whose weight is computed
    (a parametrization or pruning) has factors of that effective weight, keyed
    ``layer name + ".weight"``: given its gradient under that key, the preconditioner returns it
    preconditioned; ``step()`` leaves such layers alone (their ``.grad`` belong to the tensors the
    weight is computed from).
    """

    def __init__(self, kfac: KFAC, damping: float) -> None:
        if isinstance(damping, bool) or not isinstance(damping, (int, float)):
            raise TypeError(f"damping must be a number, got {type(damping).__name__}")
        if not math.isfinite(damping) or damping <= 0:
            raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
        self.kfac, self.damping = kfac, float(damping)
        self._parameters = dict(kfac.model.named_parameters())
        self._shapes = {name: p.shape for name, p in self._parameters.items()}
        for layer in kfac.layers:
            self._shapes.setdefault(layer.weight, layer.weight_shape)
        self._version: int | None = None
        self._cholesky: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _choleskys(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Layer name -> Cholesky factors of ``(A + damping I, B + damping I)``, recomputed when the factors changed."""
        if self._version != self.kfac.version:
            factors = self.kfac._layer_factors()
            if not factors:
                raise ValueError("the KFAC has no factors yet: call update(inputs, targets) first")
            self._cholesky = {
                name: (damped_cholesky(a, self.damping, name, "A"), damped_cholesky(b, self.damping, name, "B"))
                for name, (a, b) in factors.items()
            }
            self._version = self.kfac.version
        return self._cholesky

    def __call__(self, gradients: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The preconditioned gradients of the supported layers' parameters.

        Args:
            gradients: key -> gradient shaped like the parameter (default: the parameters' ``.grad``
                where set, except those of layers with a computed weight); keys are parameter names,
                or ``layer name + ".weight"`` for a computed weight. With the bias folded into ``A``,
                a layer's weight and bias gradients come together or not at all.

        Returns:
            Key -> preconditioned gradient, for each given gradient of a supported layer that has
            factors (others are left out).
        """
        if gradients is None:
            gradients = self._set_gradients()
        elif not isinstance(gradients, Mapping):
            raise TypeError(f"gradients must be a dict parameter name -> tensor, got {type(gradients).__name__}")
        for name, gradient in gradients.items():
            self._check_gradient(name, gradient)
        choleskys = self._choleskys()
        result: dict[str, torch.Tensor] = {}
        for layer in self.kfac.layers:
            if layer.name in choleskys:
                result.update(self._precondition(layer, gradients, *choleskys[layer.name]))
        return result

    def _set_gradients(self) -> dict[str, torch.Tensor]:
        """The parameters' ``.grad`` where set, without those of layers whose weight is computed (not a parameter)."""
        computed = {key for layer in self.kfac.layers if layer.weight not in self._parameters
                    for key in (layer.weight, layer.bias)}  # fmt: skip
        return {name: p.grad for name, p in self._parameters.items() if p.grad is not None and name not in computed}

    def _check_gradient(self, name: str, gradient: object) -> None:
        """``gradient`` must be a tensor shaped like the parameter (or computed weight) ``name``."""
        if not isinstance(gradient, torch.Tensor):
            raise TypeError(f"gradients[{name!r}] must be a torch.Tensor, got {type(gradient).__name__}")
        shape = self._shapes.get(name)
        if shape is None:
            raise ValueError(f"gradients has {name!r}, which is not a parameter of the model")
        if gradient.shape != shape:
            raise ValueError(
                f"gradients[{name!r}] must have the parameter's shape {tuple(shape)}, got {tuple(gradient.shape)}"
            )

    def _precondition(
        self, layer: Layer, gradients: Mapping[str, torch.Tensor], chol_a: torch.Tensor, chol_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One layer's preconditioned weight and bias gradients (those present in ``gradients``)."""
        weight = gradients.get(layer.weight)
        bias = None if layer.bias is None else gradients.get(layer.bias)
        shape = layer.weight_shape
        result: dict[str, torch.Tensor] = {}
        if layer.bias is not None and not self.kfac.separate_bias:
            if (weight is None) != (bias is None):
                raise ValueError(
                    f"gradients must hold both {layer.weight!r} and {layer.bias!r} or neither: "
                    f"the bias is folded into A (separate_bias=False)"
                )
            if weight is None or bias is None:
                return result
            joined = torch.cat([weight_matrix(weight, layer.layout), bias_matrix(bias, layer.layout)], dim=2)
            solved = solve_both(joined, chol_b, chol_a)
            result[layer.weight] = matrix_weight(solved[:, :, :-1], layer.layout, shape)
            result[layer.bias] = solved[:, :, -1].reshape(-1)
            return result
        if weight is not None:
            solved = solve_both(weight_matrix(weight, layer.layout), chol_b, chol_a)
            result[layer.weight] = matrix_weight(solved, layer.layout, shape)
        if bias is not None and layer.bias is not None:
            result[layer.bias] = solve_both(bias_matrix(bias, layer.layout), chol_b, None).reshape(-1)
        return result

    def step(self) -> None:
        """Replace every supported layer's ``.grad`` (where set) by its preconditioned value, in place."""
        with torch.no_grad():
            for name, value in self().items():
                grad = self._parameters[name].grad
                assert grad is not None  # only set gradients are preconditioned
                grad.copy_(value)
