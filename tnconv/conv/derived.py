"""The passes that derive second-order conv routines from the plain conv networks (``tnconv.routines``' stages).

Each function here takes the layer (and the routine's ``Options``) and returns
the ``tnconv.passes.Pass`` of one derivation stage. Most fuse the network so far
into a small *sketch* network in the place of one of its tensors:

- ``sum_over_locations``: ``sum_t U[n,g,c_in,k..,t..]`` with ``U`` := the patches
  (unfold): the patch sums. The locations then sit on the index patterns
  alone, so ``simplify`` turns ``sum_o Pi`` into the small ``PatternSum``
  ``(K, I)`` and the unfolded input is never formed. (For a transposed layer the
  locations are the patterns' ``i`` legs; their sum is a ``(K, O)`` 0/1 matrix
  that the contraction forms from the small pattern.)
- ``squared_patches``: ``U[n,g,c_in,k..,o..]^2`` summed over ``n`` and the locations
  (two copies of the patches, every leg shared: the diagonal of the expand Gram);
  ``square_patterns`` then merges the two copies of each index pattern
  (``tnconv.passes.pattern_square``), so that the two copies of ``X`` read the
  same pixel: the patch sums of the squared input.
- ``gram``: ``P[n,g,c_in,k..,..] P[n,g,c_in_2,k_2..,..]`` summed over every leg
  but the channels and taps, with ``P`` := the network: two copies of ``X``
  whose ``n`` (and, for the patches themselves, location) legs are tied. Output
  ``(g, c_in, k.., c_in_2, k_2..)``: KFAC-expand from the patches, KFAC-reduce
  from their sums.
- ``linearised_loss``: ``l[n] = sum V[n,g,c_out,t..] Y[n,g,c_out,t..]`` with ``Y``
  := the forward network; ``differentiate_weight`` then removes ``W``: the
  weight VJP with the batch leg kept, ``(n, *W legs)``.
- ``vmap_columns``: leg ``m`` (the GGN columns, M) on ``V``;
  ``square_columns``: ``J[m,n,w] J[m,n,w] -> w`` with ``J`` := the network. The
  square (not multilinear in ``V``) is the product of two copies (``contract_copies``).
- ``squared_norms``: ``J[n,w] J[n,w] -> n`` over the weight legs ``w`` (each sample's
  squared gradient norm; the contraction may pair the copies' output locations instead
  of forming ``J``); ``squares_over_samples``: ``J[n,w] J[n,w] -> w`` over ``n``.

``kept_pixels_network`` is the weight VJP over a random subset of input
pixels (spatial tensor dropout).
"""

from __future__ import annotations

from typing import Callable

from tnconv.conv.hyper import ConvHyper
from tnconv.conv.networks import build as build_routine
from tnconv.conv.networks import spatial_legs
from tnconv.conv.options import Options
from tnconv.ir.names import copy_name
from tnconv.ir.network import Network, Tensor
from tnconv.ir.networksum import Value
from tnconv.ir.sizes import Size, leg_symbol
from tnconv.ir.tensors import Data
from tnconv.ir.views import Unflatten
from tnconv.passes.copies import contract_copies_traced
from tnconv.passes.core import Pass, Trace, as_pass
from tnconv.passes.differentiate import differentiate_traced
from tnconv.passes.fuse import fuse_traced
from tnconv.passes.pattern_square import square_patterns_traced
from tnconv.passes.vmap import vmap_traced


def second(leg: str) -> str:
    """The name of ``leg`` on the second copy (``c_in`` -> ``c_in_2``, ``tnconv.ir.names.copy_name``)."""
    return copy_name(leg, 2)


def fuse_into(label: str, name: str, sketch: Callable[[Network], Network]) -> Pass:
    """The pass ``net -> fuse(sketch(net), name, net)``: ``net`` in the place of tensor ``name`` of its sketch."""

    def run(net: Value) -> tuple[Value, Trace]:
        if not isinstance(net, Network):
            raise TypeError(f"pass {label!r} takes a Network, got {type(net).__name__}")
        return fuse_traced(sketch(net), name, net)

    return Pass(label, run)


def _sizes(net: Network, legs: tuple[str, ...]) -> dict[str, Size]:
    return {leg: net.size(leg) for leg in legs}


def sum_over_locations(hyper: ConvHyper, options: Options) -> Pass:
    """``sum_t U[n,g,c_in,k..,t..]`` with ``U`` := the patches: their sums ``(n, g, c_in, k..)``."""
    kept = ("n", "g", "c_in", *spatial_legs("k", hyper.dims))

    def sketch(patches: Network) -> Network:
        return Network((Tensor("U", patches.output),), kept, _sizes(patches, patches.output))

    return fuse_into("sum_over_locations", "U", sketch)


def squared_patches(hyper: ConvHyper, options: Options) -> Pass:
    """``U[n,g,c_in,k..,o..] U[n,g,c_in,k..,o..]`` summed over ``n`` and the locations: output ``(g, c_in, k..)``."""
    kept = ("g", "c_in", *spatial_legs("k", hyper.dims))

    def sketch(patches: Network) -> Network:
        legs = patches.output
        return Network((Tensor("U", legs), Tensor("U", legs)), kept, _sizes(patches, legs))

    return fuse_into("squared_patches", "U", sketch)


