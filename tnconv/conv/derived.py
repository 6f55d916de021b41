"""Second-order conv routines derived from the conv diagram (``conv_network`` ops kfac_expand, ...).

Each network is derived from the plain routines of ``tnconv.conv.networks``
with the passes (``fuse``, ``differentiate``, ``vmap``, ``simplify``):

- ``kfac_expand``: a two-tensor network ``U[n,g,c_in,k..,t..] U[n,g,c_in_2,k_2..,t..]``
  (the Gram matrix of the patches over samples ``n`` and output locations
  ``t``) with both ``U`` fused with the unfold network: two copies of ``X``
  whose ``n`` and location legs are tied. Output ``(g, c_in, k.., c_in_2, k_2..)``.
- ``kfac_reduce``: the same, but each copy keeps its own locations ``t``,
  ``t_2``, summed inside the copy. The locations then sit on the index
  patterns alone, so ``simplify`` turns ``sum_o Pi`` into the small
  ``PatternSum`` ``(K, I)`` and the unfolded input is never formed. (For a
  transposed layer the locations are the patterns' ``i`` legs; their sum is a
  ``(K, O)`` 0/1 matrix that the contraction forms from the small pattern.)
- ``per_sample_grad``: the derivative w.r.t. ``W`` of the per-sample
  linearised loss ``l[n] = sum V[n,..] Y[n,..]`` with ``Y`` fused with the
  forward network: the weight VJP with the batch leg kept, ``(n, *weight legs)``.
- ``diag_ggn``: ``per_sample_grad`` vmapped over the GGN columns (leg ``m``
  on ``V``, which then holds ``sqrt_ggn`` ``(M, N, C_out, *O)``), and a
  network ``J[m,n,w] J[m,n,w] -> w`` with both ``J`` fused with it: the square
  (not multilinear in ``V``) is the product of two copies, summed over ``m, n``.

The KFAC and DiagGGN networks hold two copies of one factor (the patches,
their location sums, the per-column weight VJPs). ``network("patch_sums")``
and ``network("column_grads")`` are that single copy, which
``tnconv.curvature`` evaluates once and multiplies with itself (the lowering
of a whole network shares equal steps of the two copies too, but then leaves
the factor in an order that needs one more copy on depthwise layers).
It also applies the scalings (``1/(N*T)``, ``1/(N*T^2)``) and reshapes to ``(G, d, d)`` and
torch shapes. ``kept_pixels_network`` is the weight VJP over a random subset
of input pixels (spatial tensor dropout).
"""

from __future__ import annotations

from functools import lru_cache

from tnconv.conv.hyper import ConvHyper
from tnconv.conv.networks import build as build_routine
from tnconv.conv.networks import spatial_legs
from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, leg_symbol
from tnconv.ir.tensors import Data
from tnconv.ir.views import Unflatten
from tnconv.passes.differentiate import differentiate
from tnconv.passes.fuse import fuse
from tnconv.passes.simplify import simplify as simplify_network
from tnconv.passes.vmap import vmap

OPS = ("kfac_expand", "kfac_reduce", "per_sample_grad", "diag_ggn")
# the single copy inside the kfac and diag_ggn networks, to evaluate them without computing it twice
PARTS = ("patch_sums", "column_grads")


def second(leg: str) -> str:
    """The name of ``leg`` on the second copy (``c_in`` -> ``c_in_2``)."""
    return f"{leg}_2"


def patches_network(hyper: ConvHyper, reduce: bool) -> Network:
    """The patches ``U[n,g,c_in,k..,t..]`` (unfold), or (reduce) their sums over locations ``(n,g,c_in,k..)``.

    The sums are the one-tensor network ``sum_t U`` fused with unfold; ``simplify``
    then replaces ``sum_o Pi`` by ``PatternSum``.
    """
    unfold = build_routine("unfold", hyper)
    if not reduce:
        return unfold
    kernel = spatial_legs("k", hyper.dims)
    sizes = {leg: unfold.size(leg) for leg in unfold.output}
    total = Network((Tensor("U", unfold.output),), ("n", "g", "c_in", *kernel), sizes)
    return fuse(total, "U", unfold)


def kfac_network(hyper: ConvHyper, reduce: bool) -> Network:
    """``sum_{n,t} U U_2`` (expand) or ``sum_n (sum_t U)(sum_t U_2)`` (reduce): two copies of the patches.

    The copies share ``n`` and ``g`` (and, for expand, the locations ``t``);
    their channel and kernel legs form the two sides of the factor.
    """
    patches = patches_network(hyper, reduce)
    legs = patches.output  # (n, g, c_in, k.., [t..])
    kernel = spatial_legs("k", hyper.dims)
    untied = ("c_in", *kernel)
    other = tuple(second(leg) if leg in untied else leg for leg in legs)
    sizes = {**{leg: patches.size(leg) for leg in legs}, **{second(leg): patches.size(leg) for leg in untied}}
    gram = Network(
        (Tensor("P", legs), Tensor("P", other)), ("g", "c_in", *kernel, second("c_in"), *map(second, kernel)), sizes
    )
    return fuse(gram, "P", patches)


