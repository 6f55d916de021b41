"""``tnconv.functional`` (alias ``tnconv.F``): PyTorch-compatible conv routines for any N >= 1.

Each routine normalises its hyper-parameters (``tnconv.conv.hyper``), takes
the compiled program of its network (``tnconv.conv.networks`` through
``tnconv.compile``; cached by normalised hyper-parameters and shapes), runs
it on the torch-layout tensors and reshapes the result to PyTorch's layout.
Programs run plain torch operations, so results are differentiable by
autograd (double backward included) and keep the inputs' dtype and device.

Under ``torch.compile(fullgraph=True)`` the setup is a constant of the graph
and only the program's torch operations are traced. Hyper-parameters and sizes
that dynamo sees as symbolic ints are specialised (guarded), except the batch
size where a native kernel runs every batch size: there it stays symbolic, so
``dynamic=True`` gives one graph for all batch sizes, as torch's own kernels do.
Programs on the einsum path are planned per batch size.

Set-up routines are cached per configuration (``tnconv.routine_cache``: at most
``CACHE_LIMIT`` configurations per cache, emptied by :func:`clear_cache`); the
routines are safe to call from several threads.

Layouts (N spatial dims, G groups): ``x`` ``(B, C_in, *I)`` (or unbatched
``(C_in, *I)``), conv weight ``(C_out, C_in // G, *K)``, transposed-conv
weight ``(C_in, C_out // G, *K)``, unfolded columns ``(B, C*prod(K), L)``.
"""

from __future__ import annotations

import math
import operator
from typing import Sequence

import torch

from tnconv.checks import check_same_kind, check_tensor
from tnconv.conv.hyper import as_int, is_sequence
from tnconv.namespace import public_dir
from tnconv.routine_cache import clear_cache, configure, run

__all__ = [
    "conv", "conv_transpose", "unfold", "unfold_transpose", "fold", "conv_input_vjp", "conv_weight_vjp", "clear_cache",
]
__dir__ = public_dir(globals(), __all__)


def _shape(sizes: Sequence[int]) -> tuple[int, ...]:
    """Sizes as plain ints (``operator.index`` also makes dynamo specialise symbolic sizes)."""
    return tuple(operator.index(s) for s in sizes)


def _plain(value: object) -> object:
    """A ``torch.Size`` argument (``weight.shape[2:]``) as a tuple of plain ints; anything else as given."""
    return _shape(value) if isinstance(value, torch.Size) else value


# --- argument checks ---------------------------------------------------------------------


def _batched(x: torch.Tensor, dims: int, name: str) -> tuple[torch.Tensor, bool]:
    """``x`` with a batch dim (added when it is unbatched ``(C, *I)``); whether one was added."""
    if x.ndim == dims + 2:
        return x, False
    if x.ndim == dims + 1:
        return x.unsqueeze(0), True
    raise ValueError(
        f"{name} must have {dims + 2} dims (batch, channels, {dims} spatial) or {dims + 1} unbatched, "
        f"got shape {tuple(x.shape)}"
    )


def _add_bias(y: torch.Tensor, bias: object, channels: int, x: torch.Tensor) -> torch.Tensor:
    if bias is None:
        return y
    bias = check_tensor(bias, "bias", min_ndim=1, allow_complex=True)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},) (one per output channel), got {tuple(bias.shape)}")
    check_same_kind(x, "x", bias, "bias")
    return y + bias.reshape(channels, *(1,) * (y.ndim - 2))


