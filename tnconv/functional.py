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

from tnconv.conv.hyper import ConvHyper, as_int, is_sequence
from tnconv.routine_cache import clear_cache, configure, run

__all__ = [
    "conv", "conv_transpose", "unfold", "unfold_transpose", "fold", "conv_input_vjp", "conv_weight_vjp", "clear_cache",
]


def _shape(sizes: Sequence[int]) -> tuple[int, ...]:
    """Sizes as plain ints (``operator.index`` also makes dynamo specialise symbolic sizes)."""
    return tuple(operator.index(s) for s in sizes)


def _plain(value: object) -> object:
    """A ``torch.Size`` argument (``weight.shape[2:]``) as a tuple of plain ints; anything else as given."""
    return _shape(value) if isinstance(value, torch.Size) else value


# --- argument checks ---------------------------------------------------------------------


def _tensor(value: object, name: str, min_dims: int = 3) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not (value.is_floating_point() or value.is_complex()):
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if value.ndim < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} dims, got shape {tuple(value.shape)}")
    return value


def _same_kind(reference: torch.Tensor, reference_name: str, other: torch.Tensor, name: str) -> None:
    if other.dtype != reference.dtype:
        raise ValueError(f"{name} has dtype {other.dtype} but {reference_name} has dtype {reference.dtype}")
    if other.device != reference.device:
        raise ValueError(f"{name} is on device {other.device} but {reference_name} is on {reference.device}")


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
    bias = _tensor(bias, "bias", min_dims=1)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},) (one per output channel), got {tuple(bias.shape)}")
    _same_kind(x, "x", bias, "bias")
    return y + bias.reshape(channels, *(1,) * (y.ndim - 2))


def _unbatch(y: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return y.squeeze(0) if unbatched else y


def _columns(hyper: ConvHyper) -> tuple[int, int, int]:
    """The shape of unfolded columns ``(B, C*prod(K), L)``."""
    return hyper.batch, hyper.in_channels * hyper.kernel_elements, math.prod(hyper.output_size)


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
    weight = _tensor(weight, "weight")
    x, unbatched = _batched(_tensor(x, "x", min_dims=2), weight.ndim - 2, "x")
    _same_kind(x, "x", weight, "weight")
    groups = as_int(groups, "groups")
    _check_weight_channels(weight.shape[1], groups, x.shape[1], "weight.shape[1]")
    program, hyper, any_batch = configure(
        "forward", tuple(x.shape), x.dtype.is_floating_point, _shape(weight.shape[2:]), _shape(weight.shape[:1])[0],
        stride, padding, dilation, groups, padding_mode,
    )
    y = run(program, {"X": x, "W": weight}, hyper.output_shape, any_batch)
    return _unbatch(_add_bias(y, bias, hyper.out_channels, x), unbatched)  # type: ignore[arg-type]


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
    weight = _tensor(weight, "weight")
    x, unbatched = _batched(_tensor(x, "x", min_dims=2), weight.ndim - 2, "x")
    _same_kind(x, "x", weight, "weight")
    groups = as_int(groups, "groups")
    if weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"weight.shape[0]={weight.shape[0]} must equal the input channels x.shape[1]={x.shape[1]} "
            f"for a transposed convolution"
        )
    program, hyper, any_batch = configure(
        "forward", tuple(x.shape), x.dtype.is_floating_point, _shape(weight.shape[2:]),
        _shape(weight.shape[1:2])[0] * groups, stride, padding, dilation, groups, "zeros", output_padding, True,
    )
    y = run(program, {"X": x, "W": weight}, hyper.output_shape, any_batch)
    return _unbatch(_add_bias(y, bias, hyper.out_channels, x), unbatched)  # type: ignore[arg-type]


