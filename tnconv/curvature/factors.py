"""The per-layer math of whole-model curvature: KFAC factors, per-sample gradients, GGN diagonals.

Plain functions of one supported layer (``Linear``, a conv or a transposed conv)
given its input ``x`` and the columns ``V`` pulled back to its output, so that
they can move into a table of routines as they are. With ``G`` groups:

- the input factor ``A`` ``(G, dA, dA)`` comes from ``accumulate_input_factor``
  (conv layers: the shortcut parts of the derived networks, the patches or patch
  sums), or from ``x`` itself for ``Linear`` (``G = 1``; leading dims between batch
  and features are its locations ``t``, as for curvlinops);
- the output factor ``B`` ``(G, dB, dB)`` is ``sum_{m,n,t} v v^T`` (expand) or
  ``sum_{m,n} (sum_t v)(sum_t v)^T`` (reduce) over the output channels of a group;
- a bias joins ``A`` as a trailing row and column of ones (``dA = d + 1``): the
  new column is the mean patch over samples and locations (for both
  approximations), the corner is 1;
- a weight is a ``(G, dB, dA)`` matrix per group (rows: the group's output
  channels; columns: its input channels times kernel taps, in the order of
  ``A``), so that ``kron(B_g, A_g)`` acts on it as ``B_g W_g A_g``.

Channels are dim 1 of a conv output ``(N, C_out, *O)`` and the last dim of a
``Linear`` output ``(N, *, C_out)``; columns carry one more leading dim ``M``.
``A`` and ``B`` are Grams (``tnconv.routines.gram``: one triangle where deep, one dense
product where shallow) and, given a running factor ``out``, blended into it in place
(``out = beta * out + alpha * factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from tnconv.conv.hyper import ConvHyper
from tnconv.conv.hyper_cache import cached_conv_hyper
from tnconv.conv.checks import layer as conv_layer
from tnconv.curvature.layer import diag_ggn_weight, per_sample_weight_grad
from tnconv.curvature.patches import (
    FactorCost, accumulate_input_factor, diag_ggn_by_columns, diag_ggn_by_location_pairs,
)
from tnconv.curvature.patches import input_factor_cost as conv_input_factor_cost
from tnconv.routines import gram as gram_products
from tnconv.routines.gram import HALF, accumulate_gram, gram
from tnconv.routines.run import finish, run_part, run_routine
from tnconv.routines.table import TABLE

KINDS = ("linear", "conv", "transposed")
WIDE_GROUP = 16
"""Output channels per group from which a conv's GGN diagonal is taken by products of its patches."""


@dataclass(frozen=True)
class Geometry:
    """A supported layer as the per-layer routines see it.

    ``kind`` is one of ``KINDS``; ``conv`` holds the keyword arguments of the
    ``tnconv.curvature`` conv routines (``kernel_size``, ``stride``, ``padding``
    pairs, ``dilation``, ``groups``, ``transposed``, ``output_padding``), empty for ``Linear``.
    """

    kind: str
    groups: int
    out_channels: int
    conv: dict[str, object] = field(default_factory=dict)


def layout(module: torch.nn.Module) -> Geometry:
    """A supported layer's kind, groups and output channels: enough to reshape its parameters."""
    if isinstance(module, torch.nn.Linear):
        return Geometry("linear", 1, module.out_features)
    kind = "transposed" if module.transposed else "conv"
    return Geometry(kind, module.groups, module.out_channels)  # type: ignore[arg-type]


