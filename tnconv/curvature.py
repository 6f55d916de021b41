"""``tnconv.curvature``: second-order quantities of a conv layer, from derived tensor networks.

With ``G`` groups, ``d = C_in // G * prod(K)``, ``T`` output locations and
``u[n, t]`` the unfolded patch of sample ``n`` at location ``t``:

- ``kfac_expand_factor``: ``A_g = 1/(N*T) sum_{n,t} u_g u_g^T``, shape ``(G, d, d)``.
- ``kfac_reduce_factor``: ``A_g = 1/(N*T^2) sum_n (sum_t u_g)(sum_t u_g)^T``, never forming ``u``.
- ``per_sample_weight_grad``: ``(N, *weight.shape)``, the weight VJP of each sample.
- ``diag_ggn_weight``: ``sum_{m,n} (weight VJP of sqrt_ggn[m, n])^2`` (BackPACK's DiagGGN).
- ``weight_vjp_dropout``: an unbiased weight VJP from a random subset of channels or pixels,
  read out of ``x`` (sub-tensor access), so that its cost falls with ``keep``.
- ``sqrt_ggn``: columns ``S[m, n, c]`` with ``sum_m S S^T`` = the Hessian of a cross-entropy or MSE
  loss w.r.t. the model output, exactly (``M = C``) or by Monte-Carlo (``M = mc_samples``);
  ``pullback`` carries them back to a layer output.

Each routine validates its arguments (``tnconv.conv.hyper``), takes the
network of ``tnconv.conv_network`` for the layer (``tnconv.conv.derived``),
compiles it once per layer and calls it; only scaling and reshaping happen here.
Factors are per group and never averaged over groups. ``transposed=True``
means the layer is a ``ConvTranspose`` (``T`` counts its output locations).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from tnconv.conv.derived import kept_pixels_network, network
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.networks import routine
from tnconv.ir.tensors import IndexPattern
from tnconv.lower.compile import compile as compile_network

__all__ = [
    "kfac_expand_factor",
    "kfac_reduce_factor",
    "per_sample_weight_grad",
    "diag_ggn_weight",
    "weight_vjp_dropout",
    "sqrt_ggn",
    "pullback",
]

LOSSES = ("cross_entropy", "mse")
REDUCTIONS = ("mean", "sum")


def check_tensor(value: object, name: str, ndim: int | None = None, min_ndim: int = 3) -> torch.Tensor:
    """``value`` as a floating-point tensor with ``ndim`` (or at least ``min_ndim``) dims."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(value.shape)}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims (N, C, *spatial), got shape {tuple(value.shape)}")
    return value


def layer(
    x: object, kernel_size: object, out_channels: object, stride: object, padding: object, dilation: object,
    groups: object, transposed: object, output_padding: object,
) -> ConvHyper:
    """The normalised layer whose input is ``x``; a non-empty batch is required."""
    x = check_tensor(x, "x")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    return conv_hyper(
        tuple(x.shape), kernel_size, out_channels, stride, padding, dilation, groups, "zeros", output_padding,
        transposed,
    )


