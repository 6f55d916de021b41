"""PyTorch implementations of each routine, for ``--check`` (float64) and ``--bench`` (the baseline).

They are written the way one does it without tnconv: the layer itself is
``torch.nn.functional.conv*d`` / ``conv_transpose*d``, VJPs are
``aten.convolution_backward`` (what autograd runs), patches come from a conv
with an identity kernel (``F.unfold`` for 2-d convs), and the curvature
routines are the usual unfold-then-einsum recipes (as in BackPACK and
curvlinops). Every result is in the layout of the matching network's output
(``conv_network(op, ...)``), flattened the way torch lays it out, so a
network's result compares after a ``reshape``. KFAC factors are unscaled
sums (the networks leave the ``1/(N*T)`` scalings to ``tnconv.curvature``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from tnconv.cli.arguments import DEFAULT_COLUMNS, REFERENCE_DIMS
from tnconv.conv.hyper import ConvHyper

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
GGN_COLUMNS = DEFAULT_COLUMNS  # M, the columns of the GGN factorisation for diag_ggn (e.g. 10 classes)

Operands = dict[str, torch.Tensor]


def supported(hyper: ConvHyper) -> str | None:
    """Why PyTorch has no reference for this layer (None when it has one)."""
    if hyper.dims > REFERENCE_DIMS:
        return f"PyTorch has no {hyper.dims}-d convolution"
    return None


def _symmetric(hyper: ConvHyper) -> bool:
    return all(left == right for left, right in hyper.padding)


def layer(hyper: ConvHyper, x: torch.Tensor, weight: torch.Tensor, groups: int | None = None) -> torch.Tensor:
    """The layer's output with PyTorch's own functions (any padding mode, asymmetric padding)."""
    groups = hyper.groups if groups is None else groups
    if hyper.transposed:
        return CONV_TRANSPOSE[hyper.dims](
            x, weight, stride=hyper.stride, padding=[left for left, _ in hyper.padding],
            output_padding=hyper.output_padding, groups=groups, dilation=hyper.dilation,
        )
    if hyper.padding_mode == "zeros" and _symmetric(hyper):
        padding = [left for left, _ in hyper.padding]
        return CONV[hyper.dims](x, weight, stride=hyper.stride, padding=padding, dilation=hyper.dilation, groups=groups)
    flat = [side for pair in reversed(hyper.padding) for side in pair]
    mode = "constant" if hyper.padding_mode == "zeros" else hyper.padding_mode
    padded = F.pad(x, flat, mode=mode)
    return CONV[hyper.dims](padded, weight, stride=hyper.stride, dilation=hyper.dilation, groups=groups)


def patches(hyper: ConvHyper, x: torch.Tensor) -> torch.Tensor:
    """The unfolded input ``(N, C_in * prod(K), T)`` (im2col; for a transposed layer that of its conv)."""
    batch, channels = x.shape[:2]
    taps = hyper.kernel_elements
    if hyper.dims == 2 and not hyper.transposed and hyper.padding_mode == "zeros" and _symmetric(hyper):
        return F.unfold(
            x, hyper.kernel_size, dilation=hyper.dilation, padding=[l for l, _ in hyper.padding], stride=hyper.stride
        )
    eye = torch.eye(taps, dtype=x.dtype, device=x.device).reshape(taps, 1, *hyper.kernel_size)
    eye = eye.repeat(channels, 1, *(1,) * hyper.dims)
    if hyper.transposed:  # conv_transpose weight (C_in, taps, *K): channel c, tap j reads kernel position j
        eye = eye.reshape(channels, taps, *hyper.kernel_size)
    return layer(hyper, x, eye, groups=channels).reshape(batch, channels * taps, -1)


def _grouped(hyper: ConvHyper, columns: torch.Tensor) -> torch.Tensor:
    """``(N, C*prod(K), T)`` -> ``(N, G, d, T)``."""
    return columns.reshape(columns.shape[0], hyper.groups, -1, columns.shape[-1])


def _backward(hyper: ConvHyper, v: torch.Tensor, x: torch.Tensor, w: torch.Tensor, which: int) -> torch.Tensor:
    """Input (``which=0``) or weight (``which=1``) VJP of the layer."""
    if hyper.padding_mode == "zeros" and (hyper.transposed or _symmetric(hyper)):
        mask = [which == 0, which == 1, False]
        result = torch.ops.aten.convolution_backward(
            v, x, w, None, list(hyper.stride), [l for l, _ in hyper.padding], list(hyper.dilation),
            hyper.transposed, list(hyper.output_padding), hyper.groups, mask,
        )
        return result[which]
    x = x.detach().requires_grad_(which == 0)
    w = w.detach().requires_grad_(which == 1)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(layer(hyper, x, w), (x, w)[which], v)
    return grad


def _per_sample(hyper: ConvHyper, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients ``(..., N, *weight.shape)`` for ``v`` of shape ``(..., N, C_out, *O)``."""
    u = _grouped(hyper, patches(hyper, x))  # n g d t
    lead = v.shape[:-hyper.dims - 2]
    flat_v = v.reshape(*lead, v.shape[-hyper.dims - 2], hyper.groups, -1, u.shape[-1])  # ... n g o t
    grads = torch.einsum("...ngot,ngdt->...ngod", flat_v, u)
    c_in = x.shape[1] // hyper.groups
    c_out = flat_v.shape[-2]
    taps = hyper.kernel_elements
    grads = grads.reshape(*grads.shape[:-1], c_in, taps)  # ... n g o c k
    if hyper.transposed:  # weight (C_in, C_out/G, *K): (g, c_in) first, then c_out
        grads = grads.movedim(-3, -2)
        return grads.reshape(*lead, x.shape[0], hyper.groups * c_in, c_out, *hyper.kernel_size)
    return grads.reshape(*lead, x.shape[0], hyper.groups * c_out, c_in, *hyper.kernel_size)


