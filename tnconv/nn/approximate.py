"""Approximate backprop: every conv layer of a model gets a tensor-dropout weight gradient.

``approximate_backprop(model, keep, mode)`` replaces the ``forward`` of each
supported conv layer (an instance attribute, so the class is untouched) by an
``EstimatedForward`` (an object that holds its layer: copies and pickles of the
model carry their own) that runs the same convolution through
``EstimatedWeightGradConv``, an autograd function whose backward returns

- the exact input gradient (PyTorch's ``convolution_backward``, or
  ``tnconv.functional.conv_input_vjp`` beyond 3 dims and for asymmetric padding),
- the exact bias gradient (``grad_output`` summed over batch and positions),
- the weight gradient estimated by ``tnconv.curvature.weight_vjp_dropout``
  (through ``torch.ops.tnconv.seeded_weight_vjp_dropout``, one random stream
  per layer, so that ``torch.compile`` traces the whole model).

Supported layers: ``torch.nn.Conv1d/2d/3d`` and ``tnconv.nn.Conv1d/2d/3d/ConvNd``
with any padding (ints, pairs, ``"same"``/``"valid"``) and padding mode (a
non-zero mode pads the input first, as torch does, and the padding's
gradient is exact). Transposed convolutions, and subclasses that override
``forward`` or ``_conv_forward``, keep their exact gradients. ``exact_gradients(model)``
sets the estimates aside for a while (``tnconv.curvature`` runs its forwards so).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn import Module
from torch.nn.parameter import is_lazy

from tnconv import functional as tnf
from tnconv.backends.torch.kernels import CONV
from tnconv.conv.hyper import Pairs, padding_pairs
from tnconv.dropout.weight_vjp import check_dropout
from tnconv.dropout.op import new_seed, seeded_weight_vjp_dropout
from tnconv.dropout.slices import NATIVE_DIMS
from tnconv.nn.conv import ConvNd

SUPPORTED_LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, ConvNd)


def is_supported(module: Module) -> bool:
    """Whether ``module`` is a supported conv layer that computes its output as its class's base does.

    A subclass that overrides ``forward`` or ``_conv_forward`` (weight
    standardisation, say) computes something else, so it keeps its own forward
    and exact gradients.
    """
    if not isinstance(module, SUPPORTED_LAYERS):
        return False
    base = next(cls for cls in SUPPORTED_LAYERS if isinstance(module, cls))
    kind = type(module)
    return kind.forward is base.forward and kind._conv_forward is base._conv_forward


def native(dims: int, padding: Pairs) -> bool:
    """Whether PyTorch's own kernels run the layer: up to 3 spatial dims and symmetric padding."""
    return dims <= NATIVE_DIMS and all(left == right for left, right in padding)


def needed(ctx: FunctionCtx, index: int) -> bool:
    """Whether this backward needs the gradient of input ``index``: it requires one and the engine will use it.

    A backward asked only for gradients at some outputs of the graph (``torch.autograd.grad`` with
    ``inputs``, e.g. ``KFAC.track()``'s batched backward of curvature columns, through the caller's graph)
    needs no weight gradient: not computing it keeps the layer's random stream where the caller's own
    backward expects it, and a batched backward away from the estimate's op (which has no batching rule).
    """
    if not ctx.needs_input_grad[index]:  # type: ignore[attr-defined]
        return False
    if torch.compiler.is_compiling():  # a traced backward (torch.compile) has no engine to ask
        return True
    node = ctx.next_functions[index][0]  # type: ignore[attr-defined]
    try:
        return node is None or bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:  # a leaf that torch.autograd.grad may capture (its inputs): the engine cannot tell
        return True


