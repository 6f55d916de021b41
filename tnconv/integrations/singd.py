"""``SINGD``: the optimizer of the ``singd`` package, with its conv layers' statistics from tnconv.

``SINGD`` subclasses ``singd.optim.optimizer.SINGD`` (same constructor, same semantics, same
state) and replaces what singd does to a conv layer's input: singd unfolds it (KFAC-expand)
or contracts it with dense index-pattern tensors (KFAC-reduce); here each structure of ``K``
gets only what it reads of the input factor, from tnconv's routines
(``tnconv.integrations.singd_inputs``): the patch sums (reduce), the squared patches summed
(expand, diagonal), the diagonal blocks or the whole Gram by tnconv's KFAC-expand path
(expand, other structures). The input term is computed in singd's forward hook, so that the
output's tensor hook holds it rather than the layer input (singd's holds the input until the
output tensor goes, which kept about 10 MB more at the peak of a ResNet-18 step at 224x224,
batch 8). The output side (``C``, from the output gradients) and the update are singd's own.
``Linear`` layers, which singd handles without patches, are left to singd.

Layers: ``Linear``, ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` and their ``tnconv.nn`` twins
(``ConvNd`` of any N), every padding mode, asymmetric and ``"same"`` padding (singd itself:
``Conv2d`` with zeros padding and ``Linear``). Channel groups follow singd's convention: the
input's groups are averaged and one ``K`` of size ``C_in / G * prod(K)`` serves the layer. A
``ConvTranspose`` weight ``(C_in, C_out / G, *K)`` is read as the matrix ``(C_out, C_in / G * prod(K))``
of its patches (``tnconv.curvature.factors.weight_matrix``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Iterator

import torch
import torch.distributed as dist
from singd.optim.optimizer import SINGD as SingdSINGD
from singd.optim.utils import conv2d_process_grad_output
from singd.structures.base import StructuredMatrix
from singd.structures.diagonal import DiagonalMatrix

from tnconv.curvature.factors import Geometry, geometry, layout, matrix_weight, weight_matrix
from tnconv.curvature.hooks import SUPPORTED
from tnconv.integrations.singd_inputs import input_term

__all__ = ["SINGD"]

CHUNK = 2**18
"""Elements of a weight's natural gradient formed at a time with diagonal ``K`` and ``C`` (1 MB in float32)."""

Piece = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
"""(A chunk of) a parameter, its natural gradient and its momentum buffer (None without momentum)."""

SINGD_OWN = (torch.nn.Linear, torch.nn.Conv2d)
"""Layers whose weight singd reshapes itself (its dimensions, and its natural gradient but for diagonal structures,
stay singd's)."""


