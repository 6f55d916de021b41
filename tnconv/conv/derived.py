"""Second-order conv routines derived from the conv diagram (``conv_network`` ops kfac_expand, ...).

Each network is built from the plain routines of ``tnconv.conv.networks``
(unfold, forward, weight VJP) by editing the diagram:

- ``kfac_expand``: the unfolded input ``U[n,g,c_in,k..,t..]`` contracted with a
  second copy of itself over ``n`` and the output locations ``t`` (the
  Gram matrix of the patches), output ``(g, c_in, k.., c_in_2, k_2..)``.
- ``kfac_reduce``: the same, but each copy sums its own ``t`` before the two
  meet; the locations then sit on the index patterns alone, so ``simplify``
  replaces ``sum_o Pi`` by the small ``PatternSum`` and the unfolded input is
  never formed.
- ``per_sample_grad``: the weight VJP with the batch leg ``n`` kept in the
  output, ``(n, *weight legs)``.
- ``diag_ggn``: the per-sample weight VJP with an extra leg ``m`` on ``V``
  (the columns of a symmetric factorisation of the output GGN, ``(M, N, C_out, *O)``),
  multiplied with a second copy of itself and summed over ``m, n``:
  ``sum_{m,n} J[m,n,w]^2`` as one network (output: the weight legs).

The scalings of the KFAC factors (``1/(N*T)``, ``1/(N*T^2)``) are applied by
``tnconv.curvature``, which reshapes the outputs to ``(G, d, d)`` and torch shapes.
"""

from __future__ import annotations

from functools import lru_cache

from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.conv.networks import build as build_routine
from tnconv.conv.networks import spatial_legs
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern, PatternSum
from tnconv.ir.views import Unflatten

OPS = ("kfac_expand", "kfac_reduce", "per_sample_grad", "diag_ggn")


def second(leg: str) -> str:
    """The name of ``leg`` on the second copy of a network (``c_in`` -> ``c_in_2``)."""
    return f"{leg}_2"


