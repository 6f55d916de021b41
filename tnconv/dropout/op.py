"""Tensor dropout with its own random stream, as a PyTorch operator that ``torch.compile`` keeps whole.

``weight_vjp_dropout`` takes a ``torch.Generator``, which dynamo cannot trace,
and its kept slices have data-dependent shapes. ``seeded_weight_vjp_dropout``
(``torch.ops.tnconv.seeded_weight_vjp_dropout``) hides both inside one custom
operator with a fixed output shape (``weight.shape``): the draw comes from a
generator seeded with ``seed`` (a one-element int64 CPU tensor), and the
operator overwrites ``seed`` with the next seed drawn from that generator.
Under ``torch.compile`` the operator runs as an opaque call, so a compiled
and an eager run that start from equal seeds give equal estimates.
"""

from __future__ import annotations

import torch

from tnconv.dropout.weight_vjp import weight_vjp_dropout

SEED_LIMIT = 2**62  # seeds are drawn from [0, SEED_LIMIT)


def new_seed(generator: torch.Generator | None) -> torch.Tensor:
    """A seed tensor for ``seeded_weight_vjp_dropout`` drawn from ``generator`` (torch's default one if None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(SEED_LIMIT, (1,), generator=generator, device=device).cpu()


@torch.library.custom_op("tnconv::seeded_weight_vjp_dropout", mutates_args=("seed",))
def seeded_weight_vjp_dropout(
    x: torch.Tensor, grad_output: torch.Tensor, seed: torch.Tensor, keep: float, dropout_mode: str,
    kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int, block_rows: int,
) -> torch.Tensor:
    """``weight_vjp_dropout`` with the generator seeded by ``seed``, which is then advanced in place.

    ``dropout_mode`` is ``mode`` (a name that torch's functionalization of the
    operator leaves free); ``padding`` is flat ``(left_1, right_1, left_2, ...)``;
    ``block_rows`` 0 means the layer's default.
    """
    generator = torch.Generator().manual_seed(int(seed.item()))
    pairs = tuple(zip(padding[::2], padding[1::2]))
    result = weight_vjp_dropout(
        x, grad_output, tuple(kernel_size), keep, dropout_mode, tuple(stride), pairs, tuple(dilation), groups,
        generator, block_rows=block_rows or None,
    )
    seed.copy_(torch.randint(SEED_LIMIT, (1,), generator=generator))
    return result


@seeded_weight_vjp_dropout.register_fake
def _weight_shaped(
    x: torch.Tensor, grad_output: torch.Tensor, seed: torch.Tensor, keep: float, dropout_mode: str,
    kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int, block_rows: int,
) -> torch.Tensor:
    """The result's shape, dtype and device without computing it: ``(C_out, C_in // groups, *K)``."""
    return x.new_empty((grad_output.shape[1], x.shape[1] // groups, *kernel_size))