def _unbatch(y: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return y.squeeze(0) if unbatched else y


# --- routines ------------------------------------------------------------------------------


def conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
    padding_mode: object = "zeros",
) -> torch.Tensor:
    """N-d convolution, as ``torch.nn.functional.conv{N}d`` (``padding_mode`` as in ``nn.Conv*d``).

    ``x``: ``(B, C_in, *I)``; ``weight``: ``(C_out, C_in // groups, *K)``;
    returns ``(B, C_out, *O)``.
    """
    weight = check_tensor(weight, "weight", allow_complex=True)
    x, unbatched = _batched(check_tensor(x, "x", min_ndim=2, allow_complex=True), weight.ndim - 2, "x")
    check_same_kind(x, "x", weight, "weight")
    groups = as_int(groups, "groups")
    _check_weight_channels(weight.shape[1], groups, x.shape[1], "weight.shape[1]")
    entry, any_batch = configure(
        "forward", tuple(x.shape), x.dtype.is_floating_point, kernel_size=_shape(weight.shape[2:]),
        out_channels=_shape(weight.shape[:1])[0], stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode,
    )
    y = run(entry, {"X": x, "W": weight}, any_batch)
    return _unbatch(_add_bias(y, bias, entry.shape[1], x), unbatched)


def conv_transpose(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: object = 1,
    padding: object = 0,
    output_padding: object = 0,
    groups: object = 1,
    dilation: object = 1,
) -> torch.Tensor:
    """N-d transposed convolution, as ``torch.nn.functional.conv_transpose{N}d``.

    ``x``: ``(B, C_in, *I)``; ``weight``: ``(C_in, C_out // groups, *K)``;
    returns ``(B, C_out, *O)`` with ``O = (I-1)*stride - pad_left - pad_right + dilation*(K-1) + output_padding + 1``.
    """
    weight = check_tensor(weight, "weight", allow_complex=True)
    x, unbatched = _batched(check_tensor(x, "x", min_ndim=2, allow_complex=True), weight.ndim - 2, "x")
    check_same_kind(x, "x", weight, "weight")
    groups = as_int(groups, "groups")
    if weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"weight.shape[0]={weight.shape[0]} must equal the input channels x.shape[1]={x.shape[1]} "
            f"for a transposed convolution"
        )
    entry, any_batch = configure(
        "transpose_forward", tuple(x.shape), x.dtype.is_floating_point, kernel_size=_shape(weight.shape[2:]),
        out_channels=_shape(weight.shape[1:2])[0] * groups, stride=stride, padding=padding, dilation=dilation,
        groups=groups, output_padding=output_padding, transposed=True,
    )
    y = run(entry, {"X": x, "W": weight}, any_batch)
    return _unbatch(_add_bias(y, bias, entry.shape[1], x), unbatched)


def unfold(
    x: torch.Tensor, kernel_size: object, dilation: object = 1, padding: object = 0, stride: object = 1
) -> torch.Tensor:
    """im2col, as ``torch.nn.functional.unfold`` in any N: ``(B, C, *I)`` -> ``(B, C*prod(K), L)``.

    Rows are ordered ``(c, k1, ..., kN)``, columns ``(o1, ..., oN)``, both row-major.
    N is ``x.ndim - 2``, except that a ``kernel_size`` tuple of length ``x.ndim - 1`` marks
    an unbatched ``(C, *I)`` input (as ``F.unfold`` takes a ``(C, H, W)`` image), whose
    result is ``(C*prod(K), L)``.
    """
    x = check_tensor(x, "x", min_ndim=2, allow_complex=True)
    dims = len(kernel_size) if is_sequence(kernel_size) else x.ndim - 2
    if x.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"kernel_size={tuple(kernel_size)} has {dims} dims but x of shape {tuple(x.shape)} "  # type: ignore[arg-type]
            f"has {x.ndim - 2} spatial dims (batched) or {x.ndim - 1} (unbatched)"
        )
    x, unbatched = _batched(x, dims, "x")
    entry, any_batch = configure(
        "unfold", tuple(x.shape), x.dtype.is_floating_point, kernel_size=_plain(kernel_size), stride=stride,
        padding=padding, dilation=dilation,
    )
    return _unbatch(run(entry, {"X": x}, any_batch), unbatched)


