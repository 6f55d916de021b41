"""The KFAC preconditioner: ``(B + damping I)^{-1} G (A + damping I)^{-1}`` per layer and group.

``G`` is a layer's gradient as a ``(G, dB, dA)`` matrix per group (``factors.weight_matrix``; with the bias
as a trailing column when it is folded into ``A``). The damped inverses of the factors (``inverses.invert``:
symmetrised, Cholesky, an eigenvalue fallback for indefinite factors) are computed on the first call and then
on every ``invert_every``-th call (``step()`` or a call on gradients) at which the factors changed, and at once
after the damping changed; in between the same inverses are applied: two matrix products per layer, batched
over the groups and the layers whose factors share a shape (``inverses.Stack``). Non-finite factors raise a
ValueError naming the layer, never a raw linear-algebra error.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Mapping

import torch

from tnconv.curvature.factors import bias_matrix, matrix_weight, weight_matrix
from tnconv.curvature.inverses import Stack, StackKey, invert
from tnconv.curvature.kfac_batch import check_factors
from tnconv.curvature.supported import Layer

if TYPE_CHECKING:
    from tnconv.curvature.kfac import KFAC


def check_damping(damping: object) -> float:
    """``damping`` must be a finite number > 0; returns it as a float."""
    if isinstance(damping, bool) or not isinstance(damping, (int, float)):
        raise TypeError(f"damping must be a number, got {type(damping).__name__}")
    if not math.isfinite(damping) or damping <= 0:
        raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
    return float(damping)


class Preconditioner:
    """Applies KFAC's damped inverse to gradients; ``step()`` writes the result into ``.grad``.

    Args:
        kfac: the ``KFAC`` whose factors it uses.
        damping: a number > 0 added to the diagonal of both factors; ``preconditioner.damping`` may be set
            between steps and takes effect at the next call (its inverses are recomputed then).
        invert_every: the inverses are recomputed on the first call and on every ``invert_every``-th call
            after it (where the factors changed since), and reused in between.

    Layers without factors (they did not run) are left alone. A layer whose weight is computed
    (a parametrization or pruning) has factors of that effective weight, keyed
    ``layer name + ".weight"``: given its gradient under that key, the preconditioner returns it
    preconditioned; ``step()`` leaves such layers alone (their ``.grad`` belong to the tensors the
    weight is computed from).

    A factor that is finite but not positive definite after damping (the factors of a diverging run) is
    inverted with its eigenvalues below 0 raised to 0, with one warning per preconditioner; a factor that is not
    finite raises a ValueError naming the layer.
    """

    def __init__(self, kfac: KFAC, damping: float, invert_every: int = 1) -> None:
        self._damping = check_damping(damping)
        if isinstance(invert_every, bool) or not isinstance(invert_every, int):
            raise TypeError(f"invert_every must be an int, got {type(invert_every).__name__}")
        if invert_every < 1:
            raise ValueError(f"invert_every must be >= 1, got {invert_every}")
        self.kfac, self.invert_every = kfac, invert_every
        self._parameters = dict(kfac.model.named_parameters())
        self._shapes = {name: p.shape for name, p in self._parameters.items()}
        for layer in kfac.layers:
            self._shapes.setdefault(layer.weight, layer.weight_shape)
        self._calls = 0
        self._inverted: tuple[int, float] | None = None  # (KFAC.version, damping) of the inverses held
        self._stacks: dict[StackKey, Stack] = {}
        self._warned = False

    @property
    def damping(self) -> float:
        """The number added to the diagonal of both factors (a finite number > 0; settable between steps)."""
        return self._damping

    @damping.setter
    def damping(self, value: float) -> None:
        self._damping = check_damping(value)

    def _inverses(self) -> dict[StackKey, Stack]:
        """The inverses to apply at this call: recomputed on the first call, after the damping changed, and on
        every ``invert_every``-th call where the factors changed since the last inversion."""
        due = self._calls % self.invert_every == 0
        inverted = self._inverted
        if inverted is None or inverted[1] != self._damping or (due and inverted[0] != self.kfac.version):
            self._invert()
        return self._stacks

    def _invert(self) -> None:
        """Compute the damped inverses of the current factors (one warning, once, for indefinite ones)."""
        factors = self.kfac._layer_factors()
        if not factors:
            raise ValueError("the KFAC has no factors yet: call update(inputs, targets) or run a track() block first")
        check_factors(factors, "layer {name!r}: its factor {which} is not finite (NaN or inf), so it cannot "
                               "precondition")
        self._inverted = None  # until the stacks are whole again
        self._stacks, clamped = invert(factors, self._damping, self._stacks or None)
        self._inverted = (self.kfac.version, self._damping)
        if clamped and not self._warned:
            self._warned = True
            warnings.warn(
                f"{', '.join(clamped)}: not positive definite after damping (damping={self._damping}), so their "
                f"eigenvalues below 0 were raised to 0 (this preconditioner says so once): the factors may hold the "
                f"curvature of a diverging run; a larger damping, a smaller learning rate or fresh factors help "
                f"(docs/training.md, 'When a run diverges')",
                UserWarning,
                stacklevel=4,  # the caller of step() or of the preconditioner
            )

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
        stacks = self._inverses()
        layers = {layer.name: layer for layer in self.kfac.layers}
        result: dict[str, torch.Tensor] = {}
        for stack in stacks.values():
            result.update(self._apply(stack, [layers[name] for name in stack.slots], gradients))
        self._calls += 1
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

    def _matrix(self, layer: Layer, gradients: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The layer's gradient as ``(G, dB, dA)`` (the bias as a last column when it is folded into ``A``), None
        when it has none in ``gradients``."""
        weight = gradients.get(layer.weight)
        if layer.bias is None or self.kfac.separate_bias:
            return None if weight is None else weight_matrix(weight, layer.layout)
        bias = gradients.get(layer.bias)
        if (weight is None) != (bias is None):
            raise ValueError(
                f"gradients must hold both {layer.weight!r} and {layer.bias!r} or neither: "
                f"the bias is folded into A (separate_bias=False)"
            )
        if weight is None or bias is None:
            return None
        return torch.cat([weight_matrix(weight, layer.layout), bias_matrix(bias, layer.layout)], dim=2)

    def _apply(
        self, stack: Stack, layers: list[Layer], gradients: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``(B + damping I)^{-1} G (A + damping I)^{-1}`` for the layers of one stack: one batched pair of products
        when every layer has its gradient, else one pair per layer; a separate bias gets ``(B + damping I)^{-1}``."""
        matrices = {layer.name: self._matrix(layer, gradients) for layer in layers}
        present = {name: matrix for name, matrix in matrices.items() if matrix is not None}
        solved: dict[str, torch.Tensor] = {}
        if len(present) == len(layers) > 1:
            joined = torch.cat([matrix.to(stack.a.dtype) for matrix in present.values()])
            products = (stack.b @ joined @ stack.a).split([slot.stop - slot.start for slot in stack.slots.values()])
            solved = dict(zip(present, products))
        else:
            for name, matrix in present.items():
                slot = stack.slots[name]
                solved[name] = stack.b[slot] @ matrix.to(stack.a.dtype) @ stack.a[slot]
        result: dict[str, torch.Tensor] = {}
        for layer in layers:
            result.update(self._unpack(layer, solved.get(layer.name), stack.b[stack.slots[layer.name]], gradients))
        return result

    def _unpack(
        self, layer: Layer, solved: torch.Tensor | None, inverse_b: torch.Tensor, gradients: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One layer's preconditioned weight and bias, in their gradients' shapes and dtypes, from its ``solved``
        matrix (None: no weight gradient); a separate bias multiplied by ``inverse_b`` here."""
        result: dict[str, torch.Tensor] = {}
        if solved is not None:
            weight = gradients[layer.weight]
            joined = layer.bias is not None and not self.kfac.separate_bias
            matrix = solved[:, :, :-1] if joined else solved
            result[layer.weight] = matrix_weight(matrix, layer.layout, layer.weight_shape).to(weight.dtype)
            if joined and layer.bias is not None:
                result[layer.bias] = solved[:, :, -1].reshape(-1).to(gradients[layer.bias].dtype)
        if layer.bias is not None and self.kfac.separate_bias and layer.bias in gradients:
            bias = gradients[layer.bias]
            solved_bias = inverse_b @ bias_matrix(bias, layer.layout).to(inverse_b.dtype)
            result[layer.bias] = solved_bias.reshape(-1).to(bias.dtype)
        return result

    def step(self) -> None:
        """Replace every supported layer's ``.grad`` (where set) by its preconditioned value, in place."""
        with torch.no_grad():
            for name, value in self().items():
                grad = self._parameters[name].grad
                assert grad is not None  # only set gradients are preconditioned
                grad.copy_(value)
