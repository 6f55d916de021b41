"""What SINGD's input-side factor ``K`` reads of a conv layer's input, from tnconv's routines (no unfold).

singd (0.0.5) turns a layer input into a matrix ``a`` whose rows are patches (with a trailing
1 where the layer has a bias) scaled by ``1/sqrt(rows)``, and adds ``K.from_inner(X=a.T)``: the
part of ``K^T a^T a K`` that the structure of ``K`` keeps. ``a^T a`` is KFAC's input factor
``A`` (``(D, D)``, ``D = d + 1`` with a bias: the bias row and column hold the mean patch, the
corner 1). ``input_term`` gives the same without the patches:

- KFAC-reduce: ``a`` is ``(N, D)``, the patches averaged over the output locations, which the
  ``patch_sums`` routine computes (``sum_o Pi``, a small ``(K, I)`` matrix per dim: no index
  pattern is formed, nothing is unfolded), divided by ``T``; ``K.from_inner`` as singd.
- KFAC-expand: ``a`` would be all ``N*T`` patches (singd unfolds the input). Each structure
  gets only what it reads of ``A``:
  * diagonal: ``diag(A)``, the squared patches summed (the ``kfac_expand_diag`` routine: the
    patch sums of the squared input), as the one column ``sqrt(diag(A))``, whose outer product
    has that diagonal;
  * block-diagonal (``BLOCK_DIM`` blocks): the diagonal blocks of ``A``, from tnconv's KFAC-expand
    path on chunks of channels taken as groups (a chunk of ``BLOCK_DIM / gcd(BLOCK_DIM, prod(K))``
    channels spans whole blocks), as a factor ``L_b L_b^T`` per block stacked into a
    ``(D, BLOCK_DIM)`` matrix, whose outer product has those diagonal blocks;
  * any other structure (dense, hierarchical, Toeplitz): ``A`` itself, by tnconv's KFAC-expand
    path (``tnconv.curvature.factors.input_factor``), through ``K.from_inner2(A)``: about
    ``d^2 N T`` for ``A`` and ``2 d^3`` for ``K^T A K``. Where ``N T < 2 D`` (deep layers with few
    locations: ResNet-18's 512-channel 3x3 layers at batch 8 have ``d = 4608``, ``N T = 392``) the
    factor itself costs less (``2 d^2 N T``): the patches of that path, formed for a chunk of
    samples at a time (``tnconv.curvature.patches.patches``), each chunk's ``K.from_inner`` summed.

Channel groups follow singd's convention: the input's channel groups are averaged and the layer
is seen as one group of ``C_in / G`` channels (the exact factors are per group,
``tnconv.curvature.KFAC``; singd keeps one ``K`` per layer). ``x`` is the input as tnconv's
routines take it (``tnconv.curvature.factors.geometry``: padded in the layer's padding mode).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import torch
from singd.structures.base import StructuredMatrix
from singd.structures.blockdiagonal import BlockDiagonalMatrixTemplate
from singd.structures.diagonal import DiagonalMatrix

from tnconv.conv.checks import layer as conv_layer
from tnconv.conv.hyper import ConvHyper
from tnconv.curvature.factors import Geometry, accumulate_bias, input_factor, mean_patch
from tnconv.curvature.patches import patches
from tnconv.routines.gram import HALF
from tnconv.routines.run import run_routine
from tnconv.routines.table import TABLE


def input_term(K: StructuredMatrix, x: torch.Tensor, layer: Geometry, expand: bool, bias: bool) -> StructuredMatrix:
    """singd's ``K.from_inner(X=a.T)`` for the conv layer ``layer`` with input ``x`` (see the module docstring).

    ``expand``: KFAC-expand (else KFAC-reduce); ``bias``: the layer has a bias (``a`` ends in a column of ones).
    """
    x, layer = group_averaged(x, layer)
    if not expand:
        rows = with_ones(averaged_patches(x, layer), bias)
        return K.from_inner(X=rows.T / math.sqrt(rows.shape[0]))
    if isinstance(K, DiagonalMatrix):
        diagonal = expand_diagonal(x, layer)
        return K.from_inner(X=with_ones(diagonal[None], bias).sqrt().T)
    if isinstance(K, BlockDiagonalMatrixTemplate):
        return K.from_inner(X=block_factor(*gram_blocks(x, layer, bias, K.BLOCK_DIM)))
    hyper = conv_layer(x, layer.conv)
    if hyper.batch * math.prod(hyper.output_size) < 2 * (hyper.patch_size + bias):
        return patch_chunks_term(K, x, hyper, bias)
    with warnings.catch_warnings():  # the structures' from_inner2 is their naive product with the dense Gram
        warnings.filterwarnings("ignore", message="Calling naive implementation of .*from_inner2")
        return K.from_inner2(XXT=expand_gram(x, layer, bias))


def patch_chunks_term(K: StructuredMatrix, x: torch.Tensor, hyper: ConvHyper, bias: bool) -> StructuredMatrix:
    """``K.from_inner(X=a.T)`` for KFAC-expand's rows ``a`` (the patches, with ones for a bias), summed over chunks
    of samples whose patches tnconv's KFAC-expand path forms one at a time (``patches``)."""
    scale = 1.0 / math.sqrt(hyper.batch * math.prod(hyper.output_size))
    total = None
    for _, rows in patches(x, hyper):  # (n, 1, d, T)
        columns = rows[:, 0].transpose(0, 1).reshape(hyper.patch_size, -1)  # (d, n T)
        factor = torch.cat([columns, columns.new_ones(1, columns.shape[1])]) if bias else columns
        term = K.from_inner(X=factor * scale)
        total = term if total is None else total.add_(term)
    assert total is not None  # a batch holds a sample
    return total


