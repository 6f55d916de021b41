"""Per-sample squared gradient norms of one layer's weight, and the squared per-sample gradients summed over samples.

A layer's weight gradient for sample n is ``J[n] = sum_t v[n,t] u[n,t]^T`` per group
(``v`` the output gradient at location t, ``c = C_out/G`` long; ``u`` the patch, ``d =
C_in/G * prod(K)`` long). Its squared norm can be taken two ways:

- materialised: form ``J[n]`` (``N*T*d*c`` multiply-adds per group) and square it;
- by pairs of locations ("ghost" norms): ``||J[n]||^2 = sum_{t,t'} (v_t . v_t') (u_t . u_t')``
  (``N*T^2*(d + c)``), never forming ``J``: far cheaper where ``T`` is small and the
  layer wide (deep conv layers, ``Linear`` layers without locations).

The routine ``per_sample_grad_norm`` of ``tnconv.routines.TABLE`` is the per-sample gradient
network contracted with itself over the weight legs; its ``Costs`` formulas
(``LOCATION_PAIRS``) pick its shortcut (the materialised form) or the whole network (whose
contraction path pairs the output locations) per layer. ``Linear`` layers (``T`` their
leading dims between batch and features) take the same decision by the same formulas.
The batch runs in chunks of samples of bounded intermediate size (``chunk_layers``).

``sum_grad_squared`` (``sum_n J[n]^2``) is the GGN diagonal with the output gradient as its one
column (``tnconv.curvature.factors.weight_diag_ggn``), so it takes that function's ways.
"""

from __future__ import annotations

import math

import torch

from tnconv.caches import cached
from tnconv.conv.checks import gradient_layer
from tnconv.conv.checks import layer as conv_layer
from tnconv.conv.hyper import ConvHyper
from tnconv.curvature.factors import Geometry, channels_last, locations
from tnconv.curvature.patches import chunk_layers
from tnconv.routines.run import run_routine
from tnconv.routines.scaling import quantities, shortcut_pays
from tnconv.routines.table import LOCATION_PAIRS, TABLE


def per_sample_weight_grad_norm(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """Each sample's squared weight-gradient norm ``(N,)``: ``||weight VJP of grad_output[n]||^2``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        grad_output: the gradient w.r.t. the layer output ``(N, C_out, *O)``.
        kernel_size, stride, padding, dilation, groups: the layer's, as in ``torch.nn.Conv*d``.
        transposed, output_padding: the layer is a ``ConvTranspose*d`` with this output padding.

    The per-sample gradients are formed and squared, or the squared norms are taken through
    pairs of output locations without them, whichever the ``per_sample_grad_norm`` routine's
    cost formulas find cheaper for the layer (BackPACK's ``BatchL2Grad`` of the weight).
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    return conv_norms(x, grad_output, hyper)


def sum_weight_grad_squared(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """The squared per-sample weight gradients summed over samples, ``weight.shape`` (BackPACK's ``SumGradSquared``).

    Arguments as ``per_sample_weight_grad_norm``; the ``sum_grad_squared`` routine (per-sample
    gradients formed once and squared).
    """
    arguments = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     transposed=transposed, output_padding=output_padding)
    grad_output, hyper = gradient_layer(x, grad_output, "grad_output", 0, arguments)
    return run_routine(TABLE["sum_grad_squared"], hyper, {"X": x, "V": grad_output})


def conv_norms(x: torch.Tensor, gradient: torch.Tensor, hyper: ConvHyper) -> torch.Tensor:
    """The ``per_sample_grad_norm`` routine on the layer ``hyper`` (with ``out_channels``), in chunks of samples
    (``norm_elements`` a sample)."""
    routine = TABLE["per_sample_grad_norm"]
    return torch.cat([run_routine(routine, part, {"X": x[chunk.samples], "V": gradient[chunk.samples]})
                      for chunk, part in chunk_layers(hyper, norm_elements(hyper))])


def norm_elements(hyper: ConvHyper) -> int:
    """Elements a sample of the largest intermediates of the form that ``per_sample_grad_norm``'s cost formulas
    pick on the layer: its patches ``C_in*K*T`` and the per-sample gradient ``prod(W)`` (materialised) or the
    location-pair Grams ``G*T^2`` (pairs). Sized by the form taken, not by both, so that a layer of few locations
    and a large weight (pairs) is not cut into chunks of one or two samples for a gradient it never forms."""
    count = math.prod(hyper.output_size)
    patches = hyper.in_channels * hyper.kernel_elements * count
    if shortcut_pays(LOCATION_PAIRS, quantities(hyper)):
        return max(patches, math.prod(hyper.weight_shape))
    return max(patches, hyper.groups * count**2)


def weight_norms(x: torch.Tensor, gradient: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """Each sample's squared weight-gradient norm ``(N,)`` of a supported layer, from its input ``x`` (as its
    routines take it) and its output gradient ``(N, *y.shape[1:])``."""
    if layer.kind != "linear":
        return conv_norms(x, gradient, conv_layer(x, layer.conv, layer.out_channels))
    v, u = channels_last(gradient[None], layer)[0].flatten(2), locations(x)  # (N, T, c), (N, T, d)
    if linear_materialises(*u.shape, v.shape[2]):
        grads = torch.einsum("nto,nti->noi", v, u).flatten(1)
        return torch.linalg.vecdot(grads, grads)
    return torch.linalg.vecdot((v @ v.mT).flatten(1), (u @ u.mT).flatten(1))


@cached(maxsize=256)
def linear_materialises(batch: int, count: int, features: int, out_features: int) -> bool:
    """Whether a ``Linear`` layer's squared norms are cheaper through its per-sample gradients than through pairs
    of its ``count`` locations (``LOCATION_PAIRS``, with ``C_in = features``, ``C_out = out_features``)."""
    values = {"N": batch, "T": count, "G": 1, "C_in": features, "C_out": out_features, "K": 1}
    return shortcut_pays(LOCATION_PAIRS, values)


def bias_norms(gradient: torch.Tensor, layer: Geometry) -> torch.Tensor:
    """Each sample's squared bias-gradient norm ``(N,)``: the output gradient summed over locations, squared."""
    per_sample = channels_last(gradient[None], layer)[0].sum(1).flatten(1)
    return torch.linalg.vecdot(per_sample, per_sample)