class EstimatedWeightGradConv(torch.autograd.Function):
    """A zero-padded convolution whose backward estimates the weight gradient by tensor dropout.

    Inputs: ``x`` ``(N, C_in, *I)``, ``weight``, ``bias`` (or None), ``seed``
    (the layer's random stream, advanced by each backward), then the layer's
    ``stride``, ``padding`` (pairs), ``dilation``, ``groups`` and the dropout's
    ``keep``, ``mode``, ``block_rows`` (0: the default). The forward pass and the
    exact input and bias gradients are PyTorch's own kernels where ``native``
    holds (so they equal what autograd computes for a torch layer), else
    ``tnconv.functional``'s.
    """

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seed: torch.Tensor,
        stride: tuple[int, ...], padding: Pairs, dilation: tuple[int, ...], groups: int, keep: float, mode: str,
        block_rows: int,
    ) -> torch.Tensor:
        dims = len(stride)
        if native(dims, padding):
            return CONV[dims](x, weight, bias, stride, [left for left, _ in padding], dilation, groups)
        return tnf.conv(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, _, seed, *layer = inputs
        ctx.save_for_backward(x, weight)
        # not saved for backward: every backward advances it, also when the layer runs twice in one graph
        ctx.seed = seed  # type: ignore[attr-defined]
        ctx.layer = tuple(layer)  # type: ignore[attr-defined]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        stride, padding, dilation, groups, keep, mode, block_rows = ctx.layer  # type: ignore[attr-defined]
        needs_x, needs_weight, needs_bias = (needed(ctx, index) for index in range(3))
        grad_x = grad_weight = grad_bias = None
        dims = len(stride)
        if needs_x and native(dims, padding):
            # the bias gradient apart: asked for with it, the kernel computes the weight gradient too
            grad_x = torch.ops.aten.convolution_backward(
                grad_output, x, weight, None, stride, [left for left, _ in padding], dilation, False, [0] * dims,
                groups, (True, False, False),
            )[0]
        elif needs_x:
            grad_x = tnf.conv_input_vjp(grad_output, weight, tuple(x.shape), stride, padding, dilation, groups)
        if needs_weight:
            seed = ctx.seed  # type: ignore[attr-defined]
            grad_weight = seeded_weight_vjp_dropout(
                x, grad_output, seed, keep, mode, list(weight.shape[2:]), list(stride),
                [p for pair in padding for p in pair], list(dilation), groups, block_rows,
            )
        if needs_bias:
            grad_bias = grad_output.sum((0, *range(2, grad_output.ndim)))
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None, None, None


class EstimatedForward:
    """The ``forward`` that ``approximate_backprop`` gives conv layer ``module``: its convolution, with the weight
    gradient estimated.

    An object that holds its layer (not a closure over it), so that ``copy.deepcopy`` of the model
    gives the copy's layer a forward of its own (computing with the copy's weights, from a copy of
    the random stream) and ``pickle``/``torch.save`` of the model work.
    """

    def __init__(self, module: Module, keep: float, mode: str, block_rows: int, seed: torch.Tensor) -> None:
        self.module, self.keep, self.mode, self.block_rows, self.seed = module, keep, mode, block_rows, seed
        self.dims = len(module.kernel_size)  # type: ignore[arg-type]
        self.stride, self.dilation = tuple(module.stride), tuple(module.dilation)  # type: ignore[arg-type]
        kernel: tuple[int, ...] = tuple(module.kernel_size)  # type: ignore[arg-type]
        pairs = padding_pairs(module.padding, self.dims, kernel, self.dilation, self.stride)
        self.pad_first = module.padding_mode != "zeros"
        self.flat_pad = [p for pair in reversed(pairs) for p in pair]
        self.kernel_padding = ((0, 0),) * self.dims if self.pad_first else pairs

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        module = self.module
        unbatched = input.ndim == self.dims + 1
        x = input.unsqueeze(0) if unbatched else input
        if self.pad_first:
            x = F.pad(x, self.flat_pad, mode=module.padding_mode)  # type: ignore[arg-type]
        y = EstimatedWeightGradConv.apply(
            x, module.weight, module.bias, self.seed, self.stride, self.kernel_padding, self.dilation, module.groups,
            self.keep, self.mode, self.block_rows,
        )
        return y.squeeze(0) if unbatched else y


@contextmanager
def exact_gradients(model: Module) -> Iterator[None]:
    """Within it, the layers of ``model`` under ``approximate_backprop`` run their own forward (exact gradients);
    their estimated forwards come back on exit. Curvature (``tnconv.curvature``) runs its forward this way: its
    batched backward pulls columns back exactly (the estimate has no batching rule and is not what it needs)."""
    set_aside = {module: vars(module).pop("forward") for module in model.modules()
                 if isinstance(vars(module).get("forward"), EstimatedForward)}  # fmt: skip
    try:
        yield
    finally:
        for module, forward in set_aside.items():
            vars(module)["forward"] = forward


class ApproximateBackprop:
    """The handle of ``approximate_backprop``: ``remove()`` (or leaving a ``with`` block) restores exact gradients.

    ``layers``: the names (as in ``model.named_modules()``) of the conv layers
    whose weight gradients are estimated.
    """

    def __init__(self, forwards: dict[str, tuple[Module, EstimatedForward]], keep: float, mode: str) -> None:
        self._forwards = forwards
        self.layers = tuple(forwards)
        self.keep = keep
        self.mode = mode

    def remove(self) -> None:
        """Give every layer back its own ``forward`` (a second call does nothing)."""
        for module, forward in self._forwards.values():
            if vars(module).get("forward") is forward:
                del module.forward
        self._forwards = {}

    def __enter__(self) -> ApproximateBackprop:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"ApproximateBackprop(keep={self.keep}, mode={self.mode!r}, layers={list(self.layers)})"


def approximate_backprop(
    model: Module, keep: float, mode: str = "channel", generator: torch.Generator | None = None,
    *, block_rows: int | None = None,
) -> ApproximateBackprop:
    """From now on, the weight gradient of every supported conv layer of ``model`` is a tensor-dropout estimate.

    Each layer's weight gradient becomes ``tnconv.curvature.weight_vjp_dropout``
    (``keep``, ``mode`` ``"channel"``, ``"rows"`` or ``"spatial"``,
    ``block_rows`` for ``"rows"``): unbiased, and cheaper as ``keep`` falls
    (``"channel"`` and ``"rows"`` cost about ``keep`` times the exact weight
    gradient; ``"spatial"``, per pixel, is slower). Input and bias gradients
    stay exact. Each layer draws from its own random stream, seeded here from
    ``generator`` (torch's default generator if None), so the same generator
    state gives the same sequence of estimates, eagerly or under
    ``torch.compile`` (apply this before compiling the model).

    Supported layers: ``torch.nn.Conv1d/2d/3d`` and the ``tnconv.nn`` convolutions,
    with any padding and padding mode; transposed convolutions and subclasses
    that override ``forward`` or ``_conv_forward`` keep exact gradients. The
    estimate has no double backward.

    Returns a handle whose ``.remove()`` restores exact gradients; it is also a
    context manager (``with approximate_backprop(model, 0.5): ...``). A copy of the
    model (``copy.deepcopy``, ``pickle``, ``torch.save``) keeps the estimates, on its own
    weights and with its own random streams (each continuing from where the original's
    stood); the handle restores the original only. The curvature of ``tnconv.curvature``
    (``KFAC.update``, ``per_sample_grads``, ``diag_ggn``) is computed with exact gradients.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    rows = check_dropout(keep, mode, generator, block_rows)
    layers = [(name, module) for name, module in model.named_modules() if is_supported(module)]
    if not layers:
        raise ValueError(
            f"model has no supported conv layer (torch.nn.Conv1d/2d/3d or tnconv.nn.ConvNd), got "
            f"{type(model).__name__} with layers {sorted({type(m).__name__ for m in model.modules()})}"
        )
    for name, module in layers:
        if is_lazy(module.weight):
            raise ValueError(f"layer {name!r} has uninitialized parameters (run the model once first)")
        if "forward" in vars(module):
            raise ValueError(
                f"layer {name!r} already has a replaced forward (an earlier approximate_backprop handle "
                f"that was not removed?)"
            )
    forwards: dict[str, tuple[Module, EstimatedForward]] = {}
    for name, module in layers:
        forward = EstimatedForward(module, float(keep), mode, rows or 0, new_seed(generator))
        module.forward = forward
        forwards[name] = (module, forward)
    return ApproximateBackprop(forwards, float(keep), mode)