def square_patterns(hyper: ConvHyper, options: Options) -> Pass:
    """``Pi[k,o,i] Pi[k,o,i'] -> Pi[k,o,i] delta[i,i']`` for the copies of each pattern (``tnconv.passes.pattern_square``)."""
    return as_pass(square_patterns_traced)


def gram(hyper: ConvHyper, options: Options) -> Pass:
    """``P P_2`` summed over every leg of ``P`` but ``c_in, k..``: output ``(g, c_in, k.., c_in_2, k_2..)``."""
    untied = ("c_in", *spatial_legs("k", hyper.dims))

    def sketch(factor: Network) -> Network:
        legs = factor.output
        other = tuple(second(leg) if leg in untied else leg for leg in legs)
        sizes = {**_sizes(factor, legs), **{second(leg): factor.size(leg) for leg in untied}}
        output = ("g", *untied, *map(second, untied))
        return Network((Tensor("P", legs), Tensor("P", other)), output, sizes)

    return fuse_into("gram", "P", sketch)


def output_gradient(hyper: ConvHyper) -> Tensor:
    """The conv networks' ``V``: the gradient w.r.t. the layer output, legs ``(n, g, c_out, t..)``."""
    (v,) = (e for e in build_routine("weight_vjp", hyper).entries if e.name == "V")
    return v


def linearised_loss(hyper: ConvHyper, options: Options) -> Pass:
    """``l[n] = sum_{g,c_out,t} V[n,g,c_out,t..] Y[n,g,c_out,t..]`` with ``Y`` := the (forward) network."""
    v = output_gradient(hyper)

    def sketch(forward: Network) -> Network:
        return Network((v, Tensor("Y", v.legs)), ("n",), _sizes(forward, v.legs))

    return fuse_into("linearised_loss", "Y", sketch)


def differentiate_weight(hyper: ConvHyper, options: Options) -> Pass:
    """``differentiate(net, "W")``: its legs follow the output."""
    return as_pass(differentiate_traced, "W")


def vmap_columns(hyper: ConvHyper, options: Options) -> Pass:
    """``vmap(net, "m", M, "V")``: the GGN columns on ``V`` (M symbolic when ``options.columns`` is None)."""
    columns = leg_symbol("m") if options.columns is None else options.columns
    return as_pass(vmap_traced, "m", columns, "V")


def square_columns(hyper: ConvHyper, options: Options) -> Pass:
    """``J[m,n,w] J[m,n,w] -> w`` with ``J`` := the network: two copies contracted over its first two legs."""
    return as_pass(contract_copies_traced, ("m", "n"))


def squared_norms(hyper: ConvHyper, options: Options) -> Pass:
    """``J[n,w] J[n,w] -> n`` with ``J`` := the per-sample weight gradient: two copies contracted over every
    output leg but ``n`` (the weight legs ``w``: each sample's squared gradient norm)."""

    def run(net: Value) -> tuple[Value, Trace]:
        return contract_copies_traced(net, tuple(leg for leg in net.output if leg != "n"))

    return Pass("squared_norms", run)


def squares_over_samples(hyper: ConvHyper, options: Options) -> Pass:
    """``J[n,w] J[n,w] -> w`` with ``J`` := the per-sample weight gradient: two copies contracted over ``n`` (the
    squared per-sample gradients summed over samples)."""
    return as_pass(contract_copies_traced, "n")


def kept_pixels_network(hyper: ConvHyper, pixels: int) -> Network:
    """The weight VJP with its contracted input-pixel legs cut down to ``pixels`` kept pixels ``p``.

    ``X[n,g,c_in,i..] Pi[k,o,i].. V[n,g,c_out,o..]`` summed over the kept
    pixels only: ``X`` read at them (``(N, C_in, P)``) and ``U[n,g,c_out,k..,p]
    = sum_o Pi[k,o,i_p] V[n,g,c_out,o]`` (``(N, C_out, *K, P)``, a gather of
    ``V``) meet over ``p``; output the weight legs ``(g, c_out, c_in, k..)``.
    Its cost is proportional to ``pixels``.
    """
    if hyper.out_channels is None:
        raise ValueError("out_channels is needed for the kept-pixels weight VJP, got None")
    k_legs = spatial_legs("k", hyper.dims)
    groups, c_in, c_out = hyper.groups, hyper.in_channels // hyper.groups, hyper.out_channels // hyper.groups
    x = Tensor("X", ("n", "g", "c_in", "p"), Data((Unflatten(1, (groups, c_in)),)))
    u = Tensor("U", ("n", "g", "c_out", *k_legs, "p"), Data((Unflatten(1, (groups, c_out)),)))
    sizes = {"n": hyper.batch, "g": groups, "c_in": c_in, "c_out": c_out, "p": pixels}
    sizes.update(zip(k_legs, hyper.kernel_size))
    return Network((x, u), ("g", "c_out", "c_in", *k_legs), sizes)