def geometry(
    name: str, module: torch.nn.Module, x: torch.Tensor, output_shape: torch.Size
) -> tuple[torch.Tensor, Geometry]:
    """The layer ``module`` (called ``name``) that mapped ``x`` to an output of ``output_shape``, and ``x`` as its
    routines take it.

    A conv with ``padding_mode`` other than zeros gets ``x`` padded in that mode and
    zero padding; a transposed conv's ``output_padding`` is read from ``output_shape`` (it
    differs from the attribute when its forward got ``output_size``).
    """
    shape = layout(module)
    if shape.kind == "linear":
        if x.ndim < 2:
            raise ValueError(f"layer {name!r} (Linear) needs a batched input (N, *, in_features), got {tuple(x.shape)}")
        return x, shape
    dims = len(module.kernel_size)  # type: ignore[arg-type]
    if x.ndim != dims + 2:
        raise ValueError(
            f"layer {name!r} needs a batched input (N, C_in, *{dims} spatial dims), got shape {tuple(x.shape)}"
        )
    transposed = shape.kind == "transposed"
    mode = "zeros" if transposed else str(module.padding_mode)
    output_padding: tuple[int, ...] = tuple(module.output_padding) if transposed else (0,) * dims  # type: ignore[arg-type]
    hyper = cached_conv_hyper(tuple(x.shape), dict(
        kernel_size=module.kernel_size, stride=module.stride, padding=module.padding, dilation=module.dilation,
        groups=module.groups, padding_mode=mode, output_padding=output_padding, transposed=transposed,
    ))  # fmt: skip
    if transposed:  # a forward given output_size pads differently from the attribute
        output_padding = tuple(
            op + out - size for op, out, size in zip(output_padding, output_shape[2:], hyper.output_size)
        )
    padding: object = hyper.padding
    if mode != "zeros":
        x = F.pad(x, [side for pair in reversed(hyper.padding) for side in pair], mode=mode)
        padding = 0
    arguments = dict(
        kernel_size=hyper.kernel_size, stride=hyper.stride, padding=padding, dilation=hyper.dilation,
        groups=hyper.groups, transposed=transposed, output_padding=output_padding,
    )  # fmt: skip
    return x, replace(shape, conv=arguments)


