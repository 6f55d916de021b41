"""Independent float64 references for the curvature tests, and tests that the references are right.

Nothing here uses tnconv: patches come from PyTorch convolutions (an identity
kernel unfolds any N <= 3) or from autograd (a layer is linear in its weight,
so its Jacobian w.r.t. the weight *is* the im2col matrix, also for transposed
convolutions with ``output_padding``). The other curvature test files import
these helpers and the hypothesis strategy ``layers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

Pairs = tuple[tuple[int, int], ...]

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class Layer:
    """A conv (or ConvTranspose) layer: input shape ``(N, C_in, *I)``, hyper-parameters as per-dim tuples."""

    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Pairs
    dilation: tuple[int, ...]
    groups: int
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    @property
    def dims(self) -> int:
        return len(self.kernel_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        c_in, c_out, g = self.input_shape[1], self.out_channels, self.groups
        first, second = (c_in, c_out // g) if self.transposed else (c_out, c_in // g)
        return (first, second, *self.kernel_size)

    @property
    def padding_arg(self) -> object:
        """Padding as the tnconv routines take it: pairs, or plain ints for a transposed layer."""
        return tuple(left for left, _ in self.padding) if self.transposed else self.padding

    def kwargs(self) -> dict[str, object]:
        """Keyword arguments of the tnconv.curvature routines for this layer."""
        extra: dict[str, object] = {}
        if self.transposed:
            extra = {"transposed": True, "output_padding": self.output_padding}
        return dict(stride=self.stride, padding=self.padding_arg, dilation=self.dilation, groups=self.groups, **extra)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer output with PyTorch's own functions (asymmetric padding by an explicit pad)."""
        if self.transposed:
            return CONV_TRANSPOSE[self.dims](
                x, weight, stride=self.stride, padding=self.padding_arg, output_padding=self.output_padding,
                groups=self.groups, dilation=self.dilation,
            )
        flat = [side for pair in reversed(self.padding) for side in pair]
        return CONV[self.dims](F.pad(x, flat), weight, stride=self.stride, dilation=self.dilation, groups=self.groups)

    def output_shape(self) -> tuple[int, ...]:
        x = torch.zeros(self.input_shape, dtype=torch.float64)
        return tuple(self(x, torch.zeros(self.weight_shape, dtype=torch.float64)).shape)


