"""Tensor dropout: unbiased randomized weight VJPs whose work falls with the keep rate.

The modes and what they keep (each unit with probability ``keep``):

- ``"channel"``: input channels (per group), a uniformly random set of
  ``keep * C`` of them (``kept_channels``: the count rounded up or down at
  random); the native weight-gradient kernel runs on the kept channels
  (``tnconv.dropout.slices``).
- ``"rows"``: blocks of consecutive output rows (first spatial dim), per sample,
  each independently; the native kernel runs on the kept blocks' input windows
  (same module).
- ``"spatial"``: single input pixels, each independently, gathered one by one
  (``tnconv.dropout.pixels``); the slowest mode.
"""

from __future__ import annotations

import math

import torch

from tnconv.conv.hyper import as_int
from tnconv.conv.checks import gradient_layer
from tnconv.dropout.pixels import pixel_dropout
from tnconv.dropout.slices import channel_dropout, default_block_rows, row_blocks, row_dropout

DROPOUT_MODES = ("channel", "spatial", "rows")


def check_dropout(keep: object, mode: object, generator: object, block_rows: object) -> int | None:
    """Validate the dropout settings shared by ``weight_vjp_dropout`` and ``tnconv.nn.approximate_backprop``.

    Returns ``block_rows`` as an int (None: the layer's default), which only ``mode="rows"`` takes.
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a number in (0, 1], got {keep!r}")
    if mode not in DROPOUT_MODES:
        raise ValueError(f"mode must be one of {DROPOUT_MODES}, got {mode!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if block_rows is None:
        return None
    if mode != "rows":
        raise ValueError(f"block_rows applies to mode='rows' only, got block_rows={block_rows!r} with mode={mode!r}")
    rows = as_int(block_rows, "block_rows")
    if rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows!r}")
    return rows


def weight_vjp_dropout(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, keep: float, mode: str, stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: object = 1, generator: torch.Generator | None = None,
    *, block_rows: int | None = None,
) -> torch.Tensor:
    """An unbiased random estimate of the weight VJP (``weight.shape``) by tensor dropout.

    Each unit of the contraction is kept with probability ``keep`` and
    counted ``1/keep`` times, so the expectation is the exact weight VJP, and
    ``keep=1`` gives it exactly. Dropped units are never read:

    - ``mode="channel"``: each input channel (per group), in a set of fixed
      size: a uniformly random ``keep * C_in / G`` of each group's channels,
      the count rounded up with probability its fractional part, else down
      (``kept_channels``). Each channel's probability is ``keep``, as with
      independent draws, so the estimate and the variance of each of its
      entries are those of independent draws; a fixed count makes the cost
      fixed too: the exact weight-gradient kernel runs on the kept channels,
      about ``keep`` times the exact cost on every call (independent draws
      keep a binomial count, above ``keep * C`` half the time, and a kernel
      that blocks channels by 8 pays for the excess).
    - ``mode="rows"``: blocks of ``block_rows`` consecutive output rows (rows:
      the first spatial dim; default ``default_block_rows``: 2 to 8 blocks per
      sample), per sample, each independently. The weight VJP is a sum over samples and output
      positions, so keeping whole ``(sample, block)`` terms is unbiased; the
      kernel runs on the kept blocks and their input windows, about ``keep``
      times the exact cost plus the copy of the windows.
    - ``mode="spatial"``: each input pixel, independently. The kept pixels are gathered one by
      one; slower than the other modes (it pays off for small ``keep`` only).

    The draw, reproducible with ``generator`` (on the CPU by default, or on
    any device): ``kept_channels(G, C_in // G, keep, generator, device)`` for
    channels, ``torch.rand(N, R, generator=generator) < keep``
    for row blocks (``R = ceil(O_1 / block_rows)``), ``torch.rand(*I, generator=generator) < keep``
    for pixels.
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    rows = check_dropout(keep, mode, generator, block_rows)
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "channel":
        mask = kept_channels(hyper.groups, hyper.in_channels // hyper.groups, keep, generator, device)
        return channel_dropout(x, grad_output, hyper, mask.cpu(), float(keep))
    if mode == "rows":
        rows = rows if rows is not None else default_block_rows(hyper)
        mask = torch.rand(hyper.batch, row_blocks(hyper, rows), generator=generator, device=device) < keep
        return row_dropout(x, grad_output, hyper, mask.cpu(), rows, float(keep))
    mask = torch.rand(hyper.input_size, generator=generator, device=device) < keep
    return pixel_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))


def kept_channels(
    groups: int, channels: int, keep: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """The kept channels ``(G, C)`` (bool) of ``mode="channel"``: in each group a uniformly random set of
    ``floor(keep * C)`` channels, one more with probability ``keep * C - floor(keep * C)``.

    Every channel is kept with probability ``E[count] / C = keep`` (the set is uniform given its size). The draw:
    ``scores = torch.rand(G, C)``, then ``extra = torch.rand(G)`` (both from ``generator``, on ``device``); a group
    keeps its ``count = floor(keep * C) + (extra < keep * C - floor(keep * C))`` channels of lowest score.
    """
    scores = torch.rand(groups, channels, generator=generator, device=device)
    extra = torch.rand(groups, generator=generator, device=device)
    target = keep * channels
    counts = math.floor(target) + (extra < target - math.floor(target)).long()  # (G,)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # (G, C): each channel's place in its group's order of scores
    return ranks < counts[:, None]
