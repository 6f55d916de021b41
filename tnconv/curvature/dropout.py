"""Tensor dropout: unbiased randomized weight VJPs whose work falls with the keep rate."""

from __future__ import annotations

import math

import torch

from tnconv.conv.derived import kept_pixels_network
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.curvature.checks import gradient_layer
from tnconv.ir.tensors import IndexPattern
from tnconv.lower.compile import compile as compile_network
from tnconv.routines.derivation import routine_network
from tnconv.routines.table import TABLE


DROPOUT_MODES = ("channel", "spatial")


def weight_vjp_dropout(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, keep: float, mode: str, stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: object = 1, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """An unbiased random estimate of the weight VJP (``weight.shape``) by tensor dropout.

    ``mode="channel"`` keeps each input channel, ``mode="spatial"`` each input
    pixel, independently with probability ``keep``; kept entries count
    ``1/keep`` times, so the expectation is the exact weight VJP, and
    ``keep=1`` gives it exactly. Only the kept slices of ``x`` are read (and
    the matching parts of ``grad_output``): the work falls with ``keep``.

    The draw, reproducible with ``generator`` (on the CPU by default, or on
    any device): ``torch.rand(G, C_in // G, generator=generator) < keep`` for
    channels (per group and channel), ``torch.rand(*I, generator=generator) < keep``
    for pixels. Bernoulli subsets are not regular slices, so the kept slices
    are gathered (a copy of the kept part only) rather than viewed. The
    spatial mode reads, for each kept pixel, the ``prod(K)`` output-gradient
    entries its taps feed: its work is about ``keep * prod(K)`` times a plain
    pass over ``grad_output``, so it pays off for small ``keep``.
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a number in (0, 1], got {keep!r}")
    if mode not in DROPOUT_MODES:
        raise ValueError(f"mode must be one of {DROPOUT_MODES}, got {mode!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "channel":
        mask = torch.rand(hyper.groups, hyper.in_channels // hyper.groups, generator=generator, device=device) < keep
        return channel_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))
    mask = torch.rand(hyper.input_size, generator=generator, device=device) < keep
    return spatial_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))


def channel_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept channels ``mask[g, c_in]`` only, scaled by ``1/keep``.

    The groups with a kept channel (``A`` of them) become the groups of a
    smaller layer whose ``L`` input channels per group are the kept ones
    (padded to the largest count, padding weighted 0); its weight VJP is
    scattered back into the full weight gradient.
    """
    groups, c_in, c_out = hyper.groups, hyper.in_channels // hyper.groups, hyper.out_channels // hyper.groups
    result = x.new_zeros(groups, c_in, c_out, *hyper.kernel_size)
    counts = mask.sum(1)
    chosen = counts.nonzero().flatten()  # (A,)
    if chosen.numel() == 0:
        return result.transpose(1, 2).reshape(hyper.weight_shape)
    slots = int(counts.max())
    channels = torch.argsort((~mask[chosen]).to(torch.int8), dim=1, stable=True)[:, :slots]  # kept first: (A, L)
    weight = (torch.arange(slots, device=x.device) < counts[chosen, None]).to(x.dtype) / keep  # (A, L)
    xs = x.unflatten(1, (groups, c_in))[:, chosen[:, None], channels].flatten(1, 2)  # (N, A*L, *I)
    vs = v.unflatten(1, (groups, c_out))[:, chosen].flatten(1, 2)  # (N, A*C_out/G, *O)
    small = conv_hyper(
        tuple(xs.shape), hyper.kernel_size, vs.shape[1], hyper.stride, hyper.padding, hyper.dilation, len(chosen)
    )
    vjp = compile_network(routine_network(TABLE["weight_vjp"], small))(X=xs, V=vs)  # (A, C_out/G, L, *K)
    values = vjp.transpose(1, 2) * weight.reshape(*weight.shape, *([1] * (vjp.ndim - 2)))
    result.index_put_((chosen[:, None].expand_as(channels), channels), values, accumulate=True)
    return result.transpose(1, 2).reshape(hyper.weight_shape)


def spatial_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept input pixels ``mask[i..]`` only, scaled by ``1/keep``.

    ``x`` is read at the ``P`` kept pixels; ``grad_output`` at the output
    location each kernel tap of each kept pixel feeds (the inverse of the
    index pattern, per dim), zero where a tap feeds none. Both reads and the
    contraction (``tnconv.conv.derived.kept_pixels_network``) scale with ``P``.
    """
    coords = mask.nonzero()  # (P, dims)
    pixels, dims = coords.shape
    if pixels == 0:
        return x.new_zeros(hyper.weight_shape)
    flat_pixels = (coords * torch.tensor(contiguous_strides(hyper.input_size), device=x.device)).sum(1)
    xs = x.flatten(2)[:, :, flat_pixels]  # (N, C_in, P)
    location = torch.zeros((), dtype=torch.long, device=x.device)  # flat output location, (*K, P)
    valid = torch.ones((), dtype=torch.bool, device=x.device)
    for d, (pattern, step) in enumerate(zip(hyper.patterns, contiguous_strides(hyper.output_size))):
        taps = pattern_inverse(pattern, x.device)[:, coords[:, d]]  # (K_d, P): output fed by tap k at pixel p
        shape = [1] * dims + [pixels]
        shape[d] = taps.shape[0]
        location = location + step * taps.clamp(min=0).reshape(shape)
        valid = valid & (taps >= 0).reshape(shape)
    us = v.flatten(2)[:, :, location] * valid.to(x.dtype)  # (N, C_out, *K, P)
    net = kept_pixels_network(hyper, pixels)
    return compile_network(net)(X=xs, U=us).contiguous().reshape(hyper.weight_shape) / keep


def contiguous_strides(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of a tensor with these sizes."""
    return tuple(math.prod(sizes[d + 1 :]) for d in range(len(sizes)))


def pattern_inverse(pattern: IndexPattern, device: torch.device) -> torch.Tensor:
    """``o[k, i]``: the output location that tap ``k`` reads input pixel ``i`` for, or -1 (``(K, I)``)."""
    index, valid = pattern.positions(device)  # (K, O)
    taps, outputs = valid.nonzero(as_tuple=True)
    inverse = torch.full((int(pattern.kernel_size), int(pattern.input_size)), -1, dtype=torch.long, device=device)
    inverse[taps, index[taps, outputs]] = outputs
    return inverse
