"""The conv networks every routine starts from (the conventions below, drawn in docs/concepts.md).

With N spatial dims and G groups, a convolution is the network::

    Y[n,g,c_out,o1..oN] = X[n,g,c_in,i1..iN] Pi1[k1,o1,i1] ... PiN[kN,oN,iN] W[g,c_out,c_in,k1..kN]

The networks here are that diagram with some tensor removed or replaced:
the input VJP swaps X for the output gradient V, the weight VJP swaps W for
V, unfold (im2col) drops W, fold is unfold's adjoint. A transposed conv
(ConvTranspose) uses the pattern of the conv it transposes: its input lives
on the ``o`` legs and its output on the ``i`` legs.

Tensor names: ``X`` the layer input (``(N, C_in, *I)`` as the user passes
it), ``W`` the torch weight, ``V`` the gradient w.r.t. the layer output,
``Pi1..PiN`` the index patterns (padding modes are pattern variants, never a
padded copy). Channels are split into ``(g, c)`` by ``Unflatten`` views, so
the user passes torch-layout tensors; the ``g`` leg is always present.
"""

from __future__ import annotations


from tnconv.caches import cached
from tnconv.conv.hyper import ConvHyper
from tnconv.ir.network import Network, Tensor
from tnconv.ir.sizes import Size, quotient
from tnconv.ir.tensors import Data
from tnconv.ir.views import Unflatten


def spatial_legs(prefix: str, dims: int) -> tuple[str, ...]:
    """``(prefix1, ..., prefixN)``: the per-dim legs ``i``, ``o`` or ``k``."""
    return tuple(f"{prefix}{d}" for d in range(1, dims + 1))


class _Parts:
    """The tensors and leg sizes of one layer's diagram, from which each routine picks."""

    def __init__(self, hyper: ConvHyper) -> None:
        dims, groups = hyper.dims, hyper.groups
        self.hyper = hyper
        self.i, self.o, self.k = spatial_legs("i", dims), spatial_legs("o", dims), spatial_legs("k", dims)
        # layer input / output spatial legs: a transposed layer reads the pattern's o legs
        self.x_legs = self.o if hyper.transposed else self.i
        self.y_legs = self.i if hyper.transposed else self.o
        patterns = hyper.patterns
        self.patterns = tuple(
            Tensor(f"Pi{d + 1}", (self.k[d], self.o[d], self.i[d]), patterns[d]) for d in range(dims)
        )
        self.sizes: dict[str, Size] = {"n": hyper.batch, "g": groups, "c_in": quotient(hyper.in_channels, groups)}
        for d, p in enumerate(patterns):
            self.sizes.update({self.k[d]: p.kernel_size, self.o[d]: p.output_size, self.i[d]: p.input_size})
        if hyper.out_channels is not None:
            self.sizes["c_out"] = quotient(hyper.out_channels, groups)

    def x(self) -> Tensor:
        """The layer input ``X`` (user shape ``(N, C_in, *I)``)."""
        views = (Unflatten(1, (self.sizes["g"], self.sizes["c_in"])),)
        return Tensor("X", ("n", "g", "c_in", *self.x_legs), Data(views))

    def v(self) -> Tensor:
        """The gradient ``V`` w.r.t. the layer output (user shape ``(N, C_out, *O)``)."""
        views = (Unflatten(1, (self.sizes["g"], self.out_channels())),)
        return Tensor("V", ("n", "g", "c_out", *self.y_legs), Data(views))

    def weight_legs(self) -> tuple[str, ...]:
        """W's legs in torch layout: ``(g, c_out, c_in, k..)``, or ``(g, c_in, c_out, k..)`` when transposed."""
        channels = ("c_in", "c_out") if self.hyper.transposed else ("c_out", "c_in")
        return ("g", *channels, *self.k)

    def w(self) -> Tensor:
        """The torch weight ``W``: ``(C_out, C_in // G, *K)`` (``(C_in, C_out // G, *K)`` when transposed)."""
        first = self.sizes["c_in"] if self.hyper.transposed else self.out_channels()
        views = (Unflatten(0, (self.sizes["g"], first)),)
        return Tensor("W", self.weight_legs(), Data(views))

    def out_channels(self) -> Size:
        if "c_out" not in self.sizes:
            raise ValueError("out_channels is needed for a network with a weight or output gradient, got None")
        return self.sizes["c_out"]

    def network(self, tensors: list[Tensor], output: tuple[str, ...]) -> Network:
        legs = {leg for t in tensors for leg in t.legs}
        return Network(tensors, output, {leg: s for leg, s in self.sizes.items() if leg in legs})