class SINGD(SingdSINGD):
    """singd's ``SINGD`` (see its documentation for the arguments) with conv statistics from tnconv.

    Where singd supports the layer (``Conv2d`` with zeros padding, ``Linear``), parameters
    after any number of steps equal singd's own to rounding, for every structure and both
    ``kfac_approx``; channel groups are averaged, as singd does.
    """

    SUPPORTED_MODULES = SUPPORTED

    @staticmethod
    def preconditioner_dims(module: torch.nn.Module) -> tuple[int, int]:
        """``(dim_K, dim_C)``: the weight as a matrix ``(C_out, C_in / G * prod(K))``, plus one column for a bias."""
        if isinstance(module, SINGD_OWN):
            return SingdSINGD.preconditioner_dims(module)
        rows, columns = _matrix_shape(module)
        return columns + (module.bias is not None), rows

    def _register_tensor_hook_on_output_to_accumulate_H_terms(
        self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        """singd's forward hook. For a conv layer the input term ``H_K`` is computed here, from the input as the
        layer read it, and the output's tensor hook holds that term (``_accumulate_terms``) where singd's holds
        the input until the backward pass reaches the layer."""
        if isinstance(module, torch.nn.Linear):
            return super()._register_tensor_hook_on_output_to_accumulate_H_terms(module, inputs, output)
        if torch.is_grad_enabled() and self.steps % self._get_param_group_entry(module, "T") == 0:
            name = self.module_names[module]
            (dtype_K, _), _ = self._get_preconditioner_dtypes_and_device(module)
            approx = self._get_param_group_entry(module, "kfac_approx")
            x, layer = geometry(name, module, inputs[0].detach().to(dtype_K), output)
            H_K = input_term(self.Ks[name], x, layer, approx == "expand", module.bias is not None)
            output.register_hook(partial(self._accumulate_terms, module, H_K))
        return None

    def _accumulate_terms(self, module: torch.nn.Module, H_K: StructuredMatrix, grad_output: torch.Tensor) -> None:
        """Add the batch's ``H_K`` and ``H_C`` (singd's processing of the output gradient) to the layer's
        accumulators, as singd's ``_accumulate_H_terms`` does."""
        name = self.module_names[module]
        (_, dtype_C), _ = self._get_preconditioner_dtypes_and_device(module)
        approx = self._get_param_group_entry(module, "kfac_approx")
        # singd's processing of a Conv2d output gradient, on the locations as one spatial dim
        g = grad_output.data.to(dtype_C).flatten(2).unsqueeze(-1)
        g = conv2d_process_grad_output(g, self._get_param_group_entry(module, "loss_average"), 1.0, approx)
        prev_grad_scale = self._get_grad_scale(self.steps - 1)
        if prev_grad_scale != 1.0:  # the rest of the unscaling happens in the preconditioner update (singd)
            g = g / math.sqrt(prev_grad_scale)
        H_C = self.Cs[name].from_inner(X=g.T)
        if dist.is_initialized():
            op = dist.ReduceOp.AVG if self._get_param_group_entry(module, "loss_average") else dist.ReduceOp.SUM
            H_K.all_reduce(op=op)
            H_C.all_reduce(op=op)
        self.H_Ks[name] = self.H_Ks[name].add_(H_K) if name in self.H_Ks else H_K
        self.H_Cs[name] = self.H_Cs[name].add_(H_C) if name in self.H_Cs else H_C

    def _step(self) -> None:
        """singd's step: each layer's preconditioner update, then its parameters' descent along the natural gradient
        with singd's weight decay and momentum.

        With diagonal ``K`` and ``C`` the natural gradient of a weight whose first dim holds the rows of its
        matrix (``Linear``, ``Conv``) is formed ``CHUNK`` elements at a time, each chunk applied before the next
        (``_diagonal_pieces``): no temporary of the weight's size (VGG-19's 25088 x 4096 classifier: 392 MB at
        the peak of a step), and a chunk stays in the cache from the scaling through the descent.
        """
        for module in self.module_names:
            self._update_preconditioner(module)
            parameters = [parameter.data for parameter in _parameters(module)]
            buffers = [self._momentum_buffer(module, parameter) for parameter in _parameters(module)]
            if self._chunked(module):
                pieces = self._diagonal_pieces(module, parameters, buffers)
            else:
                pieces = zip(parameters, self._compute_natural_gradient(module), buffers)
            for parameter, natural, buffer in pieces:
                self._descend(module, parameter, natural, buffer)

    def _chunked(self, module: torch.nn.Module) -> bool:
        """Whether the layer's natural gradient is formed in chunks: ``K`` and ``C`` diagonal, weight rows first."""
        name = self.module_names[module]
        diagonal = isinstance(self.Ks[name], DiagonalMatrix) and isinstance(self.Cs[name], DiagonalMatrix)
        return diagonal and layout(module).kind != "transposed"

    def _momentum_buffer(self, module: torch.nn.Module, parameter: torch.nn.Parameter) -> torch.Tensor | None:
        """singd's momentum buffer of ``parameter`` (zeros when new); None without momentum."""
        if self._get_param_group_entry(module, "momentum") == 0.0:
            return None
        state = self.state[parameter]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(parameter.data)
        buffer: torch.Tensor = state["momentum_buffer"]
        return buffer

    def _descend(self, module: torch.nn.Module, parameter: torch.Tensor, natural: torch.Tensor,
                 buffer: torch.Tensor | None) -> None:  # fmt: skip
        """singd's update of (a chunk of) a parameter from its natural gradient: weight decay (added to ``natural``
        in place), momentum (``buffer``, in place), descent by the learning rate."""
        weight_decay = self._get_param_group_entry(module, "weight_decay")
        if weight_decay != 0.0:
            natural.add_(parameter, alpha=weight_decay)
        if buffer is not None:
            natural = buffer.mul_(self._get_param_group_entry(module, "momentum")).add_(natural)
        parameter.add_(natural, alpha=-self._get_param_group_entry(module, "lr"))

    def _diagonal_pieces(self, module: torch.nn.Module, parameters: list[torch.Tensor],
                         buffers: list[torch.Tensor | None]) -> Iterator[Piece]:  # fmt: skip
        """``(parameter, natural gradient, momentum buffer)`` in chunks of the weight's rows (then the bias) for
        diagonal ``K`` and ``C``: the gradient scaled by ``c_i^2 k_j^2`` (see ``_compute_natural_gradient``)."""
        (weight_grad, bias_grad), (columns_of_k, rows_of_c) = _gradients(module), self._diagonal_scales(module)
        weight, weight_buffer = parameters[0], buffers[0]
        columns = weight[0].numel()
        scales = columns_of_k[:columns].reshape(weight.shape[1:])
        step = max(1, CHUNK // max(1, columns))
        for start in range(0, weight.shape[0], step):
            rows = slice(start, start + step)
            scaled = self._scaled(module, weight_grad[rows], scales, rows_of_c[rows].reshape(-1, *(1,) * scales.ndim))
            yield weight[rows], scaled, None if weight_buffer is None else weight_buffer[rows]
        if bias_grad is not None:
            yield parameters[1], self._scaled(module, bias_grad, columns_of_k[columns], rows_of_c), buffers[1]

    def _diagonal_scales(self, module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """``k_j^2`` ``(dim_K,)`` and ``c_i^2`` ``(dim_C,)`` (divided by the step's gradient scale) of diagonal ``K``
        and ``C``."""
        name = self.module_names[module]
        k2, c2 = _entries(self.Ks[name]).square(), _entries(self.Cs[name]).square()
        grad_scale = self._get_grad_scale(self.steps)
        return k2, c2 / grad_scale if grad_scale != 1.0 else c2

    def _scaled(self, module: torch.nn.Module, gradient: torch.Tensor, columns: torch.Tensor,
                rows: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The natural gradient ``gradient * columns * rows`` (broadcast) in ``K``'s then ``C``'s dtype, averaged
        over data-parallel processes: a new tensor in the gradient's dtype."""
        (dtype_K, dtype_C), _ = self._get_preconditioner_dtypes_and_device(module)
        natural = (gradient.to(dtype_K) * columns).to(dtype_C).mul_(rows).to(gradient.dtype)
        return self._all_reduce(module, natural)

    def _compute_natural_gradient(self, module: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        """``C C^T G K K^T`` for the layer's gradient ``G`` as a matrix (``tnconv.curvature.factors.weight_matrix``),
        back in the parameters' shapes.

        With diagonal ``K`` and ``C`` (any layer) that is ``G`` scaled by ``c_i^2 k_j^2``: one product and one
        scaling in place, where singd forms four products and two copies of the matrix (VGG-19's 25088 x 4096
        ``Linear``: 3.2 s -> 0.8 s of a step, one temporary of the weight's size instead of three; ``_step``
        forms it in chunks). Other structures: singd's own for ``Linear`` and ``Conv2d``, its products on the
        weight matrix for the others.
        """
        name = self.module_names[module]
        K, C = self.Ks[name], self.Cs[name]
        diagonal = isinstance(K, DiagonalMatrix) and isinstance(C, DiagonalMatrix)
        if isinstance(module, SINGD_OWN) and not diagonal:
            return super()._compute_natural_gradient(module)
        shape, (weight_grad, bias_grad) = layout(module), _gradients(module)
        matrix = _as_matrix(weight_grad, shape)
        columns = matrix.shape[1]
        if diagonal:
            k2, c2 = self._diagonal_scales(module)
            natural = [self._scaled(module, matrix, k2[:columns], c2[:, None])]
            if bias_grad is not None:
                natural.append(self._scaled(module, bias_grad, k2[columns], c2))
        else:
            (dtype_K, dtype_C), _ = self._get_preconditioner_dtypes_and_device(module)
            grad_scale = self._get_grad_scale(self.steps)
            grad = matrix if bias_grad is None else torch.cat([matrix, bias_grad.unsqueeze(1)], dim=1)
            if grad_scale != 1.0:
                grad = grad / grad_scale
            joint = (K @ K.rmatmat(grad.T.to(dtype_K))).T
            joint = self._all_reduce(module, (C @ C.rmatmat(joint.to(dtype_C))).to(grad.dtype))
            natural = [joint[:, :columns], *([joint[:, -1]] if bias_grad is not None else [])]
        weight = _as_weight(natural[0], shape, weight_grad.shape)
        return (weight,) if bias_grad is None else (weight, natural[1].reshape_as(bias_grad))

    def _all_reduce(self, module: torch.nn.Module, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` averaged (summed for a summed loss) over the data-parallel processes in place, as singd's
        natural gradient; itself when none run."""
        if dist.is_initialized():
            loss_average = self._get_param_group_entry(module, "loss_average")
            dist.all_reduce(tensor, op=dist.ReduceOp.AVG if loss_average else dist.ReduceOp.SUM)
        return tensor


def _entries(matrix: DiagonalMatrix) -> torch.Tensor:
    """The diagonal of a singd ``DiagonalMatrix`` (its one registered tensor)."""
    (diagonal,) = (tensor for _, tensor in matrix.named_tensors())
    return diagonal


def _parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The layer's weight and its bias (when it has one), as singd steps them."""
    parameters = [module.weight] if module.bias is None else [module.weight, module.bias]
    assert all(isinstance(parameter, torch.nn.Parameter) for parameter in parameters)  # singd steps layers of these
    return parameters  # type: ignore[return-value]


def _gradients(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradients of the layer's weight and bias (None without a bias)."""
    weight, bias = module.weight, module.bias
    assert isinstance(weight, torch.Tensor) and weight.grad is not None  # singd steps layers that have gradients
    return weight.grad.data, None if not isinstance(bias, torch.Tensor) or bias.grad is None else bias.grad.data


def _matrix_shape(module: Any) -> tuple[int, int]:
    """The weight of a conv layer as a matrix (singd's ``C`` by ``K`` without bias): ``(C_out, C_in / G * prod(K))``."""
    return module.out_channels, module.in_channels // module.groups * math.prod(module.kernel_size)


def _as_matrix(weight: torch.Tensor, shape: Geometry) -> torch.Tensor:
    """A conv weight-shaped tensor as ``(C_out, C_in / G * prod(K))``, columns in the order of the patches."""
    return weight_matrix(weight, shape).flatten(0, 1)


def _as_weight(matrix: torch.Tensor, shape: Geometry, weight_shape: torch.Size) -> torch.Tensor:
    """The inverse of ``_as_matrix``."""
    return matrix_weight(matrix.unflatten(0, (shape.groups, -1)), shape, weight_shape)
