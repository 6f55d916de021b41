"""``tnconv.curvature``: second-order quantities of conv layers, from derived tensor networks.

With ``G`` groups, ``d = C_in // G * prod(K)``, ``T`` output locations and
``u[n, t]`` the unfolded patch of sample ``n`` at location ``t``:

- ``kfac_expand_factor``: ``A_g = 1/(N*T) sum_{n,t} u_g u_g^T``, shape ``(G, d, d)``.
- ``kfac_reduce_factor``: ``A_g = 1/(N*T^2) sum_n (sum_t u_g)(sum_t u_g)^T``, never forming ``u``.
- ``per_sample_weight_grad``: ``(N, *weight.shape)``, the weight VJP of each sample.
- ``diag_ggn_weight``: ``sum_{m,n} (weight VJP of sqrt_ggn[m, n])^2`` (BackPACK's DiagGGN).
- ``weight_vjp_dropout``: an unbiased weight VJP from a random subset of channels, output-row blocks or pixels,
  so that its cost falls with ``keep``.
- ``sqrt_ggn``: columns ``S[m, n, c]`` with ``sum_m S S^T`` = the Hessian of a cross-entropy or MSE
  loss w.r.t. the model output, exactly (``M = C``) or by Monte-Carlo (``M = mc_samples``);
  ``pullback`` carries them back to a layer output.

Modules: ``layer`` (the per-layer factors), ``loss`` (loss-Hessian factorisations),
``dropout`` (tensor dropout, with ``dropout_slices`` and ``dropout_pixels``), ``checks`` (argument validation they share).
Factors are per group and never averaged over groups. ``transposed=True``
means the layer is a ``ConvTranspose`` (``T`` counts its output locations).
"""

from tnconv.curvature.dropout import weight_vjp_dropout
from tnconv.curvature.layer import diag_ggn_weight, kfac_expand_factor, kfac_reduce_factor, per_sample_weight_grad
from tnconv.curvature.loss import pullback, sqrt_ggn

__all__ = [
    "kfac_expand_factor",
    "kfac_reduce_factor",
    "per_sample_weight_grad",
    "diag_ggn_weight",
    "weight_vjp_dropout",
    "sqrt_ggn",
    "pullback",
]