def layer_legs(hyper: ConvHyper) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``(input legs, output legs, kernel legs)`` of the layer: ``(i.., o.., k..)``, or ``(o.., i.., k..)`` transposed."""
    i, o, k = (spatial_legs(p, hyper.dims) for p in "iok")
    return (o, i, k) if hyper.transposed else (i, o, k)


def copy(net: Network, shared: set[str]) -> Network:
    """``net`` with every leg not in ``shared`` renamed by ``second``."""
    return net.rename({leg: second(leg) for leg in net.all_legs if leg not in shared})


def join(first: Network, other: Network, output: tuple[str, ...]) -> Network:
    """The product of two networks that share some legs, with the given output."""
    sizes = {**first.sizes, **other.sizes}
    return Network((*first.entries, *other.entries), output, sizes)


def kfac_network(hyper: ConvHyper, reduce: bool) -> Network:
    """The patch Gram matrix ``sum_{n,t} U U'`` (expand) or ``sum_n (sum_t U)(sum_t U')`` (reduce)."""
    unfold = build_routine("unfold", hyper)
    x_legs, y_legs, k_legs = layer_legs(hyper)
    shared = {"n", "g"} if reduce else {"n", "g", *y_legs}
    other = copy(unfold, shared)
    factor = ("g", "c_in", *k_legs)
    net = join(unfold, other, (*factor, *(second(leg) for leg in factor[1:])))
    return sum_patterns(net) if reduce else net


def sum_patterns(net: Network) -> Network:
    """Replace each pattern whose output leg ``o`` is on no other tensor by ``PatternSum`` (legs ``(k, i)``)."""
    entries = []
    for entry in net.entries:
        if isinstance(entry.kind, IndexPattern) and len(net.tensors_on(entry.legs[1])) == 1:
            k, o, i = entry.legs
            if o not in net.output:
                entries.append(Tensor(entry.name, (k, i), PatternSum(entry.kind)))
                continue
        entries.append(entry)
    return net.replace(tensors=entries)


def per_sample_network(hyper: ConvHyper) -> Network:
    """The weight VJP with the batch leg kept: output ``(n, *weight legs)``."""
    vjp = build_routine("weight_vjp", hyper)
    return vjp.replace(output=("n", *vjp.output))


def diag_ggn_network(hyper: ConvHyper) -> Network:
    """``sum_{m,n} J[m,n,w] J[m,n,w]`` with ``J`` the per-sample weight VJP of ``V[m, n, g, c_out, o..]``."""
    per_sample = per_sample_network(hyper)
    entries = []
    for entry in per_sample.entries:
        if entry.name == "V":
            (view,) = entry.kind.views
            entry = Tensor("V", ("m", *entry.legs), Data((Unflatten(view.axis + 1, view.sizes),)))
        entries.append(entry)
    batched = Network(entries, ("m", *per_sample.output), per_sample.sizes)
    weight = tuple(per_sample.output[1:])
    other = copy(batched, {"m", "n", *weight})
    return join(batched, other, weight)


_DERIVATIONS = {
    "kfac_expand": lambda hyper: kfac_network(hyper, reduce=False),
    "kfac_reduce": lambda hyper: kfac_network(hyper, reduce=True),
    "per_sample_grad": per_sample_network,
    "diag_ggn": diag_ggn_network,
}


@lru_cache(maxsize=512)
def network(op: str, hyper: ConvHyper, simplify: bool = True) -> Network:
    """The derived network of ``op`` for a normalised layer (cached by ``(op, hyper, simplify)``)."""
    try:
        derive = _DERIVATIONS[op]
    except KeyError:
        raise ValueError(f"op must be one of {OPS}, got {op!r}") from None
    if op in ("per_sample_grad", "diag_ggn") and hyper.out_channels is None:
        raise ValueError(f"op={op!r} needs out_channels, got None")
    return derive(hyper)


def build(
    op: str,
    input_shape: object,
    kernel_size: object,
    *,
    out_channels: object = None,
    stride: object = 1,
    padding: object = 0,
    dilation: object = 1,
    groups: object = 1,
    padding_mode: object = "zeros",
    output_padding: object = 0,
    transposed: object = False,
    simplify: bool = True,
) -> Network:
    """``tnconv.conv_network`` for the derived ops (same arguments); validates the hyper-parameters."""
    hyper = conv_hyper(
        input_shape, kernel_size, out_channels, stride, padding, dilation, groups, padding_mode,
        output_padding, transposed,
    )
    return network(op, hyper, simplify)


def kept_pixels_network(hyper: ConvHyper, pixels: int) -> Network:
    """The weight VJP with its contracted input-pixel legs cut down to ``pixels`` kept pixels ``p``.

    ``X[n,g,c_in,i..] Pi[k,o,i].. V[n,g,c_out,o..]`` summed over the kept
    pixels only: ``X`` read at them (``(N, C_in, P)``) and ``U[n,g,c_out,k..,p]
    = sum_o Pi[k,o,i_p] V[n,g,c_out,o]`` (``(N, C_out, *K, P)``, a gather of
    ``V``) meet over ``p``; output the weight legs ``(g, c_out, c_in, k..)``.
    Its cost is proportional to ``pixels``.
    """
    _, _, k_legs = layer_legs(hyper)
    groups, c_in, c_out = hyper.groups, hyper.in_channels // hyper.groups, hyper.out_channels // hyper.groups
    x = Tensor("X", ("n", "g", "c_in", "p"), Data((Unflatten(1, (groups, c_in)),)))
    u = Tensor("U", ("n", "g", "c_out", *k_legs, "p"), Data((Unflatten(1, (groups, c_out)),)))
    sizes = {"n": hyper.batch, "g": groups, "c_in": c_in, "c_out": c_out, "p": pixels}
    sizes.update(zip(k_legs, hyper.kernel_size))
    return Network((x, u), ("g", "c_out", "c_in", *k_legs), sizes)