def unfold(
    x: torch.Tensor, kernel_size: object, dilation: object = 1, padding: object = 0, stride: object = 1
) -> torch.Tensor:
    """im2col, as ``torch.nn.functional.unfold`` in any N: ``(B, C, *I)`` -> ``(B, C*prod(K), L)``.

    Rows are ordered ``(c, k1, ..., kN)``, columns ``(o1, ..., oN)``, both row-major.
    N is ``x.ndim - 2``, except that a ``kernel_size`` tuple of length ``x.ndim - 1`` marks
    an unbatched ``(C, *I)`` input (as ``F.unfold`` takes a ``(C, H, W)`` image), whose
    result is ``(C*prod(K), L)``.
    """
    x = _tensor(x, "x", min_dims=2)
    dims = len(kernel_size) if is_sequence(kernel_size) else x.ndim - 2  # type: ignore[arg-type]
    if x.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"kernel_size={tuple(kernel_size)} has {dims} dims but x of shape {tuple(x.shape)} "  # type: ignore[arg-type]
            f"has {x.ndim - 2} spatial dims (batched) or {x.ndim - 1} (unbatched)"
        )
    x, unbatched = _batched(x, dims, "x")
    program, hyper, any_batch = configure(
        "unfold", tuple(x.shape), x.dtype.is_floating_point, _plain(kernel_size), None, stride, padding, dilation
    )
    return _unbatch(run(program, {"X": x}, _columns(hyper), any_batch), unbatched)


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
    x = _tensor(x, "x")
    program, hyper, any_batch = configure(
        "unfold", tuple(x.shape), x.dtype.is_floating_point, _plain(kernel_size), None, stride, padding, dilation, 1,
        "zeros", output_padding, True,
    )
    return run(program, {"X": x}, _columns(hyper), any_batch)


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
    x = _tensor(x, "x", min_dims=2)
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, C*prod(K), L) or (C*prod(K), L), got {tuple(x.shape)}")
    dims = next((len(v) for v in (output_size, kernel_size, dilation, padding, stride) if is_sequence(v)), 2)  # type: ignore[arg-type]
    size = tuple(_plain(output_size)) if is_sequence(output_size) else (as_int(output_size, "output_size"),) * dims  # type: ignore[arg-type]
    kernel = tuple(_plain(kernel_size)) if is_sequence(kernel_size) else (as_int(kernel_size, "kernel_size"),) * dims  # type: ignore[arg-type]
    taps = math.prod([as_int(k, "kernel_size") for k in kernel])
    if taps < 1 or x.shape[1] % taps:
        raise ValueError(
            f"x.shape[1]={x.shape[1]} must be divisible by prod(kernel_size)={taps} (kernel_size={kernel_size!r})"
        )
    if len(size) != dims:  # type: ignore[arg-type]
        raise ValueError(f"output_size must be an int or a tuple of {dims} ints, got {output_size!r}")
    shape = (x.shape[0], operator.index(x.shape[1]) // taps, *size)
    program, hyper, any_batch = configure(
        "fold", shape, x.dtype.is_floating_point, kernel, None, stride, padding, dilation
    )
    blocks = math.prod(hyper.output_size)
    if x.shape[2] != blocks:
        raise ValueError(
            f"x.shape[2]={x.shape[2]} must equal the number of blocks {blocks} (= prod {hyper.output_size}) "
            f"for output_size={output_size!r}, kernel_size={kernel_size!r}, dilation={dilation!r}, "
            f"padding={padding!r}, stride={stride!r}"
        )
    return _unbatch(run(program, {"X": x}, hyper.input_shape, any_batch), unbatched)


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
    program, hyper, any_batch = configure(
        "input_vjp", shape, weight.dtype.is_floating_point, _shape(weight.shape[2:]), _shape(weight.shape[:1])[0],
        stride, padding, dilation, groups,
    )
    _check_output(grad_output, (grad_output.shape[0], *hyper.output_shape[1:]))
    return run(program, {"V": grad_output, "W": weight}, hyper.input_shape, any_batch)


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
    if is_sequence(kernel_size) and len(kernel_size) == dims + 2:  # type: ignore[arg-type]
        full = tuple(as_int(v, "kernel_size") for v in kernel_size)  # type: ignore[union-attr]
        if groups >= 1 and (full[0] != grad_output.shape[1] or full[1] * groups != x.shape[1]):
            raise ValueError(
                f"kernel_size={kernel_size!r} as a weight shape must start with (C_out, C_in // groups) = "
                f"({grad_output.shape[1]}, {x.shape[1] // groups})"
            )
        kernel_size = full[2:]
    program, hyper, any_batch = configure(
        "weight_vjp", tuple(x.shape), x.dtype.is_floating_point, _plain(kernel_size),
        _shape(grad_output.shape[1:2])[0], stride, padding, dilation, groups,
    )
    _check_output(grad_output, (x.shape[0], *hyper.output_shape[1:]))
    return run(program, {"X": x, "V": grad_output}, hyper.weight_shape, any_batch, batched_result=False)


# --- helpers for the VJPs --------------------------------------------------------------------


def _vjp_operands(grad_output: object, other: object, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``grad_output`` and the VJP's other operand ``name`` (``weight`` or ``x``), checked as tensors of
    one dtype, device and rank ``N + 2``; returns both and N."""
    other = _tensor(other, name)
    grad_output = _tensor(grad_output, "grad_output")
    _same_kind(grad_output, "grad_output", other, name)
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
    values = tuple(as_int(v, name) for v in size)  # type: ignore[union-attr]
    if len(values) == dims:
        return (batch, channels, *values)
    if len(values) == dims + 2:
        if values[:2] != (batch, channels):
            raise ValueError(
                f"{name}={tuple(size)} must start with (batch, in_channels) = ({batch}, {channels})"  # type: ignore[arg-type]
            )
        return values
    raise ValueError(f"{name} must have {dims} (spatial) or {dims + 2} (full shape) entries, got {size!r}")


def _check_output(grad_output: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"grad_output has shape {tuple(grad_output.shape)} but the convolution's output shape is {expected}"
        )
