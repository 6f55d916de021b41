"""Whole-model curvature where the peers have no answer, against autograd references in float64.

The model is one drawn conv or transposed conv layer (any N <= 3, groups, stride,
dilation, asymmetric padding, output_padding, reflect/replicate/circular padding;
a ``torch.nn`` or a ``tnconv.nn`` module) followed by tanh, flatten and a Linear
head. The references use PyTorch alone:

- patches ``u[n, g, a, t]`` from ``test_curvature_reference.grouped_patches``;
- the Jacobian ``J[n, c, o, t]`` of the model output w.r.t. the layer output and the
  loss Hessian ``H[n, c, c']`` from ``torch.autograd.functional``;
- ``B`` (expand) ``= sum_{n,t} J^T H J`` per group, (reduce) with ``sum_t J``; the
  empirical ``B`` from the output gradients ``g = J^T dloss/dz`` times the mean's divisor;
- per-sample gradients and the GGN diagonal from Jacobians of the model's loss terms
  and outputs w.r.t. the parameters, with the layer recomputed by ``F.conv*`` references.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers
from support.references import flat_pad, grouped_patches, reference_conv, reference_conv_transpose

import tnconv.nn as tnn
from tnconv.curvature import KFAC, diag_ggn, per_sample_grads
from tnconv.curvature.factors import layout, weight_matrix

TOL = dict(rtol=1e-10, atol=1e-12)
CLASSES = 3


# --- the model ----------------------------------------------------------------------------------
def torch_module(layer: ConvLayer) -> torch.nn.Module | None:
    """The ``torch.nn`` module of ``layer``, or None where torch cannot express its padding."""
    dims, c_in, c_out = layer.dims, layer.in_channels, layer.out_channels
    if layer.transposed:
        if isinstance(layer.padding, str) or any(left != right for left, right in layer.pairs):
            return None
        cls = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)[dims - 1]
        padding = tuple(left for left, _ in layer.pairs)
        return cls(
            c_in, c_out, layer.kernel_size, layer.stride, padding, layer.output_padding, layer.groups,
            dilation=layer.dilation,
        )  # fmt: skip
    if not isinstance(layer.padding, str) and any(left != right for left, right in layer.pairs):
        return None
    cls = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[dims - 1]
    padding = layer.padding if isinstance(layer.padding, str) else tuple(left for left, _ in layer.pairs)
    return cls(
        c_in, c_out, layer.kernel_size, layer.stride, padding, layer.dilation, layer.groups,
        padding_mode=layer.padding_mode,
    )  # fmt: skip


def tnconv_module(layer: ConvLayer) -> torch.nn.Module:
    if layer.transposed:
        return tnn.ConvTransposeNd(
            layer.dims, layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.pairs,
            layer.output_padding, layer.groups, dilation=layer.dilation,
        )  # fmt: skip
    return tnn.ConvNd(
        layer.dims, layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        layer.dilation, layer.groups, padding_mode=layer.padding_mode,
    )  # fmt: skip


def conv_output(layer: ConvLayer, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The layer by PyTorch references, with a bias."""
    if layer.transposed:
        y = reference_conv_transpose(
            x, weight, layer.strides, layer.pairs, layer.output_paddings, layer.dilations, layer.groups
        )
    else:
        y = reference_conv(x, weight, layer.strides, layer.pairs, layer.dilations, layer.groups, layer.padding_mode)
    return y + bias.reshape(-1, *(1,) * layer.dims)