def check_pair(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    """``other`` must share ``x``'s dtype and device."""
    if other.dtype != x.dtype or other.device != x.device:
        raise ValueError(
            f"{name} must have the dtype and device of x ({x.dtype} on {x.device}), "
            f"got {other.dtype} on {other.device}"
        )


def check_output(value: torch.Tensor, name: str, hyper: ConvHyper, leading: int = 0) -> None:
    """``value`` must be shaped like the layer output ``(N, C_out, *O)`` after ``leading`` extra axes."""
    if tuple(value.shape[leading:]) != tuple(hyper.output_shape):
        raise ValueError(
            f"{name} must end in the layer output shape {tuple(hyper.output_shape)}, got {tuple(value.shape)}"
        )


def gradient_layer(
    x: torch.Tensor, gradient: object, name: str, leading: int, kernel_size: object, stride: object, padding: object,
    dilation: object, groups: object, transposed: object, output_padding: object,
) -> tuple[torch.Tensor, ConvHyper]:
    """The layer of ``x`` whose output gradient is ``gradient``, and ``gradient`` checked.

    ``gradient`` (called ``name``) is ``(*L, N, C_out, *O)`` with ``leading``
    axes ``L`` (the GGN columns of ``sqrt_ggn``) before the layer output
    shape; it gives the layer's ``C_out`` and must match ``x``'s dtype and device.
    """
    ndim = getattr(x, "ndim", None)
    gradient = check_tensor(gradient, name, None if ndim is None else ndim + leading, 3 + leading)
    hyper = layer(
        x, kernel_size, gradient.shape[leading + 1], stride, padding, dilation, groups, transposed, output_padding
    )
    check_output(gradient, name, hyper, leading)
    check_pair(x, gradient, name)
    return gradient, hyper


def run(op: str, hyper: ConvHyper, columns: int | None = None, **operands: torch.Tensor) -> torch.Tensor:
    """Compile (cached) and call the derived network ``op`` of the layer."""
    return compile_network(network(op, hyper, True, columns))(**operands)


def kfac_factor(x: torch.Tensor, hyper: ConvHyper, reduce: bool) -> torch.Tensor:
    """``sum_{n,t} u u^T`` per group from the patches (expand) or their location sums (reduce), unscaled.

    KFAC-expand runs its whole derived network: the planner contracts the
    two copies of ``x`` through the gathered patterns without laying the
    unfolded input out for a matmul (measured faster than patches @ patches^T
    on the benchmark layers). KFAC-reduce computes the tiny location sums
    ``(N, G, d)`` (``patch_sums``) and one batched product of them with
    themselves: as fast as its whole network (which also prepares its copy
    of ``x`` once) and faster on depthwise layers, whose network result needs a
    reordering copy. The result is a new tensor (scaled in place by the callers).
    """
    d = hyper.in_channels // hyper.groups * hyper.kernel_elements
    if not reduce:
        return run("kfac_expand", hyper, X=x).reshape(hyper.groups, d, d).contiguous()
    sums = run("patch_sums", hyper, X=x).reshape(hyper.batch, hyper.groups, d)
    return torch.einsum("nga,ngb->gab", sums, sums).contiguous()


def kfac_expand_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-expand input factor ``A_g = 1/(N*T) sum_{n,t} u_g[n,t] u_g[n,t]^T``: ``(G, d, d)``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        kernel_size, stride, padding, dilation, groups: the layer's, as in ``torch.nn.Conv*d``.
        transposed, output_padding: the layer is a ``ConvTranspose*d`` with this output padding.
    """
    hyper = layer(x, kernel_size, None, stride, padding, dilation, groups, transposed, output_padding)
    scale = hyper.batch * math.prod(hyper.output_size)
    return kfac_factor(x, hyper, reduce=False).div_(scale)


def kfac_reduce_factor(
    x: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0, dilation: object = 1,
    groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """KFAC-reduce input factor ``A_g = 1/(N*T^2) sum_n (sum_t u_g[n,t]) (sum_t u_g[n,t])^T``: ``(G, d, d)``.

    Arguments as ``kfac_expand_factor``. The patches are summed over locations
    through ``sum_o Pi`` (a ``(K, I)`` matrix per dim) before they meet ``x``,
    so the unfolded input is never formed.
    """
    hyper = layer(x, kernel_size, None, stride, padding, dilation, groups, transposed, output_padding)
    scale = hyper.batch * math.prod(hyper.output_size) ** 2
    return kfac_factor(x, hyper, reduce=True).div_(scale)


def per_sample_weight_grad(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """Per-sample weight gradients ``(N, *weight.shape)``: sample n's weight VJP of ``grad_output[n]``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        grad_output: the gradient w.r.t. the layer output ``(N, C_out, *O)``.
        kernel_size, ...: the layer's hyper-parameters (see ``kfac_expand_factor``).
    """
    grad_output, hyper = gradient_layer(
        x, grad_output, "grad_output", 0, kernel_size, stride, padding, dilation, groups, transposed, output_padding
    )
    result = run("per_sample_grad", hyper, X=x, V=grad_output).contiguous()
    return result.reshape(hyper.batch, *hyper.weight_shape)


def diag_ggn_weight(
    x: torch.Tensor, sqrt_ggn: torch.Tensor, kernel_size: object, stride: object = 1, padding: object = 0,
    dilation: object = 1, groups: object = 1, transposed: bool = False, output_padding: object = 0,
) -> torch.Tensor:
    """The GGN diagonal of the weight, ``weight.shape``: ``sum_{m,n} (weight VJP of sqrt_ggn[m, n])^2``.

    Args:
        x: the layer input ``(N, C_in, *I)``.
        sqrt_ggn: ``(M, N, C_out, *O)``, M columns of a symmetric factorisation of
            the GGN w.r.t. the layer output (``sqrt_ggn`` + ``pullback`` build it).
        kernel_size, ...: the layer's hyper-parameters (see ``kfac_expand_factor``).

    The ``diag_ggn`` network multiplies two copies of the per-column weight
    VJPs ``J[m, n, w]``; here ``J`` is computed once and squared.
    """
    sqrt_ggn, hyper = gradient_layer(
        x, sqrt_ggn, "sqrt_ggn", 1, kernel_size, stride, padding, dilation, groups, transposed, output_padding
    )
    grads = run("column_grads", hyper, sqrt_ggn.shape[0], X=x, V=sqrt_ggn)  # (m, n, *W legs)
    return grads.square().sum((0, 1)).reshape(hyper.weight_shape)


def sqrt_ggn(
    output: torch.Tensor, loss: str = "cross_entropy", reduction: str = "mean", mc_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A symmetric factorisation ``S`` (``(M, N, C)``) of the loss Hessian w.r.t. the model output.

    ``sum_m S[m, n] S[m, n]^T`` is the Hessian of sample n's loss term w.r.t.
    ``output[n]`` (``(N, C)``), exactly with ``M = C`` columns when ``mc_samples``
    is None, in expectation with ``M = mc_samples`` random columns otherwise.

    - ``"cross_entropy"`` (``torch.nn.functional.cross_entropy`` on logits):
      ``H = diag(p) - p p^T`` with ``p = softmax(output)``; exact columns
      ``diag(sqrt p) - p sqrt(p)^T``, sampled ones ``(p - onehot(y)) / sqrt(M)`` with ``y ~ p``.
    - ``"mse"`` (``torch.nn.functional.mse_loss``): ``H = 2 I``; exact columns
      ``sqrt(2) I``, sampled ones ``sqrt(2) * eps / sqrt(M)`` with ``eps ~ N(0, I)``.

    ``reduction`` as in torch: ``"mean"`` divides by N (cross-entropy) or by
    ``N*C`` (MSE), so the columns are scaled by the square root of that.
    The Hessians do not depend on the targets, so none are needed.
    """
    output = check_tensor(output, "output", ndim=2, min_ndim=2)
    if output.shape[0] == 0 or output.shape[1] == 0:
        raise ValueError(f"output must hold at least one sample and one class, got shape {tuple(output.shape)}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mc_samples is not None and (isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1):
        raise ValueError(f"mc_samples must be None or an int >= 1, got {mc_samples!r}")
    output = output.detach()
    batch, classes = output.shape
    draws = classes if mc_samples is None else mc_samples
    if loss == "cross_entropy":
        p = output.softmax(dim=1)
        if mc_samples is None:
            root = p.sqrt()
            columns = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]  # [n, c, m]
            columns = columns.permute(2, 0, 1)
        else:
            source = p if generator is None else p.to(generator.device)
            labels = torch.multinomial(source, draws, replacement=True, generator=generator).to(p.device)  # [n, m]
            onehot = torch.nn.functional.one_hot(labels.T, classes).to(p.dtype)  # [m, n, c]
            columns = (p[None] - onehot) / math.sqrt(draws)
        count = batch
    else:
        if mc_samples is None:
            columns = math.sqrt(2.0) * torch.eye(classes, dtype=output.dtype, device=output.device)[:, None, :]
            columns = columns.expand(classes, batch, classes).clone()
        else:
            device = output.device if generator is None else generator.device
            noise = torch.randn(draws, batch, classes, generator=generator, dtype=output.dtype, device=device)
            columns = math.sqrt(2.0 / draws) * noise.to(output.device)
        count = batch * classes
    return columns / math.sqrt(count) if reduction == "mean" else columns


def pullback(
    columns: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], layer_output: torch.Tensor
) -> torch.Tensor:
    """Carry GGN columns ``(M, *function(layer_output).shape)`` back to ``(M, *layer_output.shape)``.

    ``function`` maps the layer output to the model output; each column is
    multiplied by its transposed Jacobian (``torch.func.vjp``, batched over M).
    The result is the ``sqrt_ggn`` argument of ``diag_ggn_weight``.
    """
    columns = check_tensor(columns, "columns", min_ndim=2)
    layer_output = check_tensor(layer_output, "layer_output", min_ndim=1)
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    _, vjp = torch.func.vjp(function, layer_output.detach())
    (result,) = torch.func.vmap(vjp)(columns)
    return result