def unfold_transpose(
    x: torch.Tensor,
    kernel_size: object,
    stride: object = 1,
    padding: object = 0,
    output_padding: object = 0,
    dilation: object = 1,
) -> torch.Tensor:
    """im2col of a transposed conv: ``(B, C, *I)`` -> ``(B, C*prod(K), L_out)``, ``L_out`` = prod of its output size.

    For ``groups=1``: ``conv_transpose(x, w)`` equals
    ``w.transpose(0, 1).flatten(1) @ unfold_transpose(x, ...)`` reshaped to ``(B, C_out, *O)``.
    """
    x = check_tensor(x, "x", allow_complex=True)
    entry, any_batch = configure(
        "unfold_transpose", tuple(x.shape), x.dtype.is_floating_point, kernel_size=_plain(kernel_size), stride=stride,
        padding=padding, dilation=dilation, output_padding=output_padding, transposed=True,
    )
    return run(entry, {"X": x}, any_batch)


def fold(
    x: torch.Tensor,
    output_size: object,
    kernel_size: object,
    dilation: object = 1,
    padding: object = 0,
    stride: object = 1,
) -> torch.Tensor:
    """col2im, as ``torch.nn.functional.fold`` in any N: ``(B, C*prod(K), L)`` -> ``(B, C, *output_size)``.

    N is the length of the first tuple among ``output_size``, ``kernel_size``,
    ``dilation``, ``padding``, ``stride``; 2 when all are ints (as ``F.fold``).
    """
    x = check_tensor(x, "x", min_ndim=2, allow_complex=True)
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, C*prod(K), L) or (C*prod(K), L), got {tuple(x.shape)}")
    dims = next((len(v) for v in (output_size, kernel_size, dilation, padding, stride) if is_sequence(v)), 2)
    size = tuple(_plain(output_size)) if is_sequence(output_size) else (as_int(output_size, "output_size"),) * dims  # type: ignore[arg-type]
    kernel = tuple(_plain(kernel_size)) if is_sequence(kernel_size) else (as_int(kernel_size, "kernel_size"),) * dims  # type: ignore[arg-type]
    taps = math.prod([as_int(k, "kernel_size") for k in kernel])
    if taps < 1 or x.shape[1] % taps:
        raise ValueError(
            f"x.shape[1]={x.shape[1]} must be divisible by prod(kernel_size)={taps} (kernel_size={kernel_size!r})"
        )
    if len(size) != dims:
        raise ValueError(f"output_size must be an int or a tuple of {dims} ints, got {output_size!r}")
    shape = (x.shape[0], operator.index(x.shape[1]) // taps, *size)
    entry, any_batch = configure(
        "fold", shape, x.dtype.is_floating_point, kernel_size=kernel, stride=stride, padding=padding,
        dilation=dilation,
    )
    hyper = entry.hyper
    blocks = math.prod(hyper.output_size)
    if x.shape[2] != blocks:
        raise ValueError(
            f"x.shape[2]={x.shape[2]} must equal the number of blocks {blocks} (= prod {hyper.output_size}) "
            f"for output_size={output_size!r}, kernel_size={kernel_size!r}, dilation={dilation!r}, "
            f"padding={padding!r}, stride={stride!r}"
        )
    return _unbatch(run(entry, {"X": x}, any_batch), unbatched)


def conv_input_vjp(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: object,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
) -> torch.Tensor:
    """Gradient of ``conv`` w.r.t. its input, as ``torch.nn.grad.conv{N}d_input``.

    ``input_size``: the input's shape ``(B, C_in, *I)`` or its spatial size ``I``
    (needed because several input sizes give the same output size when stride > 1).
    """
    grad_output, weight, dims = _vjp_operands(grad_output, weight, "weight")
    groups = as_int(groups, "groups")
    channels = _shape(weight.shape[1:2])[0] * groups
    shape = _full_shape(_plain(input_size), dims, grad_output.shape[0], channels, "input_size")
    entry, any_batch = configure(
        "input_vjp", shape, weight.dtype.is_floating_point, kernel_size=_shape(weight.shape[2:]),
        out_channels=_shape(weight.shape[:1])[0], stride=stride, padding=padding, dilation=dilation, groups=groups,
    )
    _check_output(grad_output, (grad_output.shape[0], *entry.hyper.output_shape[1:]))
    return run(entry, {"V": grad_output, "W": weight}, any_batch)


def conv_weight_vjp(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    kernel_size: object,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
) -> torch.Tensor:
    """Gradient of ``conv`` w.r.t. its weight, as ``torch.nn.grad.conv{N}d_weight``: ``(C_out, C_in // G, *K)``.

    ``kernel_size``: int, N ints (``weight.shape[2:]``), or the full weight shape.
    """
    grad_output, x, dims = _vjp_operands(grad_output, x, "x")
    groups = as_int(groups, "groups")
    if is_sequence(kernel_size) and len(kernel_size) == dims + 2:
        full = tuple(as_int(v, "kernel_size") for v in kernel_size)
        if groups >= 1 and (full[0] != grad_output.shape[1] or full[1] * groups != x.shape[1]):
            raise ValueError(
                f"kernel_size={kernel_size!r} as a weight shape must start with (C_out, C_in // groups) = "
                f"({grad_output.shape[1]}, {x.shape[1] // groups})"
            )
        kernel_size = full[2:]
    entry, any_batch = configure(
        "weight_vjp", tuple(x.shape), x.dtype.is_floating_point, kernel_size=_plain(kernel_size),
        out_channels=_shape(grad_output.shape[1:2])[0], stride=stride, padding=padding, dilation=dilation,
        groups=groups,
    )
    _check_output(grad_output, (x.shape[0], *entry.hyper.output_shape[1:]))
    return run(entry, {"X": x, "V": grad_output}, any_batch)


# --- helpers for the VJPs --------------------------------------------------------------------


def _vjp_operands(grad_output: object, other: object, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``grad_output`` and the VJP's other operand ``name`` (``weight`` or ``x``), checked as tensors of
    one dtype, device and rank ``N + 2``; returns both and N."""
    other = check_tensor(other, name, allow_complex=True)
    grad_output = check_tensor(grad_output, "grad_output", allow_complex=True)
    check_same_kind(grad_output, "grad_output", other, name)
    dims = other.ndim - 2
    if grad_output.ndim != dims + 2:
        raise ValueError(f"grad_output must have {dims + 2} dims like {name}, got shape {tuple(grad_output.shape)}")
    return grad_output, other, dims


def _check_weight_channels(per_group: int, groups: int, channels: int, name: str) -> None:
    if groups >= 1 and per_group * groups != channels:
        raise ValueError(
            f"{name}={per_group} times groups={groups} must equal the input channels {channels} "
            f"(weight is (C_out, C_in // groups, *K))"
        )


def _full_shape(size: object, dims: int, batch: int, channels: int, name: str) -> tuple[int, ...]:
    """``(B, C, *I)`` from a full shape or a spatial size, checked against the known batch and channels."""
    if not is_sequence(size):
        raise TypeError(f"{name} must be a tuple of ints (or torch.Size), got {size!r}")
    values = tuple(as_int(v, name) for v in size)
    if len(values) == dims:
        return (batch, channels, *values)
    if len(values) == dims + 2:
        if values[:2] != (batch, channels):
            raise ValueError(
                f"{name}={tuple(size)} must start with (batch, in_channels) = ({batch}, {channels})"
            )
        return values
    raise ValueError(f"{name} must have {dims} (spatial) or {dims + 2} (full shape) entries, got {size!r}")


def _check_output(grad_output: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"grad_output has shape {tuple(grad_output.shape)} but the convolution's output shape is {expected}"
        )

