"""KFAC is exact where theory says so: the Kronecker product of the factors equals the exact GGN block.

- expand: a conv (or transposed conv) followed by a location-wise linear map and
  MSE: every location is an independent linear regression, so the weight's GGN
  is ``sum_{n,t} u u^T (x) C`` with ``C`` constant = ``A_expand (x) B``.
- reduce: a conv followed by average pooling over all locations, a linear map
  and MSE: the output sees only ``mean_t u``, so the GGN is
  ``sum_n mean_t u mean_t u^T (x) C`` = ``A_reduce (x) B``.

``B_g`` is built from the GGN columns at the layer output (``sqrt_ggn`` pulled
back): ``sum_{m,n,t} s s^T`` (expand) and ``sum_{m,n} (sum_t s)(sum_t s)^T``
(reduce). The exact GGN comes from torch.func (Jacobian and loss Hessian).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layer, curvature_layers
from support.references import apply, flat_jacobian, kwargs, random

from tnconv import curvature

TOL = dict(rtol=1e-9, atol=1e-11)


def exact_ggn(model: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """``J^T H J`` of ``mse_loss(model(weight), 0)`` (mean reduction) w.r.t. ``weight``, flattened."""
    prediction = model(weight)
    hessian = torch.func.hessian(lambda z: F.mse_loss(z, torch.zeros_like(z)))(prediction)
    jacobian = flat_jacobian(model, weight)
    return jacobian.T @ hessian.reshape(prediction.numel(), prediction.numel()) @ jacobian


def group_blocks(ggn: torch.Tensor, layer: ConvLayer) -> list[torch.Tensor]:
    """The diagonal GGN blocks of each group's weights, ordered ``(c_out, c_in, k..)`` within the group."""
    shape, groups = layer.weight_shape, layer.groups
    index = torch.arange(ggn.shape[0]).reshape(shape)
    if layer.transposed:  # (C_in, C_out/G, K) -> (G, C_out/G, C_in/G, K)
        index = index.reshape(groups, shape[0] // groups, *shape[1:]).transpose(1, 2)
    else:
        index = index.reshape(groups, shape[0] // groups, *shape[1:])
    flat = index.reshape(groups, -1)
    return [ggn[rows][:, rows] for rows in flat]


def output_factors(columns: torch.Tensor, groups: int, reduce: bool) -> torch.Tensor:
    """``B_g`` (``(G, C_out/G, C_out/G)``) from GGN columns ``(M, N, C_out, *O)`` at the layer output."""
    s = columns.flatten(3) if columns.ndim > 3 else columns.unsqueeze(-1)
    s = s.unflatten(2, (groups, -1))  # (M, N, G, C_out/G, T)
    if reduce:
        s = s.sum(-1, keepdim=True)
    return torch.einsum("mngct,mngdt->gcd", s, s)


@settings(max_examples=20, deadline=None)
@given(curvature_layers(max_dims=2), st.integers(1, 3), st.integers(0, 2**16))
def test_kfac_expand_is_exact_for_a_location_wise_linear_map(layer, classes, seed):
    x = random(layer.x_shape, seed)
    weight = random(layer.weight_shape, seed + 1)
    mix = random((classes, layer.out_channels), seed + 2)

    def after(y: torch.Tensor) -> torch.Tensor:  # the same linear map at every location
        return torch.einsum("kc,nc...->nk...", mix, y)

    ggn = exact_ggn(lambda w: after(apply(layer, x, w)), weight)
    y = apply(layer, x, weight)
    z = after(y)
    columns = curvature.sqrt_ggn(z.movedim(1, -1).reshape(-1, classes), "mse")  # (K, N*T, K), mean over N*T*K
    columns = columns.reshape(classes, z.shape[0], *z.shape[2:], classes).movedim(-1, 2)  # (M, N, K, *O)
    columns = curvature.pullback(columns, after, y)
    a = curvature.kfac_expand_factor(x, layer.kernel_size, **kwargs(layer))
    b = output_factors(columns, layer.groups, reduce=False)
    for g, block in enumerate(group_blocks(ggn, layer)):
        torch.testing.assert_close(torch.kron(b[g], a[g]), block, **TOL)


@settings(max_examples=20, deadline=None)
@given(curvature_layers(max_dims=2), st.integers(1, 3), st.integers(0, 2**16))
def test_kfac_reduce_is_exact_for_average_pooling(layer, classes, seed):
    x = random(layer.x_shape, seed)
    weight = random(layer.weight_shape, seed + 1)
    linear = random((classes, layer.out_channels), seed + 2)

    def after(y: torch.Tensor) -> torch.Tensor:  # global average pooling, then a linear map
        return y.flatten(2).mean(-1) @ linear.T

    ggn = exact_ggn(lambda w: after(apply(layer, x, w)), weight)
    y = apply(layer, x, weight)
    columns = curvature.pullback(curvature.sqrt_ggn(after(y), "mse"), after, y)
    a = curvature.kfac_reduce_factor(x, layer.kernel_size, **kwargs(layer))
    b = output_factors(columns, layer.groups, reduce=True)
    for g, block in enumerate(group_blocks(ggn, layer)):
        torch.testing.assert_close(torch.kron(b[g], a[g]), block, **TOL)


def test_kfac_expand_is_not_exact_for_average_pooling():
    """The settings are not interchangeable: with pooling, expand's Kronecker product misses the GGN."""
    layer = conv_layer((2, 2, 6), 2, (3,), padding=1)
    x, weight, linear = random(layer.x_shape, 0), random(layer.weight_shape, 1), random((2, 2), 2)

    def after(y: torch.Tensor) -> torch.Tensor:
        return y.mean(-1) @ linear.T

    ggn = exact_ggn(lambda w: after(apply(layer, x, w)), weight)
    y = apply(layer, x, weight)
    columns = curvature.pullback(curvature.sqrt_ggn(after(y), "mse"), after, y)
    a = curvature.kfac_expand_factor(x, layer.kernel_size, **kwargs(layer))
    b = output_factors(columns, 1, reduce=False)
    assert not torch.allclose(torch.kron(b[0], a[0]), ggn, rtol=1e-3)