def patches(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """``u[n, g, a, t]``, the input padded first for a padding mode other than zeros."""
    if layer.padding_mode != "zeros":
        x = F.pad(x, flat_pad(layer.pairs), mode=layer.padding_mode)
        layer = dataclasses.replace(layer, x_shape=tuple(x.shape), pairs=((0, 0),) * layer.dims, padding=0)
    return grouped_patches(layer, x)


@dataclasses.dataclass
class Case:
    layer: ConvLayer
    model: torch.nn.Sequential
    loss_function: torch.nn.Module
    x: torch.Tensor
    targets: torch.Tensor


@st.composite
def cases(draw: st.DrawFn) -> Case:
    transposed = draw(st.booleans())
    modes = ("zeros",) if transposed else ("zeros", "reflect", "replicate", "circular")
    layer = draw(conv_layers(max_dims=3, transposed=transposed, padding_modes=modes, max_batch=3))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    module = torch_module(layer)
    if module is None or draw(st.booleans()):
        module = tnconv_module(layer)
    x = torch.randn(layer.x_shape, dtype=torch.float64)
    features = math.prod(layer.output_shape[1:])
    model = torch.nn.Sequential(module, torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(features, CLASSES))
    model = model.double()
    reduction = draw(st.sampled_from(("mean", "sum")))
    if draw(st.booleans()):
        loss_function: torch.nn.Module = torch.nn.CrossEntropyLoss(reduction=reduction)
        targets = torch.randint(0, CLASSES, (x.shape[0],))
    else:
        loss_function = torch.nn.MSELoss(reduction=reduction)
        targets = torch.randn(x.shape[0], CLASSES, dtype=torch.float64)
    return Case(layer, model, loss_function, x, targets)


# --- references ---------------------------------------------------------------------------------
def mean_divisor(case: Case, output: torch.Tensor) -> int:
    if case.loss_function.reduction == "sum":
        return 1
    return output.shape[0] if isinstance(case.loss_function, torch.nn.CrossEntropyLoss) else output.numel()


def output_side(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``J[n, c, o, t]`` (model output w.r.t. layer output, per sample), ``H[n, c, c']``, ``g[n, o, t]``."""
    y = case.model[0](case.x).detach()
    rest = case.model[1:]
    z = rest(y)
    n = z.shape[0]
    jacobian = torch.autograd.functional.jacobian(rest, y, vectorize=True).reshape(n, CLASSES, n, y.shape[1], -1)
    per_sample = jacobian[torch.arange(n), :, torch.arange(n)]  # (n, c, o, t)
    hessian = torch.autograd.functional.hessian(lambda out: case.loss_function(out, case.targets), z)
    hessian = hessian[torch.arange(n), :, torch.arange(n)]  # (n, c, c')
    z_leaf = z.detach().requires_grad_()
    (dz,) = torch.autograd.grad(case.loss_function(z_leaf, case.targets), z_leaf)
    return per_sample, hessian, torch.einsum("nc,ncot->not", dz, per_sample)


def group_blocks(matrix: torch.Tensor, groups: int) -> torch.Tensor:
    """The ``(G, c, c)`` diagonal blocks of a ``(G*c, G*c)`` matrix."""
    c = matrix.shape[0] // groups
    return torch.stack([matrix[g * c : (g + 1) * c, g * c : (g + 1) * c] for g in range(groups)])


def reference_factors(case: Case, approx: str, fisher: str, separate_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv layer's ``(A, B)`` from patches, Jacobians and the loss Hessian."""
    u = patches(case.layer, case.x)  # (n, g, a, t)
    if not separate_bias:
        u = torch.cat([u, torch.ones_like(u[:, :, :1])], dim=2)
    n, t = u.shape[0], u.shape[-1]
    jacobian, hessian, g = output_side(case)
    if approx == "reduce":
        sums = u.sum(-1)
        a = torch.einsum("nga,ngb->gab", sums, sums) / (n * t**2)
        jacobian, g = jacobian.sum(-1, keepdim=True), g.sum(-1, keepdim=True)
    else:
        a = torch.einsum("ngat,ngbt->gab", u, u) / (n * t)
    if fisher == "type-2":
        b = torch.einsum("ncot,ncd,ndpt->op", jacobian, hessian, jacobian)
    else:
        b = torch.einsum("not,npt->op", g, g) * mean_divisor(case, case.model(case.x))
    return a, group_blocks(b, case.layer.groups)


NAMES = ("0.weight", "0.bias", "3.weight", "3.bias")


def parameter_references(case: Case) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-sample gradients (sample n's loss term as the reduction weights it) and GGN diagonals, per parameter.

    The model output is recomputed from its parameters with the conv references; its
    Jacobians come from ``torch.autograd.functional.jacobian``.
    """
    conv, head = case.model[0], case.model[3]
    values = tuple(p.detach() for p in (conv.weight, conv.bias, head.weight, head.bias))

    def output(w: torch.Tensor, b: torch.Tensor, hw: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(conv_output(case.layer, case.x, w, b)).flatten(1) @ hw.T + hb

    z = output(*values)
    n = z.shape[0]
    total = type(case.loss_function)(reduction="sum")

    def terms(*params: torch.Tensor) -> torch.Tensor:
        out = output(*params)
        each = [total(out[i : i + 1], case.targets[i : i + 1]) for i in range(n)]
        return torch.stack(each) / mean_divisor(case, z)

    per_sample = torch.autograd.functional.jacobian(terms, values, vectorize=True)
    jacobians = torch.autograd.functional.jacobian(output, values, vectorize=True)
    hessian = torch.autograd.functional.hessian(lambda out: case.loss_function(out, case.targets), z)
    hessian = hessian.reshape(z.numel(), z.numel())
    diagonals = {}
    for name, value, jacobian in zip(NAMES, values, jacobians):
        flat = jacobian.reshape(z.numel(), -1)
        diagonals[name] = torch.einsum("ip,ij,jp->p", flat, hessian, flat).reshape(value.shape)
    return dict(zip(NAMES, per_sample)), diagonals


# --- tests --------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(cases(), st.sampled_from(("expand", "reduce")), st.sampled_from(("type-2", "empirical")), st.booleans())
def test_kfac_factors_equal_autograd_references(case, approx, fisher, separate_bias):
    kfac = KFAC(case.model, case.loss_function, approx=approx, fisher=fisher, separate_bias=separate_bias)
    kfac.update(case.x, case.targets)
    a, b = kfac.factors["0"]
    expected_a, expected_b = reference_factors(case, approx, fisher, separate_bias)
    torch.testing.assert_close(a, expected_a, **TOL)
    torch.testing.assert_close(b, expected_b, **TOL)
    if separate_bias:
        bias_a, bias_b = kfac.factors["0.bias"]
        assert bias_a is None
        torch.testing.assert_close(bias_b, expected_b, **TOL)
    else:
        assert "0.bias" not in kfac.factors


@settings(max_examples=25, deadline=None)
@given(cases())
def test_per_sample_grads_diag_ggn_and_weight_layout_equal_autograd_references(case):
    grads = per_sample_grads(case.model, case.loss_function, case.x, case.targets)
    diagonal = diag_ggn(case.model, case.loss_function, case.x, case.targets)
    assert list(grads) == list(diagonal) == list(NAMES)
    expected_grads, expected_diagonal = parameter_references(case)
    for name in NAMES:
        torch.testing.assert_close(grads[name], expected_grads[name], **TOL)
        torch.testing.assert_close(diagonal[name], expected_diagonal[name], **TOL)
    # the batch gradient as (G, dB, dA) is sum_{n,t} g u^T per group: the columns follow A's order
    u = patches(case.layer, case.x)  # (n, g, a, t)
    _, _, g = output_side(case)  # (n, o, t)
    groups = case.layer.groups
    g = g.reshape(g.shape[0], groups, -1, g.shape[-1])
    expected = torch.einsum("ngct,ngat->gca", g, u)
    got = weight_matrix(grads["0.weight"].sum(0), layout(case.model[0]))
    torch.testing.assert_close(got, expected, **TOL)
