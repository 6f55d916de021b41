"""Tensor dropout on whole slices: the exact weight-gradient kernel runs on the kept part only.

Two estimators whose kept part is a set of regular slices, so that PyTorch's
own weight-gradient kernel (``aten.convolution_backward`` for the weight, as
tnconv's native dispatch runs it) computes it and the work is about ``keep``
times that of the exact weight VJP:

- ``channel_dropout``: the kept input channels of each group (``index_select``
  of ``x``) as a smaller grouped layer, its channels per group rounded up to a
  multiple of ``CHANNEL_BLOCK`` on the CPU (``channel_slots``).
- ``row_dropout``: blocks of consecutive output rows (first spatial dim) of each
  sample. The weight VJP is a sum over samples ``n`` and output positions
  ``o``, ``dW = sum_{n,o} v[n, :, o] (x) patch(x[n], o)``; cutting the ``(n, o)``
  into units ``(n, block)``, keeping each unit with probability ``keep`` and
  counting kept ones ``1/keep`` times leaves the expectation unchanged. A
  block of ``B`` output rows reads a window of ``S*(B-1) + D*(K-1) + 1`` input
  rows (zero rows where the window leaves the input), so the kept units become
  a batch of windows, with ``keep`` times the exact FLOPs.

Both call the kernel once per chunk (``summed``) whose gathered input and
output gradient hold at most ``CHUNK_BYTES`` each, and add the parts:
``row_dropout`` per chunk of kept units, ``channel_dropout`` per chunk of
samples. The gathered input is a copy (the kernel takes no index), which
oneDNN copies again into its blocked layout, as it does the output gradient;
for the whole batch at once these are fresh buffers of several MB that the
allocator maps anew on most calls (about 3,600 page faults per call for rows
at keep 1 and 3,500 for channels at keep 0.5 on resnet18_layer1_3x3, none in
chunks: channels at keep 0.5 0.60x the exact weight VJP in chunks against
0.73x in one call, by CPU time at load 7).
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable

import torch
import torch.nn.functional as F

from tnconv import functional as tnf
from tnconv.conv.hyper import ConvHyper, Pairs

NATIVE_DIMS = 3  # aten.convolution_backward covers 1-, 2- and 3-d convolutions
HALO_PARTS = 4  # a row block copies at most 1/HALO_PARTS more input rows than S times its rows
BLOCKS_PER_SAMPLE = (2, 8)  # the fewest and most row blocks per sample, where the output has enough rows
CHANNEL_BLOCK = 8
"""On the CPU, ``channel_dropout`` gathers a multiple of this many channels per group (spare slots repeat a kept
channel; their results are discarded): oneDNN's weight-gradient kernel (AVX2) pads the input channels to a multiple
of 8 in its blocked layout, so the spare slots add no kernel work, and the gathered tensor and oneDNN's copies of it
take one of a few sizes instead of a new size with every draw - new sizes make the allocator map fresh pages
(page faults cost up to 0.2x the exact weight VJP per call at keep 0.25 on resnet18_layer1_3x3)."""
CHUNK_BYTES = 2 * 2**20
"""The most bytes of the gathered input, and of the output gradient, of one kernel call (``summed``): the stacked
windows and output-gradient blocks of ``row_dropout``, a chunk of samples' kept channels of ``channel_dropout`` (at
least one unit)."""


def weight_vjp_slice(
    x: torch.Tensor, v: torch.Tensor, kernel_size: tuple[int, ...], stride: tuple[int, ...], padding: Pairs,
    dilation: tuple[int, ...], groups: int,
) -> torch.Tensor:
    """The exact weight VJP ``(C_out, C_in // groups, *K)`` of the zero-padded conv from ``x`` to ``v``.

    PyTorch's weight-gradient kernel for up to 3 spatial dims (asymmetric padding
    applied with ``F.pad`` first); ``tnconv.functional.conv_weight_vjp`` beyond.
    """
    dims = len(kernel_size)
    if dims > NATIVE_DIMS:
        return tnf.conv_weight_vjp(x, v, kernel_size, stride, padding, dilation, groups)
    if any(left != right for left, right in padding):
        x = F.pad(x, [p for pair in reversed(padding) for p in pair])
        padding = ((0, 0),) * dims
    weight_shape = (v.shape[1], x.shape[1] // groups, *kernel_size)
    return torch.ops.aten.convolution_backward(
        v, x, x.new_empty(1).expand(weight_shape), None, stride, [left for left, _ in padding], dilation,
        False, [0] * dims, groups, (False, True, False),
    )[1]


def channel_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept channels ``mask[g, c]`` (a CPU bool tensor) only, scaled by ``1/keep``.

    The ``A`` groups with a kept channel become the groups of a smaller layer
    with ``L`` input channels per group (``channel_slots``: the most kept in one
    group, rounded up on the CPU); a group with fewer repeats its first kept
    channel in the spare slots, whose results are discarded (dropped channels
    are never read). Its weight VJP ``(A*C_out/G, L, *K)`` is scattered into
    the full one. One kernel call per chunk of samples (``summed``: at most
    ``CHUNK_BYTES`` of gathered input and of output gradient), for the reason
    ``row_dropout`` gives.
    """
    groups, c_in = hyper.groups, hyper.in_channels // hyper.groups
    c_out = v.shape[1] // groups
    kernel = hyper.kernel_size
    result = x.new_zeros(groups, c_out, c_in, *kernel)
    counts = mask.sum(1)
    chosen = counts.nonzero().flatten()  # (A,)
    if chosen.numel() == 0:
        return result.reshape(hyper.weight_shape)
    slots = channel_slots(int(counts.max()), c_in, x.device)
    order = torch.argsort((~mask[chosen]).to(torch.int8), dim=1, stable=True)[:, :slots]  # kept first: (A, L)
    used = torch.arange(slots) < counts[chosen, None]  # (A, L)
    channels = torch.where(used, order, order[:, :1])
    taken = None if int(counts.sum()) == groups * c_in else (chosen[:, None] * c_in + channels).flatten().to(x.device)
    kept_groups = None if len(chosen) == groups else chosen.to(v.device)

    def part(start: int, length: int) -> torch.Tensor:
        xs, vs = x.narrow(0, start, length), v.narrow(0, start, length)
        if taken is not None:
            xs = xs.index_select(1, taken)  # (n, A*L, *I)
        if kept_groups is not None:
            vs = vs.unflatten(1, (groups, c_out)).index_select(1, kept_groups).flatten(1, 2)  # (n, A*C_out/G, *O)
        return weight_vjp_slice(xs, vs, kernel, hyper.stride, hyper.padding, hyper.dilation, len(chosen))

    sample_bytes = x.element_size() * max(len(chosen) * slots * math.prod(hyper.input_size), v[0].numel())
    vjp = summed(part, x.shape[0], sample_bytes)
    vjp = vjp.unflatten(0, (len(chosen), c_out)).transpose(1, 2)  # (A, L, C_out/G, *K)
    where = (chosen[:, None].expand_as(channels)[used].to(x.device), channels[used].to(x.device))
    result.transpose(1, 2).index_put_(where, vjp[used.to(x.device)] / keep)
    return result.reshape(hyper.weight_shape)