def implementation(op: str, hyper: ConvHyper) -> Callable[[Operands], torch.Tensor]:
    """The PyTorch implementation of routine ``op`` (network op names) as a function of the operands."""
    input_shape = hyper.input_shape

    def blank(reference: torch.Tensor) -> torch.Tensor:
        return torch.empty(input_shape, dtype=reference.dtype, device=reference.device)

    table: dict[str, Callable[[Operands], torch.Tensor]] = {
        "forward": lambda t: layer(hyper, t["X"], t["W"]),
        "transpose_forward": lambda t: layer(hyper, t["X"], t["W"]),
        "input_vjp": lambda t: _backward(hyper, t["V"], blank(t["V"]), t["W"], 0),
        "weight_vjp": lambda t: _backward(hyper, t["V"], t["X"], _weight_like(hyper, t["X"]), 1),
        "unfold": lambda t: patches(hyper, t["X"]),
        "unfold_transpose": lambda t: patches(hyper, t["X"]),
        "kfac_expand": lambda t: torch.einsum("ngat,ngbt->gab", *(_grouped(hyper, patches(hyper, t["X"])),) * 2),
        "kfac_reduce": lambda t: torch.einsum(
            "nga,ngb->gab", *(_grouped(hyper, patches(hyper, t["X"])).sum(-1),) * 2
        ),
        "per_sample_grad": lambda t: _per_sample(hyper, t["X"], t["V"]),
        "diag_ggn": lambda t: _per_sample(hyper, t["X"], t["V"]).square().sum(dim=(0, 1)),
    }
    try:
        return table[op]
    except KeyError:
        raise ValueError(f"routine {op!r} has no PyTorch reference; known: {', '.join(table)}") from None


def _weight_like(hyper: ConvHyper, x: torch.Tensor) -> torch.Tensor:
    return torch.empty(hyper.weight_shape, dtype=x.dtype, device=x.device)


def operands(op: str, hyper: ConvHyper, dtype: torch.dtype, seed: int = 0, columns: int = GGN_COLUMNS) -> Operands:
    """Random operands for ``op``: ``X`` (layer input), ``W`` (torch weight), ``V`` (output gradient).

    For ``diag_ggn``, ``V`` is ``(columns, N, C_out, *O)``: the columns of a GGN factorisation.
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)

    needs = {
        "forward": "XW", "transpose_forward": "XW", "input_vjp": "VW", "weight_vjp": "XV", "unfold": "X",
        "unfold_transpose": "X", "kfac_expand": "X", "kfac_reduce": "X", "per_sample_grad": "XV", "diag_ggn": "XV",
    }[op]
    result: Operands = {}
    for name in needs:
        if name == "X":
            result["X"] = draw(hyper.input_shape)
        elif name == "W":
            result["W"] = draw(hyper.weight_shape)
        else:
            shape = hyper.output_shape
            result["V"] = draw((columns, *shape) if op == "diag_ggn" else shape)
    return result


def largest_tensor(op: str, hyper: ConvHyper, columns: int = GGN_COLUMNS) -> int:
    """Numbers in the largest tensor the PyTorch implementation of ``op`` creates (operands included)."""
    locations = math.prod(hyper.output_size)
    sizes = [math.prod(hyper.input_shape)]
    if hyper.out_channels is not None:
        sizes += [math.prod(hyper.weight_shape), math.prod(hyper.output_shape)]
        if op == "diag_ggn":
            sizes += [columns * math.prod(hyper.output_shape), columns * hyper.batch * math.prod(hyper.weight_shape)]
        if op == "per_sample_grad":
            sizes.append(hyper.batch * math.prod(hyper.weight_shape))
    if op in ("unfold", "unfold_transpose", "kfac_expand", "kfac_reduce", "per_sample_grad", "diag_ggn"):
        sizes.append(hyper.batch * hyper.in_channels * hyper.kernel_elements * locations)
    return max(sizes)
