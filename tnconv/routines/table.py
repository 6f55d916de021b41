"""``TABLE``: every conv routine tnconv knows, one entry each (see ``tnconv.routines.routine.Routine``).

``conv_network``, ``tnconv.functional``, ``tnconv.curvature``'s per-layer
functions, ``tnconv derive`` (its stages, ``--check`` and ``--bench``) read
routines from here. To add one, add an entry (and its tests): its derivation's
passes live in ``tnconv.conv.derived``, its reference in
``tnconv.routines.references``; functions that take the table accept a copy
(``routine_table((*TABLE.values(), new))``) through their ``routines=`` argument.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tnconv.routines.routine import (
    Costs, Operand, Options, Reference, Routine, Scaling, Shortcut, Stage, later, routine_table,
)

if TYPE_CHECKING:
    from tnconv.conv.hyper import ConvHyper

# --- shapes ---------------------------------------------------------------------------------


def input_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """The layer input ``(N, C_in, *I)``."""
    return hyper.input_shape


def weight_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """The torch weight: ``(C_out, C_in // G, *K)``, ``(C_in, C_out // G, *K)`` when transposed."""
    return hyper.weight_shape


def output_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """The layer output ``(N, C_out, *O)``."""
    return hyper.output_shape


def columns_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """Unfolded columns ``(N, C_in * prod(K), T)`` (``F.unfold``'s layout), ``T`` the output locations."""
    return hyper.batch, hyper.in_channels * hyper.kernel_elements, math.prod(hyper.output_size)


def factor_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """A Kronecker factor per group ``(G, d, d)``, ``d = C_in // G * prod(K)``."""
    d = hyper.patch_size
    return hyper.groups, d, d


def diagonal_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """The diagonal of a Kronecker factor per group ``(G, d)``, ``d = C_in // G * prod(K)``."""
    return hyper.groups, hyper.patch_size


def sums_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """The patches summed over the output locations ``(N, C_in * prod(K))``."""
    return hyper.batch, hyper.in_channels * hyper.kernel_elements


def per_sample_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """One weight gradient per sample ``(N, *weight.shape)``."""
    return hyper.batch, *hyper.weight_shape


def batch_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """One number per sample ``(N,)``."""
    return (hyper.batch,)


def output_columns_shape(hyper: ConvHyper, options: Options) -> tuple[int, ...]:
    """M columns of the layer output ``(M, N, C_out, *O)``."""
    if options.columns is None:
        raise ValueError("columns (M) is needed for the shape of the GGN columns, got None")
    return options.columns, *hyper.output_shape


X = Operand("X", "the layer input (N, C_in, *I)", input_shape)
W = Operand("W", "the torch weight", weight_shape)
V = Operand("V", "the gradient w.r.t. the layer output (N, C_out, *O)", output_shape)

# --- the stages of the derived routines --------------------------------------------------------

PATCH_SUMS = Stage("fuse: sum_o U[n,g,c_in,k..,o..] with U := unfold (patch sums)",
                   later("tnconv.conv.derived:sum_over_locations"))
LOSS = Stage("fuse: l[n] = sum V[n,..] Y[n,..] with Y := forward (the linearised loss of each sample)",
             later("tnconv.conv.derived:linearised_loss"))
WEIGHT = Stage("differentiate: d l[n] / dW (n kept: one weight gradient per sample)",
               later("tnconv.conv.derived:differentiate_weight"))
COLUMNS = Stage("vmap: leg m of size {columns} on V (columns of the GGN factor)",
                later("tnconv.conv.derived:vmap_columns"))

SQUARED_NORMS = Stage("contract copies: J[n,w] J[n,w] -> n over the weight legs w, J := the per-sample gradient "
                      "(each sample's squared norm)", later("tnconv.conv.derived:squared_norms"))
SAMPLE_SQUARES = Stage("contract copies: J[n,w] J[n,w] -> w over n, J := the per-sample gradient (the squares "
                       "summed over samples)", later("tnconv.conv.derived:squares_over_samples"))
LOCATION_PAIRS = Costs(
    "N*C_in*K*C_out*(T + 1)/G", "N*T^2*(C_in*K + C_out + G)",
    "pairs of output locations: sum_{t,t'} (v_t . v_t') (u_t . u_t') per sample and group, never forming the "
    "per-sample gradients",
)  # materialised: N*G per-sample (c, d) = (C_out/G, C_in/G*K) gradients over T locations, then squared;
#    pairs: the T x T Grams of v (c long) and u (d long) per sample and group, multiplied


def gram_stage(tied: str) -> Stage:
    return Stage(f"fuse: P[n,g,c_in,k..] P[n,g,c_in_2,k_2..] summed over {tied}, with P := the patches",
                 later("tnconv.conv.derived:gram"))


def _reference(name: str, largest: str | None = None) -> Reference:
    return Reference(later(f"tnconv.routines.references:{name}"),
                     None if largest is None else later(f"tnconv.routines.references:{largest}"))


UNFOLDED = "unfolded_size"  # references that unfold the input create (N, C_in * prod(K), T)

TABLE = routine_table((
    Routine(
        "forward", "the layer's output Y = conv(X, W) (ConvTranspose with --transposed)", "forward", (X, W),
        output_shape, _reference("forward"), function="tnconv.functional.conv",
    ),
    Routine(
        "input_vjp", "the gradient w.r.t. the layer input for the output gradient V", "input_vjp", (V, W),
        input_shape, _reference("input_vjp"), function="tnconv.functional.conv_input_vjp",
    ),
    Routine(
        "weight_vjp", "the gradient w.r.t. the weight for the output gradient V", "weight_vjp", (X, V),
        weight_shape, _reference("weight_vjp"), function="tnconv.functional.conv_weight_vjp",
    ),
    Routine(
        "unfold", "im2col: the patches of X, (N, C_in*prod(K), T)", "unfold", (X,), columns_shape,
        _reference("unfold", UNFOLDED), function="tnconv.functional.unfold",
    ),
    Routine(
        "unfold_transpose", "im2col of the transposed layer (its conv's patches)", "unfold", (X,), columns_shape,
        _reference("unfold", UNFOLDED), transposed=True, function="tnconv.functional.unfold_transpose",
    ),
    Routine(
        "transpose_forward", "the output of the transposed layer", "forward", (X, W), output_shape,
        _reference("forward"), transposed=True, function="tnconv.functional.conv_transpose",
    ),
    Routine(
        "fold", "col2im, unfold's adjoint: columns X (N, C*prod(K), L) summed into an image", "fold",
        (Operand("X", "unfolded columns (N, C*prod(K), L)", columns_shape),), input_shape, _reference("fold"),
        function="tnconv.functional.fold",
    ),
    Routine(
        "patch_sums", "the patches summed over the output locations, sum_t u[n,t]: (N, C_in*prod(K))", "unfold",
        (X,), sums_shape, _reference("patch_sums", UNFOLDED), derivation=(PATCH_SUMS,),
    ),
    Routine(
        "kfac_expand", "KFAC-expand input factor A_g = 1/(N*T) sum_{n,t} u u^T over the patches u, (G, d, d)",
        "unfold", (X,), factor_shape, _reference("kfac_expand", UNFOLDED),
        derivation=(gram_stage("n and the locations o.."),),
        scaling=Scaling("1/(N*T)", "sum_{n,t} u u^T over the patches u", "the KFAC-expand factor",
                        "(G, d, d)", "d = C_in/G * prod(K)"),
        shortcut=Shortcut(0, later("tnconv.routines.run:gram_of_patches"),
                          "the patches (N, G, d, T) are formed once and multiplied with themselves by upper panels "
                          "(a symmetric product: about half the multiply-adds of the network's dense one)"),
        widen_half=True, function="tnconv.curvature.kfac_expand_factor",
    ),
    Routine(
        "kfac_reduce", "KFAC-reduce input factor A_g = 1/(N*T^2) sum_n (sum_t u)(sum_t u)^T, (G, d, d)",
        "unfold", (X,), factor_shape, _reference("kfac_reduce", UNFOLDED),
        derivation=(PATCH_SUMS, gram_stage("n")),
        scaling=Scaling("1/(N*T^2)", "sum_n (sum_t u)(sum_t u)^T over the patches u", "the KFAC-reduce factor",
                        "(G, d, d)", "d = C_in/G * prod(K)"),
        shortcut=Shortcut(1, later("tnconv.routines.run:gram_of_sums"),
                          "the patch sums (N, G, d) are computed once and multiplied with themselves by upper "
                          "panels (a symmetric product, mirrored)"),
        widen_half=True, function="tnconv.curvature.kfac_reduce_factor",
    ),
    Routine(
        "kfac_expand_diag", "diag(A_g) of KFAC-expand, 1/(N*T) sum_{n,t} u*u: the squared patches summed, (G, d)",
        "unfold", (X,), diagonal_shape, _reference("kfac_expand_diag", UNFOLDED),
        derivation=(
            Stage("fuse: U[n,g,c_in,k..,o..] U[n,g,c_in,k..,o..] summed over n and the locations o.., with "
                  "U := the patches (the squared patches)", later("tnconv.conv.derived:squared_patches")),
            Stage("pass: square_patterns (Pi[k,o,i] Pi[k,o,i'] = Pi[k,o,i] delta[i,i']: both copies of X read one "
                  "pixel, the patch sums of the squared input)", later("tnconv.conv.derived:square_patterns")),
        ),
        scaling=Scaling("1/(N*T)", "sum_{n,t} u*u over the patches u", "the KFAC-expand factor's diagonal",
                        "(G, d)", "d = C_in/G * prod(K)"),
        widen_half=True,
    ),
    Routine(
        "per_sample_grad", "each sample's weight gradient, (N, *weight.shape)", "forward", (X, V),
        per_sample_shape, _reference("per_sample_grad", UNFOLDED), derivation=(LOSS, WEIGHT),
        function="tnconv.curvature.per_sample_weight_grad",
    ),
    Routine(
        "diag_ggn", "the GGN diagonal of the weight, sum_{m,n} (weight VJP of V[m, n])^2, for M columns V",
        "forward", (X, Operand("V", "M columns of the layer output (M, N, C_out, *O)", output_columns_shape)),
        weight_shape, _reference("diag_ggn", "diag_ggn_largest"),
        derivation=(LOSS, WEIGHT, COLUMNS, Stage("fuse: J[m,n,w] J[m,n,w] -> w, with J := the vmapped per-sample "
                                                  "gradient", later("tnconv.conv.derived:square_columns"))),
        takes_columns=True,
        shortcut=Shortcut(3, later("tnconv.routines.run:sum_of_squares"),
                          "the per-column weight gradients (M, N, *W) are computed once and squared (2.5-3x faster "
                          "than the whole network on depthwise layers)"),
        function="tnconv.curvature.diag_ggn_weight",
    ),
    Routine(
        "per_sample_grad_norm", "each sample's squared weight-gradient norm ||sum_t v_t u_t^T||^2, (N,)", "forward",
        (X, V), batch_shape, _reference("per_sample_grad_norm", "per_sample_largest"),
        derivation=(LOSS, WEIGHT, SQUARED_NORMS),
        shortcut=Shortcut(2, later("tnconv.routines.run:squared_norms"),
                          "the per-sample gradients (N, *W) are computed once and squared (the network would form "
                          "them twice)", LOCATION_PAIRS),
        function="tnconv.curvature.per_sample_weight_grad_norm",
    ),
    Routine(
        "sum_grad_squared", "the squared per-sample weight gradients summed over samples, sum_n g_n^2 (weight.shape)",
        "forward", (X, V), weight_shape, _reference("sum_grad_squared", "per_sample_largest"),
        derivation=(LOSS, WEIGHT, SAMPLE_SQUARES),
        shortcut=Shortcut(2, later("tnconv.routines.run:squares_over_samples"),
                          "the per-sample gradients (N, *W) are computed once and squared"),
        function="tnconv.curvature.sum_weight_grad_squared",
    ),
))
"""The routines, by canonical name (an immutable mapping)."""