def group_averaged(x: torch.Tensor, layer: Geometry) -> tuple[torch.Tensor, Geometry]:
    """``x`` ``(N, C_in, *I)`` with its channel groups averaged, ``(N, C_in / G, *I)``, and the layer as one group."""
    if layer.groups == 1:
        return x, layer
    averaged = x.unflatten(1, (layer.groups, -1)).mean(1)
    return averaged, replace(layer, groups=1, conv={**layer.conv, "groups": 1})


def with_ones(rows: torch.Tensor, bias: bool) -> torch.Tensor:
    """``rows`` ``(R, d)`` with a column of ones appended when ``bias``."""
    return torch.cat([rows, rows.new_ones(rows.shape[0], 1)], 1) if bias else rows


def averaged_patches(x: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """The patches of each sample averaged over the output locations, ``(N, d)``: the patch sums over ``T``."""
    hyper = conv_layer(x, layer.conv)
    return run_routine(TABLE["patch_sums"], hyper, {"X": x}) / math.prod(hyper.output_size)


def expand_diagonal(x: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """``diag(A)`` of KFAC-expand ``(d,)`` (one group): ``1/(N*T)`` times the squared patches summed."""
    return run_routine(TABLE["kfac_expand_diag"], conv_layer(x, layer.conv), {"X": x})[0]


def expand_gram(x: torch.Tensor, layer: Geometry, bias: bool) -> torch.Tensor:
    """KFAC-expand's ``A`` ``(D, D)`` of one group, with the bias row and column (mean patch, corner 1) when
    ``bias``: tnconv's KFAC-expand path (``input_factor``), in ``x``'s dtype."""
    d = x.shape[1] * math.prod(layer.conv["kernel_size"])  # type: ignore[call-overload]
    if d == 0:  # no channels: the bias alone
        return x.new_ones(1, 1) if bias else x.new_empty(0, 0)
    gram = x.new_empty((1, d + bias, d + bias), dtype=torch.float32 if x.dtype in HALF else x.dtype)
    input_factor(x, layer, False, gram[:, :d, :d])
    if bias:
        accumulate_bias(gram, mean_patch(x, layer), 1.0, 0.0)
    return gram[0].to(x.dtype)


def gram_blocks(x: torch.Tensor, layer: Geometry, bias: bool, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal blocks of KFAC-expand's ``A`` ``(D, D)``: ``(D // block, block, block)`` and the last,
    ``(D % block, D % block)``.

    Chunks of ``block / gcd(block, prod(K))`` channels span whole blocks: their Grams are the
    factor's groups when the chunks are taken as groups (tnconv's KFAC-expand path, one call); the
    channels left over and the bias form the tail, a small Gram of its own.
    """
    channels, taps = x.shape[1], math.prod(layer.conv["kernel_size"])  # type: ignore[call-overload]
    chunk = block // math.gcd(block, taps)
    whole = channels // chunk * chunk
    parts = []
    if whole:
        chunks = replace(layer, groups=whole // chunk, conv={**layer.conv, "groups": whole // chunk})
        grams = input_factor(x[:, :whole], chunks, False).to(x.dtype)  # (chunks, chunk * taps, chunk * taps)
        parts.append(diagonal_blocks(grams, block))
    tail = expand_gram(x[:, whole:], layer, bias)
    full = tail.shape[0] // block * block
    parts.append(diagonal_blocks(tail[None, :full, :full], block))
    return torch.cat(parts), tail[full:, full:]


def diagonal_blocks(grams: torch.Tensor, block: int) -> torch.Tensor:
    """The ``block x block`` blocks on the diagonals of ``grams`` ``(S, L, L)`` (``L`` a multiple of ``block``):
    ``(S * L / block, block, block)``."""
    count = grams.shape[1] // block
    tiles = grams.reshape(grams.shape[0], count, block, count, block)
    index = torch.arange(count, device=grams.device)
    return tiles[:, index, :, index].transpose(0, 1).reshape(-1, block, block)


def block_factor(blocks: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``X`` ``(D, block)`` whose outer product ``X X^T`` has the diagonal blocks ``blocks`` ``(B, block, block)``
    and ``last`` ``(r, r)``: a factor ``L L^T`` of each (symmetric positive semi-definite) block, stacked."""
    block = blocks.shape[-1]
    rows = [psd_factor(blocks).reshape(-1, block)]
    if last.shape[0]:
        rows.append(torch.nn.functional.pad(psd_factor(last), (0, block - last.shape[0])))
    return torch.cat(rows)


def psd_factor(grams: torch.Tensor) -> torch.Tensor:
    """``L`` with ``L L^T = grams`` (``(..., r, r)`` symmetric positive semi-definite; rounding's negative
    eigenvalues count as zero): the eigenvectors scaled by the square roots of the eigenvalues."""
    values, vectors = torch.linalg.eigh(grams)
    return vectors * values.clamp_(min=0).sqrt_().unsqueeze(-2)
