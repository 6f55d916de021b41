"""Tensor dropout: unbiased randomized weight VJPs whose work falls with the keep rate.

The modes and what they keep (each unit independently, with probability ``keep``):

- ``"channel"``: input channels (per group); the native weight-gradient kernel
  runs on the kept channels (``tnconv.dropout.slices``).
- ``"rows"``: blocks of consecutive output rows (first spatial dim), per sample;
  the native kernel runs on the kept blocks' input windows (same module).
- ``"spatial"``: single input pixels, gathered one by one
  (``tnconv.dropout.pixels``); the slowest mode.
"""

from __future__ import annotations

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

    Units of the contraction are kept independently with probability
    ``keep`` and counted ``1/keep`` times, so the expectation is the exact
    weight VJP, and ``keep=1`` gives it exactly. Dropped units are never read:

    - ``mode="channel"``: each input channel (per group). The exact
      weight-gradient kernel runs on the kept channels: about ``keep`` times
      the exact cost.
    - ``mode="rows"``: blocks of ``block_rows`` consecutive output rows (rows:
      the first spatial dim; default ``default_block_rows``: 2 to 8 blocks per
      sample), per sample. The weight VJP is a sum over samples and output
      positions, so keeping whole ``(sample, block)`` terms is unbiased; the
      kernel runs on the kept blocks and their input windows, about ``keep``
      times the exact cost plus the copy of the windows.
    - ``mode="spatial"``: each input pixel. The kept pixels are gathered one by
      one; slower than the other modes (it pays off for small ``keep`` only).

    The draw, reproducible with ``generator`` (on the CPU by default, or on
    any device): ``torch.rand(G, C_in // G, generator=generator) < keep`` for
    channels (per group and channel), ``torch.rand(N, R, generator=generator) < keep``
    for row blocks (``R = ceil(O_1 / block_rows)``), ``torch.rand(*I, generator=generator) < keep``
    for pixels.
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    rows = check_dropout(keep, mode, generator, block_rows)
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "channel":
        mask = torch.rand(hyper.groups, hyper.in_channels // hyper.groups, generator=generator, device=device) < keep
        return channel_dropout(x, grad_output, hyper, mask.cpu(), float(keep))
    if mode == "rows":
        rows = rows if rows is not None else default_block_rows(hyper)
        mask = torch.rand(hyper.batch, row_blocks(hyper, rows), generator=generator, device=device) < keep
        return row_dropout(x, grad_output, hyper, mask.cpu(), rows, float(keep))
    mask = torch.rand(hyper.input_size, generator=generator, device=device) < keep
    return pixel_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))