DROPOUT_MODES = ("channel", "spatial")


def weight_vjp_dropout(
    x: torch.Tensor, grad_output: torch.Tensor, kernel_size: object, keep: float, mode: str, stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: object = 1, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """An unbiased random estimate of the weight VJP (``weight.shape``) by tensor dropout.

    ``mode="channel"`` keeps each input channel, ``mode="spatial"`` each input
    pixel, independently with probability ``keep``; kept entries count
    ``1/keep`` times, so the expectation is the exact weight VJP, and
    ``keep=1`` gives it exactly. Only the kept slices of ``x`` are read (and
    the matching parts of ``grad_output``): the work falls with ``keep``.

    The draw, reproducible with ``generator`` (on the CPU by default, or on
    any device): ``torch.rand(G, C_in // G, generator=generator) < keep`` for
    channels (per group and channel), ``torch.rand(*I, generator=generator) < keep``
    for pixels. Bernoulli subsets are not regular slices, so the kept slices
    are gathered (a copy of the kept part only) rather than viewed. The
    spatial mode reads, for each kept pixel, the ``prod(K)`` output-gradient
    entries its taps feed: its work is about ``keep * prod(K)`` times a plain
    pass over ``grad_output``, so it pays off for small ``keep``.
    """
    grad_output, hyper = gradient_layer(
        x, grad_output, "grad_output", 0, kernel_size, stride, padding, dilation, groups, False, 0
    )
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a number in (0, 1], got {keep!r}")
    if mode not in DROPOUT_MODES:
        raise ValueError(f"mode must be one of {DROPOUT_MODES}, got {mode!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    if mode == "channel":
        mask = torch.rand(hyper.groups, hyper.in_channels // hyper.groups, generator=generator, device=device) < keep
        return channel_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))
    mask = torch.rand(hyper.input_size, generator=generator, device=device) < keep
    return spatial_dropout(x, grad_output, hyper, mask.to(x.device), float(keep))


def channel_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept channels ``mask[g, c_in]`` only, scaled by ``1/keep``.

    The groups with a kept channel (``A`` of them) become the groups of a
    smaller layer whose ``L`` input channels per group are the kept ones
    (padded to the largest count, padding weighted 0); its weight VJP is
    scattered back into the full weight gradient.
    """
    groups, c_in, c_out = hyper.groups, hyper.in_channels // hyper.groups, hyper.out_channels // hyper.groups
    result = x.new_zeros(groups, c_in, c_out, *hyper.kernel_size)
    counts = mask.sum(1)
    chosen = counts.nonzero().flatten()  # (A,)
    if chosen.numel() == 0:
        return result.transpose(1, 2).reshape(hyper.weight_shape)
    slots = int(counts.max())
    channels = torch.argsort((~mask[chosen]).to(torch.int8), dim=1, stable=True)[:, :slots]  # kept first: (A, L)
    weight = (torch.arange(slots, device=x.device) < counts[chosen, None]).to(x.dtype) / keep  # (A, L)
    xs = x.unflatten(1, (groups, c_in))[:, chosen[:, None], channels].flatten(1, 2)  # (N, A*L, *I)
    vs = v.unflatten(1, (groups, c_out))[:, chosen].flatten(1, 2)  # (N, A*C_out/G, *O)
    small = conv_hyper(
        tuple(xs.shape), hyper.kernel_size, vs.shape[1], hyper.stride, hyper.padding, hyper.dilation, len(chosen)
    )
    vjp = compile_network(routine("weight_vjp", small, True))(X=xs, V=vs)  # (A, C_out/G, L, *K)
    values = vjp.transpose(1, 2) * weight.reshape(*weight.shape, *([1] * (vjp.ndim - 2)))
    result.index_put_((chosen[:, None].expand_as(channels), channels), values, accumulate=True)
    return result.transpose(1, 2).reshape(hyper.weight_shape)


def spatial_dropout(
    x: torch.Tensor, v: torch.Tensor, hyper: ConvHyper, mask: torch.Tensor, keep: float
) -> torch.Tensor:
    """The weight VJP from the kept input pixels ``mask[i..]`` only, scaled by ``1/keep``.

    ``x`` is read at the ``P`` kept pixels; ``grad_output`` at the output
    location each kernel tap of each kept pixel feeds (the inverse of the
    index pattern, per dim), zero where a tap feeds none. Both reads and the
    contraction (``tnconv.conv.derived.kept_pixels_network``) scale with ``P``.
    """
    coords = mask.nonzero()  # (P, dims)
    pixels, dims = coords.shape
    if pixels == 0:
        return x.new_zeros(hyper.weight_shape)
    flat_pixels = (coords * torch.tensor(contiguous_strides(hyper.input_size), device=x.device)).sum(1)
    xs = x.flatten(2)[:, :, flat_pixels]  # (N, C_in, P)
    location = torch.zeros((), dtype=torch.long, device=x.device)  # flat output location, (*K, P)
    valid = torch.ones((), dtype=torch.bool, device=x.device)
    for d, (pattern, step) in enumerate(zip(hyper.patterns, contiguous_strides(hyper.output_size))):
        taps = pattern_inverse(pattern, x.device)[:, coords[:, d]]  # (K_d, P): output fed by tap k at pixel p
        shape = [1] * dims + [pixels]
        shape[d] = taps.shape[0]
        location = location + step * taps.clamp(min=0).reshape(shape)
        valid = valid & (taps >= 0).reshape(shape)
    us = v.flatten(2)[:, :, location] * valid.to(x.dtype)  # (N, C_out, *K, P)
    net = kept_pixels_network(hyper, pixels)
    return compile_network(net)(X=xs, U=us).contiguous().reshape(hyper.weight_shape) / keep


def contiguous_strides(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of a tensor with these sizes."""
    return tuple(math.prod(sizes[d + 1 :]) for d in range(len(sizes)))


def pattern_inverse(pattern: IndexPattern, device: torch.device) -> torch.Tensor:
    """``o[k, i]``: the output location that tap ``k`` reads input pixel ``i`` for, or -1 (``(K, I)``)."""
    index, valid = pattern.positions(device)  # (K, O)
    taps, outputs = valid.nonzero(as_tuple=True)
    inverse = torch.full((int(pattern.kernel_size), int(pattern.input_size)), -1, dtype=torch.long, device=device)
    inverse[taps, index[taps, outputs]] = outputs
    return inverse