def channel_slots(kept: int, channels: int, device: torch.device) -> int:
    """Input channels per group of ``channel_dropout``'s smaller layer when at most ``kept`` of ``channels`` are kept
    in a group: ``kept`` rounded up to a multiple of ``CHANNEL_BLOCK`` (at most ``channels``) on the CPU, ``kept``
    elsewhere."""
    if device.type != "cpu":
        return kept
    return min(channels, -(-kept // CHANNEL_BLOCK) * CHANNEL_BLOCK)


def summed(part: Callable[[int, int], torch.Tensor], count: int, unit_bytes: int) -> torch.Tensor:
    """``part(start, length)`` summed over consecutive chunks of ``count`` units of ``unit_bytes`` each: the fewest
    chunks of at most ``CHUNK_BYTES`` (or one unit), of equal sizes but for a smaller last one."""
    chunks = math.ceil(count / max(1, CHUNK_BYTES // max(unit_bytes, 1)))
    size = math.ceil(count / chunks)
    parts = (part(start, min(size, count - start)) for start in range(0, count, size))
    return reduce(lambda total, term: total.add_(term), parts)


def default_block_rows(hyper: ConvHyper) -> int:
    """Output rows per block of ``mode="rows"`` when none is given.

    The fewest rows ``B`` whose input window ``S*(B-1) + D*(K-1) + 1`` exceeds
    ``S*B`` rows by at most ``1/HALO_PARTS`` of them (the overlap between neighbouring
    windows is copied twice), clamped so that a sample has between 2 and 8
    blocks where its output has that many rows: more blocks give a
    lower-variance estimate, fewer give taller blocks, on which the kernel
    runs faster.
    """
    stride, span = hyper.stride[0], hyper.dilation[0] * (hyper.kernel_size[0] - 1) + 1
    rows = hyper.output_size[0]
    fewest, most = BLOCKS_PER_SAMPLE
    by_halo = math.ceil(max(span - stride, 0) * HALO_PARTS / stride)
    return max(1, min(max(by_halo, math.ceil(rows / most)), math.ceil(rows / fewest)))


def row_blocks(hyper: ConvHyper, block_rows: int) -> int:
    """How many blocks of ``block_rows`` output rows cover the output (the last one may be shorter)."""
    return math.ceil(hyper.output_size[0] / block_rows)


def row_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, block_rows: int, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept row blocks ``mask[n, r]`` (a CPU bool tensor) only, scaled by ``1/keep``.

    Block ``r`` is output rows ``[r*B, r*B + B)`` (a shorter last block gets
    zero rows of ``v``) and input rows ``[r*B*S - P, r*B*S - P + window)`` of
    the unpadded input, zero outside it; the kept ``(n, r)`` windows of ``x``
    and blocks of ``v`` are stacked along the batch (``(M, C, window, ...)``,
    ``(M, C_out, B, ...)``, a ``torch.cat`` of narrowed views: a copy of the
    kept rows only) and a kernel call with no padding along rows computes their
    weight VJP, one call per chunk of units (``summed``).
    """
    stride, span = hyper.stride[0], hyper.dilation[0] * (hyper.kernel_size[0] - 1) + 1
    window = stride * (block_rows - 1) + span
    left = hyper.padding[0][0]
    units = mask.nonzero().tolist()  # (sample, block) pairs
    if not units:
        return x.new_zeros(hyper.weight_shape)
    padding = ((0, 0), *hyper.padding[1:])

    def part(start: int, length: int) -> torch.Tensor:
        chunk = units[start : start + length]
        inputs = [rows_of(x.narrow(0, n, 1), block * block_rows * stride - left, window) for n, block in chunk]
        gradients = [rows_of(v.narrow(0, n, 1), block * block_rows, block_rows) for n, block in chunk]
        return weight_vjp_slice(
            torch.cat(inputs), torch.cat(gradients), hyper.kernel_size, hyper.stride, padding, hyper.dilation,
            hyper.groups,
        )

    unit_bytes = x.element_size() * max(x[0, :, 0].numel() * window, v[0, :, 0].numel() * block_rows)
    return summed(part, len(units), unit_bytes) / keep


def rows_of(t: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """``t[:, :, start : start + length]`` (rows = dim 2) with zero rows where the range leaves ``t``.

    A view when the range lies inside ``t``; only the rows inside ``t`` are read.
    """
    size = t.shape[2]
    before = min(max(-start, 0), length)
    after = min(max(start + length - size, 0), length - before)
    inside = length - before - after
    if inside == 0:
        return t.new_zeros(*t.shape[:2], length, *t.shape[3:])
    piece = t.narrow(2, start + before, inside)
    if before or after:
        piece = F.pad(piece, [0, 0] * (t.ndim - 3) + [before, after])
    return piece