@st.composite
def layers(draw: st.DrawFn, transposed: bool | None = None, max_dims: int = 3) -> Layer:
    """Small conv layers: N = 1..max_dims, odd and size-1 legs, groups, stride, dilation, (asymmetric) padding."""
    is_transposed = draw(st.booleans()) if transposed is None else transposed
    dims = draw(st.integers(1, max_dims))
    small = dims == 3
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 3))
    kernel, stride, dilation, padding, size, extra = [], [], [], [], [], []
    for _ in range(dims):
        k = draw(st.integers(1, 2 if small else 3))
        s = draw(st.integers(1, 2 if small else 3))
        d = draw(st.integers(1, 2))
        if is_transposed:
            p = draw(st.integers(0, 2))
            pair = (p, p)
            op = draw(st.integers(0, max(s, d) - 1))
            i = draw(st.integers(1, 3 if small else 5))
            assume((i - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
            extra.append(op)
        else:
            pair = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            i = max(1, d * (k - 1) + 1 - sum(pair)) + draw(st.integers(0, 2 if small else 4))
        kernel.append(k), stride.append(s), dilation.append(d), padding.append(pair), size.append(i)
    return Layer(
        (batch, c_in, *size), c_out, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups,
        is_transposed, tuple(extra) if is_transposed else (),
    )


def random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- patches ------------------------------------------------------------------------------------
def unfold_reference(x: torch.Tensor, kernel_size: tuple[int, ...], stride, padding: Pairs, dilation) -> torch.Tensor:
    """im2col of any N <= 3 through a PyTorch conv with an identity kernel: ``(N, C*prod(K), T)``."""
    dims = x.ndim - 2
    batch, channels = x.shape[:2]
    taps = math.prod(kernel_size)
    flat = [side for pair in reversed(padding) for side in pair]
    padded = F.pad(x, flat).reshape(batch * channels, 1, *[s + l + r for s, (l, r) in zip(x.shape[2:], padding)])
    eye = torch.eye(taps, dtype=x.dtype).reshape(taps, 1, *kernel_size)
    columns = CONV[dims](padded, eye, stride=stride, dilation=dilation)
    return columns.reshape(batch, channels * taps, -1)


def im2col_autograd(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """Per-group patches ``u[n, g, a, t]`` (``a`` over ``(c_in, k..)``) as the Jacobian of the layer w.r.t. W.

    With one output channel per group the output ``Y[n, g, t] = sum_a W_g[a] u[n, g, a, t]``
    is linear in the weight, so ``dY/dW`` holds the patches; this works alike for
    convolutions and transposed convolutions (with ``output_padding``).
    """
    groups, c_in = layer.groups, x.shape[1]
    probe = Layer(
        layer.input_shape, groups, layer.kernel_size, layer.stride, layer.padding, layer.dilation, groups,
        layer.transposed, layer.output_padding,
    )
    weight = torch.zeros(probe.weight_shape, dtype=x.dtype)
    jacobian = torch.func.jacfwd(lambda w: probe(x, w))(weight)  # (N, G, *O, *weight.shape)
    batch = x.shape[0]
    d = c_in // groups * math.prod(layer.kernel_size)
    blocks = jacobian.reshape(batch, groups, -1, groups, d)
    index = torch.arange(groups)
    return blocks[:, index, :, index, :].permute(1, 0, 3, 2)  # (G, N, T, d) -> (N, G, d, T)


def grouped_patches(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """``u[n, g, a, t]``: unfold-based for convolutions, autograd-based for transposed ones."""
    if layer.transposed:
        return im2col_autograd(layer, x)
    u = unfold_reference(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return u.reshape(x.shape[0], layer.groups, -1, u.shape[-1])


def kfac_references(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KFAC-expand and KFAC-reduce input factors ``(G, d, d)`` from patches ``u[n, g, a, t]``."""
    batch, locations = u.shape[0], u.shape[-1]
    expand = torch.einsum("ngat,ngbt->gab", u, u) / (batch * locations)
    summed = u.sum(-1)
    reduce = torch.einsum("nga,ngb->gab", summed, summed) / (batch * locations**2)
    return expand, reduce


# --- gradients ----------------------------------------------------------------------------------
def per_sample_reference(layer: Layer, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients of ``<layer(x_n, W), v_n>`` by ``torch.func.vmap(grad)``: ``(N, *W)``."""
    weight = random(layer.weight_shape, 0)

    def term(w: torch.Tensor, xn: torch.Tensor, vn: torch.Tensor) -> torch.Tensor:
        return (layer(xn[None], w) * vn[None]).sum()

    return torch.func.vmap(torch.func.grad(term), in_dims=(None, 0, 0))(weight, x, v)


def diag_ggn_reference(layer: Layer, x: torch.Tensor, sqrt_ggn: torch.Tensor) -> torch.Tensor:
    """``sum_{m,n} (per-sample weight gradient of sqrt_ggn[m, n])^2``."""
    return sum(per_sample_reference(layer, x, column).square().sum(0) for column in sqrt_ggn)


def flat_jacobian(function: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor) -> torch.Tensor:
    """The Jacobian of ``function`` at ``point`` as an ``(outputs, inputs)`` matrix."""
    jacobian = torch.func.jacrev(function)(point)
    return jacobian.reshape(-1, point.numel())


# --- the references are right ---------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(layers(transposed=False, max_dims=2), st.integers(0, 2**16))
def test_unfold_reference_equals_torch_unfold(layer, seed):
    x = random(layer.input_shape, seed)
    if layer.dims == 1:
        x2 = x.unsqueeze(-1)
        kernel, stride, dilation = (*layer.kernel_size, 1), (*layer.stride, 1), (*layer.dilation, 1)
        padding = (*layer.padding, (0, 0))
    else:
        x2, kernel, stride, dilation, padding = x, layer.kernel_size, layer.stride, layer.dilation, layer.padding
    flat = [side for pair in reversed(padding) for side in pair]
    expected = F.unfold(F.pad(x2, flat), kernel, dilation=dilation, stride=stride)
    got = unfold_reference(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(layers(transposed=False), st.integers(0, 2**16))
def test_autograd_im2col_equals_unfold_for_convolutions(layer, seed):
    x = random(layer.input_shape, seed)
    u = unfold_reference(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    expected = u.reshape(x.shape[0], layer.groups, -1, u.shape[-1])
    torch.testing.assert_close(im2col_autograd(layer, x), expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(layers(), st.integers(0, 2**16))
def test_patches_reproduce_the_layer(layer, seed):
    """``Y[n, g, c_out, t] = sum_a W_g[c_out, a] u[n, g, a, t]``, for convs and transposed convs with groups."""
    x, weight = random(layer.input_shape, seed), random(layer.weight_shape, seed + 1)
    u = grouped_patches(layer, x)
    groups = layer.groups
    if layer.transposed:  # (C_in, C_out/G, K) -> per group (C_out/G, C_in/G * K)
        w = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1).transpose(1, 2)
        w = w.reshape(groups, weight.shape[1], -1)
    else:
        w = weight.reshape(groups, weight.shape[0] // groups, -1)
    y = torch.einsum("gca,ngat->ngct", w, u)
    expected = layer(x, weight)
    torch.testing.assert_close(y.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)


def test_layer_strategy_reaches_transposed_output_padding():
    """The strategy draws transposed layers with output_padding > 0 (the case the autograd im2col is for)."""
    seen: list[Layer] = []

    @settings(max_examples=60, deadline=None, database=None)
    @given(layers(transposed=True))
    def collect(layer):
        seen.append(layer)

    collect()
    assert any(any(layer.output_padding) for layer in seen)
    assert any(layer.groups > 1 for layer in seen)