def output_gradient(hyper: ConvHyper) -> Tensor:
    """The conv networks' ``V``: the gradient w.r.t. the layer output, legs ``(n, g, c_out, t..)``."""
    (v,) = (e for e in build_routine("weight_vjp", hyper).entries if e.name == "V")
    return v


def per_sample_network(hyper: ConvHyper) -> Network:
    """``d/dW sum_{g,c_out,t} V[n,g,c_out,t] Y[n,g,c_out,t]`` with ``Y`` the forward network: ``(n, *W legs)``."""
    forward = build_routine("forward", hyper)
    v = output_gradient(hyper)
    loss = Network((v, Tensor("Y", v.legs)), ("n",), {leg: forward.size(leg) for leg in v.legs})
    return differentiate(fuse(loss, "Y", forward), "W")


def column_grads_network(hyper: ConvHyper, columns: Size) -> Network:
    """``J[m,n,w]``: the per-sample weight VJP vmapped over the GGN columns ``m`` on ``V``."""
    return vmap(per_sample_network(hyper), "m", columns, "V")


def diag_ggn_network(hyper: ConvHyper, columns: Size) -> Network:
    """``sum_{m,n} J[m,n,w]^2`` with ``J`` the per-sample weight VJP vmapped over ``m`` on ``V``."""
    jacobian = column_grads_network(hyper, columns)
    legs = jacobian.output  # (m, n, *W legs)
    square = Network(
        (Tensor("J", legs), Tensor("J", legs)), legs[2:], {leg: jacobian.size(leg) for leg in legs}
    )
    return fuse(square, "J", jacobian)


@lru_cache(maxsize=512)
def network(op: str, hyper: ConvHyper, simplify: bool = True, columns: int | None = None) -> Network:
    """The derived network of ``op`` for a normalised layer (cached).

    ``op`` is one of ``OPS`` or ``PARTS``; ``columns``: M, the number of GGN
    columns of ``diag_ggn`` (symbolic ``m`` when None).
    """
    if op not in OPS + PARTS:
        raise ValueError(f"op must be one of {OPS + PARTS}, got {op!r}")
    if op in ("per_sample_grad", "diag_ggn", "column_grads") and hyper.out_channels is None:
        raise ValueError(f"op={op!r} needs out_channels, got None")
    size = leg_symbol("m") if columns is None else columns
    if op == "patch_sums":
        net = patches_network(hyper, reduce=True)
    elif op in ("kfac_expand", "kfac_reduce"):
        net = kfac_network(hyper, reduce=op == "kfac_reduce")
    elif op == "per_sample_grad":
        net = per_sample_network(hyper)
    elif op == "column_grads":
        net = column_grads_network(hyper, size)
    else:
        net = diag_ggn_network(hyper, size)
    return simplify_network(net) if simplify else net


def kept_pixels_network(hyper: ConvHyper, pixels: int) -> Network:
    """The weight VJP with its contracted input-pixel legs cut down to ``pixels`` kept pixels ``p``.

    ``X[n,g,c_in,i..] Pi[k,o,i].. V[n,g,c_out,o..]`` summed over the kept
    pixels only: ``X`` read at them (``(N, C_in, P)``) and ``U[n,g,c_out,k..,p]
    = sum_o Pi[k,o,i_p] V[n,g,c_out,o]`` (``(N, C_out, *K, P)``, a gather of
    ``V``) meet over ``p``; output the weight legs ``(g, c_out, c_in, k..)``.
    Its cost is proportional to ``pixels``.
    """
    k_legs = spatial_legs("k", hyper.dims)
    groups, c_in, c_out = hyper.groups, hyper.in_channels // hyper.groups, hyper.out_channels // hyper.groups
    x = Tensor("X", ("n", "g", "c_in", "p"), Data((Unflatten(1, (groups, c_in)),)))
    u = Tensor("U", ("n", "g", "c_out", *k_legs, "p"), Data((Unflatten(1, (groups, c_out)),)))
    sizes = {"n": hyper.batch, "g": groups, "c_in": c_in, "c_out": c_out, "p": pixels}
    sizes.update(zip(k_legs, hyper.kernel_size))
    return Network((x, u), ("g", "c_out", "c_in", *k_legs), sizes)