def forward_network(hyper: ConvHyper) -> Network:
    """Layer output ``Y`` with legs ``(n, g, c_out, o..)`` (``i..`` when transposed) from ``X`` and ``W``."""
    parts = _Parts(hyper)
    return parts.network([parts.x(), *parts.patterns, parts.w()], ("n", "g", "c_out", *parts.y_legs))


def input_vjp_network(hyper: ConvHyper) -> Network:
    """Gradient w.r.t. ``X``, legs ``(n, g, c_in, i..)`` (``o..`` when transposed), from ``V`` and ``W``."""
    parts = _Parts(hyper)
    return parts.network([parts.v(), *parts.patterns, parts.w()], ("n", "g", "c_in", *parts.x_legs))


def weight_vjp_network(hyper: ConvHyper) -> Network:
    """Gradient w.r.t. ``W``, legs in W's torch layout (``(g, c_out, c_in, k..)``), from ``X`` and ``V``."""
    parts = _Parts(hyper)
    return parts.network([parts.x(), *parts.patterns, parts.v()], parts.weight_legs())


def unfold_network(hyper: ConvHyper) -> Network:
    """im2col of ``X``: legs ``(n, g, c_in, k.., o..)``; for a transposed layer ``(n, g, c_in, k.., i..)``."""
    parts = _Parts(hyper)
    return parts.network([parts.x(), *parts.patterns], ("n", "g", "c_in", *parts.k, *parts.y_legs))


def fold_network(hyper: ConvHyper) -> Network:
    """col2im, unfold's adjoint: ``X`` is ``(N, C*prod(K), L)`` (F.fold's input), output ``(n, g, c_in, i..)``.

    ``hyper.input_shape`` is the shape of the folded image ``(N, C, *output_size)``.
    """
    if hyper.transposed:
        raise ValueError("op='fold' has no transposed variant, got transposed=True")
    parts = _Parts(hyper)
    dims = hyper.dims
    kernel = tuple(parts.sizes[k] for k in parts.k)
    outputs = tuple(parts.sizes[o] for o in parts.o)
    views = (Unflatten(1, (parts.sizes["g"], parts.sizes["c_in"], *kernel)), Unflatten(3 + dims, outputs))
    columns = Tensor("X", ("n", "g", "c_in", *parts.k, *parts.o), Data(views))
    return parts.network([columns, *parts.patterns], ("n", "g", "c_in", *parts.i))


_BUILDERS = {
    "forward": forward_network,
    "input_vjp": input_vjp_network,
    "weight_vjp": weight_vjp_network,
    "unfold": unfold_network,
    "fold": fold_network,
}


@cached(maxsize=512)
def build(start: str, hyper: ConvHyper) -> Network:
    """The (unsimplified) network ``start`` of a normalised layer, where derivations start; cached.

    ``start`` is one of ``tnconv.routines.routine.STARTS`` (forward, input_vjp,
    weight_vjp, unfold, fold); the transposed variants are these with ``hyper.transposed``.
    """
    try:
        builder = _BUILDERS[start]
    except KeyError:
        raise ValueError(f"start must be one of {tuple(_BUILDERS)}, got {start!r}") from None
    return builder(hyper)
