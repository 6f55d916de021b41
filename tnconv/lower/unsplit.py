"""Undoing the dense rule for native dispatch: split pixel axes back into index patterns.

``tnconv.simplify`` rewrites an index pattern whose stride equals its kernel
size (no padding, no dilation: a patchify conv, a ConvTranspose with stride
= kernel) into a view: the pixel axis of size ``O*K`` is unflattened into legs
``(o, k)`` and the pattern disappears. The value is the same and the einsum
path gets cheaper, but no PyTorch convolution kernel matches the result any
more, and the matrix product left over can be slower than the kernel.
``restore_patterns`` turns such a split back into ``Pi[k, o, i]`` (``I = O*K``,
stride ``K``) so that ``tnconv.lower.native`` can match a convolution again.
It changes no value, only the form, so any match it enables is exact.

A split qualifies when it is the last view of a data tensor, splits one axis
into two legs, and each leg joins exactly one other place (a tensor or the
output), the two places differing - as ``o`` and ``k`` of a pattern do. Channel
splits ``(g, c)`` do not: ``g`` joins both the other tensor and the output.
"""

from __future__ import annotations

from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.ir.views import Unflatten


def restore_patterns(net: Network) -> Network | None:
    """``net`` with its dense-rule splits turned back into index patterns, or None when it has none."""
    sizes = {leg: int(size) for leg, size in net.sizes.items()}
    entries, patterns = [], []
    for position, entry in enumerate(net.entries):
        kind = entry.kind
        if not isinstance(kind, Data) or not all(isinstance(view, Unflatten) for view in kind.views):
            entries.append(entry)
            continue
        views, legs, restored = list(kind.views), list(entry.legs), []
        while views and len(views[-1].sizes) == 2:
            axis = views[-1].axis
            o, k = legs[axis], legs[axis + 1]
            where_o, where_k = _elsewhere(net, o, position), _elsewhere(net, k, position)
            if where_o is None or where_k is None or where_o == where_k:
                break
            i = _fresh(f"{o}_{k}", sizes)
            sizes[i] = sizes[o] * sizes[k]
            legs[axis : axis + 2] = [i]
            views.pop()
            restored.insert(0, Tensor(f"Pi_{i}", (k, o, i), IndexPattern(sizes[i], sizes[k], sizes[k])))
        patterns += restored  # in the order of the axes they replace: the kernels' spatial order
        changed = len(views) != len(kind.views)
        entries.append(Tensor(entry.name, tuple(legs), Data(tuple(views))) if changed else entry)
    if not patterns:
        return None
    return Network([*entries, *patterns], net.output, sizes)


def _elsewhere(net: Network, leg: str, position: int) -> int | None:
    """The one other place ``leg`` joins (a tensor position, or -1 for the output), else None."""
    if net.entries[position].legs.count(leg) != 1:
        return None
    places = [q for q in net.tensors_on(leg) if q != position] + ([-1] if leg in net.output else [])
    if len(places) != 1 or (places[0] >= 0 and net.entries[places[0]].legs.count(leg) != 1):
        return None
    return places[0]


def _fresh(name: str, taken: dict[str, int]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}_{number}"
    return candidate