def locations(x: torch.Tensor) -> torch.Tensor:
    """A ``Linear`` input ``(N, *, d)`` as ``(N, T, d)``."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def channels_last(columns: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """Output columns ``(M, N, C_out, *O)`` or ``(M, N, *, C_out)`` as ``(M, N, T, G, C_out // G)``."""
    m, n = columns.shape[:2]
    if layer.kind == "linear":
        flat = columns.reshape(m, n, -1, layer.out_channels)
    else:
        flat = columns.reshape(m, n, layer.out_channels, -1).transpose(2, 3)
    return flat.reshape(*flat.shape[:3], layer.groups, layer.out_channels // layer.groups)


@dataclass(frozen=True)
class InputSums:
    """Each sample's patches summed over the layer's ``locations`` ``T``, ``sums`` ``(N, G, d)``
    (``sum_t u[n, g, :, t]``), and KFAC-reduce's scaling ``scale = 1/(N*T^2)``: KFAC-reduce's ``A``, its diagonal
    (``input_factor_diagonal``) and a joined bias's mean patch (``mean_patch``) are all read from them, so that a
    batch passes over each input once (``input_sums``)."""

    sums: torch.Tensor
    locations: int
    scale: float

    @property
    def rows(self) -> torch.Tensor:
        """The sums as the rows of KFAC-reduce's Gram, ``(1, G, d, N)`` (a view)."""
        return self.sums.permute(1, 2, 0)[None]


def input_sums(x: torch.Tensor, layer: Geometry) -> InputSums:
    """The ``InputSums`` of the layer's input ``x``: a conv layer's by the ``kfac_reduce`` routine's shortcut part
    (float32 for half ``x``), a ``Linear``'s (``x`` ``(N, *, d)``) its inputs summed over the locations ``*``
    (``G = 1``, in ``x``'s dtype)."""
    if layer.kind == "linear":
        u = locations(x)
        batch, count = u.shape[:2]
        return InputSums(u.sum(1)[:, None], count, 1.0 / (batch * count**2))
    hyper = conv_layer(x, layer.conv)
    routine = TABLE["kfac_reduce"]
    part = run_part(routine, hyper, {"X": x}).reshape(hyper.batch, hyper.groups, -1)
    return InputSums(part, math.prod(hyper.output_size), finish(routine, hyper).factor)


def input_factor(
    x: torch.Tensor, layer: Geometry, reduce: bool, out: torch.Tensor | None = None, alpha: float = 1.0,
    beta: float = 0.0, sums: InputSums | None = None,
) -> torch.Tensor:
    """``out = beta * out + alpha * A`` in place for KFAC's ``A`` ``(G, d, d)``: ``1/(N*T) sum u u^T`` (expand)
    or ``1/(N*T^2) sum_n (sum_t u)(sum_t u)^T``; a new ``A`` (float32 for half ``x``) when ``out`` is None.
    KFAC-reduce's is the Gram of ``sums`` (``input_sums`` of ``x``, formed here when None).

    One triangle of the Gram is multiplied and mirrored (``tnconv.routines.gram``): exactly
    symmetric, with no temporary of the factor's size.
    """
    if reduce:
        sums = input_sums(x, layer) if sums is None else sums
        return _gram_into(sums.rows, out, alpha * sums.scale, beta)
    if layer.kind != "linear":
        return accumulate_input_factor(x, conv_layer(x, layer.conv), reduce, out, alpha, beta)
    u = locations(x)
    rows, scale = u.reshape(-1, u.shape[-1]).T, 1.0 / (u.shape[0] * u.shape[1])
    return _gram_into(rows[None, None], out, alpha * scale, beta)


def input_factor_cost(x: torch.Tensor, layer: Geometry, reduce: bool) -> FactorCost:
    """What ``input_factor(x, layer, reduce)`` runs, in words, and its FLOPs (2 per multiply-add), without running it.

    A conv layer: ``tnconv.curvature.patches.input_factor_cost``. A ``Linear`` (``x`` ``(N, *, d)``
    with ``T`` locations): the Gram of its inputs ``(1, 1, d, N*T)`` (expand) or of their
    location sums ``(1, 1, d, N)`` after ``N*(T-1)*d`` additions (reduce), as ``gram.flops`` counts it.
    """
    if layer.kind != "linear":
        return conv_input_factor_cost(conv_layer(x, layer.conv), reduce)
    batch, count, d = locations(x).shape
    rows = (1, 1, d, batch if reduce else batch * count)
    summed = batch * (count - 1) * d if reduce else 0
    words = ("location sums + " if reduce else "") + gram_products.strategy(rows)
    return FactorCost(words, None, summed, gram_products.flops(rows), batch * d if reduce else 0)


def _gram_into(rows: torch.Tensor, out: torch.Tensor | None, alpha: float, beta: float) -> torch.Tensor:
    """``accumulate_gram`` of ``rows`` ``(S, G, d, T)`` into ``out``, or into a new factor when it is None."""
    return gram(rows, alpha) if out is None else accumulate_gram(rows, out, alpha, beta)


def mean_patch(x: torch.Tensor, layer: Geometry, sums: InputSums | None = None) -> torch.Tensor:
    """The mean of the patches ``u_g[n, t]`` over samples and locations: ``(G, d)`` (float32 for half ``x``); from
    ``sums`` (``input_sums`` of ``x``) where given."""
    if sums is not None:
        wide = sums.sums.float() if sums.sums.dtype in HALF else sums.sums
        return wide.sum(0).div_(wide.shape[0] * sums.locations)
    if x.dtype in HALF:
        x = x.float()
    if layer.kind == "linear":
        return locations(x).mean((0, 1))[None]
    hyper = conv_layer(x, layer.conv)
    return patch_sums(x, hyper).sum(0).div_(hyper.batch * math.prod(hyper.output_size))


def patch_sums(x: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """Each sample's patches summed over locations, ``sum_t u_g[n, t]``: ``(N, G, d)`` (the ``patch_sums`` routine)."""
    return run_routine(TABLE["patch_sums"], hyper, {"X": x}).reshape(hyper.batch, hyper.groups, -1)


def input_factor_diagonal(
    x: torch.Tensor, layer: Geometry, reduce: bool, sums: InputSums | None = None
) -> torch.Tensor:
    """The diagonal ``(G, d)`` of the unscaled Gram behind ``input_factor`` (float32 for half ``x``): per patch entry,
    ``sum_{n,t} u^2`` (expand) or ``sum_n (sum_t u)^2`` (reduce: from ``sums``, ``input_sums`` of ``x``, where
    given, the sums that ``input_factor`` multiplies).

    A Gram's entries are bounded by its diagonal (Cauchy-Schwarz: ``|P_ab| <= max(P_aa, P_bb)``, also
    for every partial sum), so a finite, not too large diagonal means a finite factor: the check
    ``KFAC.update`` makes before it blends a batch in, at the cost of one pass over the input (expand, conv
    layers: the patch sums of ``x^2``: squaring commutes with zero padding, and other padding modes are
    applied to ``x`` before; reduce: none beyond the sums that ``A`` is formed from).
    """
    wide = torch.float32 if x.dtype in HALF else None
    if reduce:
        sums = input_sums(x, layer) if sums is None else sums
        return torch.linalg.vector_norm(sums.sums, dim=0, dtype=wide).square()
    if layer.kind == "linear":
        return torch.linalg.vector_norm(locations(x), dim=(0, 1), dtype=wide).square()[None]
    x = x if wide is None else x.to(wide)
    return patch_sums(x.square(), conv_layer(x, layer.conv)).sum(0)


def output_factor_diagonal(columns: torch.Tensor, layer: Geometry, reduce: bool) -> torch.Tensor:
    """The diagonal ``(G, c)`` of the Gram behind ``output_factor`` (in float32 for half columns): per output
    channel, ``sum_{m,n,t} v^2`` (expand) or ``sum_{m,n} (sum_t v)^2`` (reduce, summed over ``t`` in the columns'
    dtype, as ``output_factor`` does); see ``input_factor_diagonal``."""
    v = channels_last(columns, layer)  # (M, N, T, G, c)
    if reduce:
        v = v.sum(2, keepdim=True)
    return torch.linalg.vector_norm(v, dim=(0, 1, 2), dtype=torch.float32 if v.dtype in HALF else None).square()


def accumulate_bias(joined: torch.Tensor, mean: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``beta * joined + alpha * [mean, 1]`` in place on the bias row and column of ``joined`` ``(G, d + 1, d + 1)``
    (not read when ``beta == 0``); returns ``joined``."""
    d = mean.shape[1]
    column, corner = joined[:, :d, d], joined[:, d, d]
    if beta == 0:
        column.copy_(mean).mul_(alpha)
        corner.fill_(alpha)
    else:
        column.mul_(beta).add_(mean, alpha=alpha)
        corner.mul_(beta).add_(alpha)
    joined[:, d, :d] = column
    return joined


def output_factor(
    columns: torch.Tensor, layer: Geometry, reduce: bool, out: torch.Tensor | None = None, alpha: float = 1.0,
    beta: float = 0.0,
) -> torch.Tensor:
    """``out = beta * out + alpha * B`` in place for KFAC's ``B`` ``(G, c, c)`` from columns at the layer output:
    ``sum_{m,n,t} v v^T`` or with ``sum_t v``; a new ``B`` (float32 for half columns) when ``out`` is None.

    Conv columns ``(M, N, C_out, *O)`` are read as the rows ``(M*N, G, c, T)`` of a Gram
    without a copy; ``tnconv.routines.gram`` multiplies them (one triangle where deep), per ``(m, n)`` pair
    where there are many locations, else after one copy into ``(G, c, M*N*T)`` (deep
    layers, KFAC-reduce's ``T = 1``), where per-pair products would be thin and each write
    a whole ``c x c`` result.
    """
    if layer.kind == "linear":
        flat = columns.reshape(-1, columns.shape[-1]) if not reduce else locations(columns.flatten(0, 1)).sum(1)
        return _gram_into(flat.T[None, None], out, alpha, beta)
    per_group = layer.out_channels // layer.groups
    v = columns.reshape(-1, layer.groups, per_group, math.prod(columns.shape[3:]))  # (M*N, G, c, T)
    if reduce:
        v = v.sum(-1, keepdim=True)
    return _gram_into(v, out, alpha, beta)


def weight_matrix(weight: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """A weight-shaped tensor as ``(G, dB, d)`` per group, columns in the order of ``A``."""
    groups = layer.groups
    if layer.kind == "linear":
        return weight[None]
    if layer.kind == "conv":
        return weight.reshape(groups, weight.shape[0] // groups, -1)
    per_group = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)  # (G, C_in/G, C_out/G, K)
    return per_group.transpose(1, 2).reshape(groups, weight.shape[1], -1)


def matrix_weight(matrix: torch.Tensor, layer: Geometry, shape: torch.Size) -> torch.Tensor:
    """The inverse of ``weight_matrix``: ``(G, dB, d)`` back to the weight ``shape``."""
    if layer.kind != "transposed":
        return matrix.reshape(shape)
    groups, rows = layer.groups, shape[1]
    per_group = matrix.reshape(groups, rows, shape[0] // groups, -1).transpose(1, 2)
    return per_group.reshape(shape)


def bias_matrix(bias: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """A bias-shaped tensor ``(C_out,)`` as ``(G, dB, 1)``."""
    return bias.reshape(layer.groups, -1, 1)


def per_sample_weight(x: torch.Tensor, gradient: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """Each sample's weight gradient ``(N, *weight.shape)`` from the output gradient ``(N, *y.shape[1:])``."""
    if layer.kind != "linear":
        return per_sample_weight_grad(x, gradient, **layer.conv)  # type: ignore[arg-type]
    return torch.einsum("nto,nti->noi", channels_last(gradient[None], layer)[0].flatten(2), locations(x))


def per_sample_bias(gradient: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """Each sample's bias gradient ``(N, C_out)``: the output gradient summed over locations."""
    return channels_last(gradient[None], layer)[0].sum(1).flatten(1)


def weight_diag_ggn(x: torch.Tensor, columns: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """The GGN diagonal of the weight: ``sum_{m,n} (weight VJP of columns[m, n])^2``, weight-shaped.

    Conv layers take the cheapest of three ways (``tnconv.curvature.patches``): through the
    location pairs where ``T + 1 <= 2 M`` (deep layers), by one product of the patches per
    column where a group has ``WIDE_GROUP`` output channels or more, else the ``diag_ggn``
    routine (its per-sample weight-VJP kernel; depthwise layers).
    """
    if layer.kind != "linear":
        per_group, count = layer.out_channels // layer.groups, math.prod(columns.shape[3:])
        by_pairs = count + 1 <= 2 * columns.shape[0]
        if not by_pairs and per_group < WIDE_GROUP:
            return diag_ggn_weight(x, columns, **layer.conv)  # type: ignore[arg-type]
        hyper = conv_layer(x, layer.conv, layer.out_channels)
        matrix = (diag_ggn_by_location_pairs if by_pairs else diag_ggn_by_columns)(x, columns, hyper)
        return matrix_weight(matrix, layer, torch.Size(hyper.weight_shape))
    v, u = channels_last(columns, layer).flatten(3), locations(x)
    if v.shape[2] == 1:  # no shared locations: the VJP is an outer product, square its factors
        return torch.einsum("mno,ni->oi", v[:, :, 0].square(), u[:, 0].square())
    return torch.einsum("mnto,nti->mnoi", v, u).square().sum((0, 1))


def bias_diag_ggn(columns: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """The GGN diagonal of the bias ``(C_out,)``: ``sum_{m,n} (sum_t v[m, n, t])^2``."""
    return channels_last(columns, layer).sum(2).flatten(2).square().sum((0, 1))
