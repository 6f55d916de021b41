"""Tensor dropout on single input pixels (``mode="spatial"``): the kept pixels are gathered one by one.

A Bernoulli subset of pixels is no regular slice, so the kept pixels of ``x``
and, for each, the ``prod(K)`` output-gradient entries its kernel taps feed
are gathered (a copy of the kept part only) and contracted by a network
planned for ``P`` kept pixels. Its work is about ``keep * prod(K)`` times a
plain pass over ``grad_output``, and a new ``P`` means a new plan: it is the
slowest mode, paying off only for small ``keep``; ``mode="rows"`` is the
structured spatial form that runs the native kernel.
"""

from __future__ import annotations

import math

import torch

from tnconv.conv.derived import kept_pixels_network
from tnconv.conv.hyper import ConvHyper
from tnconv.ir.tensors import IndexPattern
from tnconv.programs.compile import compile as compile_network


def pixel_dropout(
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
    index = torch.tensor(pattern.read_positions(), dtype=torch.long, device=device)  # (K, O), -1: padding
    taps, outputs = (index >= 0).nonzero(as_tuple=True)
    inverse = torch.full((int(pattern.kernel_size), int(pattern.input_size)), -1, dtype=torch.long, device=device)
    inverse[taps, index[taps, outputs]] = outputs
    return inverse
