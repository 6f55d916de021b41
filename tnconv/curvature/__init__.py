"""``tnconv.curvature``: second-order quantities of conv layers, from derived tensor networks.

With ``G`` groups, ``d = C_in // G * prod(K)``, ``T`` output locations and
``u[n, t]`` the unfolded patch of sample ``n`` at location ``t``:

- ``kfac_expand_factor``: ``A_g = 1/(N*T) sum_{n,t} u_g u_g^T``, shape ``(G, d, d)``.
- ``kfac_reduce_factor``: ``A_g = 1/(N*T^2) sum_n (sum_t u_g)(sum_t u_g)^T``, never forming ``u``.
- ``per_sample_weight_grad``: ``(N, *weight.shape)``, the weight VJP of each sample.
- ``diag_ggn_weight``: ``sum_{m,n} (weight VJP of sqrt_ggn[m, n])^2`` (BackPACK's DiagGGN).
- ``per_sample_weight_grad_norm``: ``(N,)`` each sample's squared weight-gradient norm, through pairs of
  output locations where that is cheaper than forming the per-sample gradients;
  ``sum_weight_grad_squared``: their squares summed over samples, ``weight.shape``.
- ``weight_vjp_dropout``: an unbiased weight VJP from a random subset of channels, output-row blocks or pixels,
  so that its cost falls with ``keep``.
- ``sqrt_ggn``: columns ``S[m, n, c]`` with ``sum_m S S^T`` = the Hessian of a cross-entropy or MSE
  loss w.r.t. the model output, exactly (``M = C``) or by Monte-Carlo (``M = mc_samples``);
  ``pullback`` carries them back to a layer output.

Whole models (any ``nn.Module``; its ``Conv*d``, ``ConvTranspose*d`` and ``Linear`` layers):

- ``KFAC(model, loss_function, approx=, fisher=, ...)``: running Kronecker factors
  ``(A, B)`` per layer and group, ``.update(inputs, targets)``, ``.factors``,
  ``.preconditioner(damping)`` (a ``Preconditioner``: callable on gradients, ``.step()``);
- ``per_sample_grads`` and ``diag_ggn`` of the supported layers' weights and biases;
- ``per_sample_grad_norms``, ``sum_grad_squared`` and ``grad_variance`` (BackPACK's ``BatchL2Grad``,
  ``SumGradSquared``, ``Variance``), also of GroupNorm, LayerNorm and InstanceNorm affine parameters.

Modules: ``layer`` (the per-layer factors), ``loss`` (loss-Hessian factorisations);
``weight_vjp_dropout`` (tensor dropout) lives in ``tnconv.dropout`` (below ``tnconv.nn``, whose
approximate backprop uses it) and the argument checks in ``tnconv.conv.checks``; for whole models
``supported`` (which layers get curvature, their parameters' keys, tied parameters, BatchNorm with
batch statistics), ``hooks`` (capturing inputs and pulling columns back), ``columns`` (the columns
at the model output), ``factors`` (the per-layer math), ``kfac`` with ``kfac_batch`` (a batch's
checks before it joins the factors), ``preconditioner`` and ``model`` (per-sample gradients, GGN
diagonal), ``norms`` (per-sample gradient norms of a layer), ``normalization`` (normalisation
layers' per-sample gradients) and ``statistics`` (their model-level statistics).
Factors are per group and never averaged over groups. ``transposed=True``
means the layer is a ``ConvTranspose`` (``T`` counts its output locations).
"""

from tnconv.curvature.kfac import KFAC
from tnconv.curvature.layer import diag_ggn_weight, kfac_expand_factor, kfac_reduce_factor, per_sample_weight_grad
from tnconv.curvature.loss import pullback, sqrt_ggn
from tnconv.curvature.model import diag_ggn, per_sample_grads
from tnconv.curvature.norms import per_sample_weight_grad_norm, sum_weight_grad_squared
from tnconv.curvature.preconditioner import Preconditioner
from tnconv.curvature.statistics import grad_variance, per_sample_grad_norms, sum_grad_squared
from tnconv.dropout.weight_vjp import weight_vjp_dropout
from tnconv.namespace import public_dir

__all__ = [
    "kfac_expand_factor",
    "kfac_reduce_factor",
    "per_sample_weight_grad",
    "diag_ggn_weight",
    "weight_vjp_dropout",
    "sqrt_ggn",
    "pullback",
    "KFAC",
    "Preconditioner",
    "per_sample_grads",
    "diag_ggn",
    "per_sample_weight_grad_norm",
    "sum_weight_grad_squared",
    "per_sample_grad_norms",
    "sum_grad_squared",
    "grad_variance",
]

__dir__ = public_dir(globals(), __all__)
