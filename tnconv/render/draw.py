"""``tnconv.draw``: tensor-network diagrams of networks, as SVG, PNG, PDF or Graphviz DOT.

The pictures follow the paper's conventions (see ``tnconv.render.layout``):
tensors are labelled nodes (data tensors blue boxes, index patterns orange
ellipses, summed patterns dashed), each leg is a line labelled ``leg=size``,
open (output) legs dangle in green and the output order is written below,
and legs joining more than two ends meet at a dot. The layout is
deterministic: the same network always gives the same file.

SVG and DOT are written without any plotting library; PNG and PDF use
matplotlib (``pip install matplotlib``, or tnconv's ``draw`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from tnconv.render.dot import to_dot
from tnconv.render.layout import Diagram, layout, layout_sum
from tnconv.render.structure import terms_of
from tnconv.render.svg import to_svg_text

if TYPE_CHECKING:
    from tnconv.ir.network import Network
    from tnconv.ir.networksum import NetworkSum

__all__ = ["draw", "to_svg", "to_dot", "diagram", "FORMATS"]

FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")


Drawable = Union["Network", "NetworkSum"]


def diagram(net: Drawable) -> Diagram:
    """The laid-out diagram of a network, or of a sum of networks (terms side by side, joined by ``+``)."""
    terms, _ = terms_of(net)
    return layout_sum(terms) if hasattr(net, "terms") else layout(terms[0])


def to_svg(net: Drawable) -> str:
    """The diagram of ``net`` as an SVG document (a str)."""
    return to_svg_text(diagram(net))


def draw(net: Drawable, path: Union[str, Path]) -> Path:
    """Write the diagram of ``net`` to ``path``; the format comes from the suffix.

    Args:
        net: the network (or ``NetworkSum``, drawn as its terms joined by ``+``).
        path: the file to write: ``.svg``, ``.png``, ``.pdf`` (matplotlib), or
            ``.dot``/``.gv`` (Graphviz source). Parent folders must exist.

    Returns:
        The path written, as a ``pathlib.Path``.

    Raises:
        ValueError: for an unknown suffix or a missing parent folder.
        TypeError: when ``net`` is not a Network/NetworkSum or ``path`` not a path.
    """
    terms_of(net)  # TypeError for anything else
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"path {str(path)!r} must end in one of {', '.join(FORMATS)}")
    if not target.parent.is_dir():
        raise ValueError(f"path {str(path)!r}: folder {str(target.parent)!r} does not exist")
    if suffix in (".dot", ".gv"):
        target.write_text(to_dot(net), encoding="utf-8")
        return target
    if suffix == ".svg":
        target.write_text(to_svg(net), encoding="utf-8")
    else:
        from tnconv.render.raster import write_raster

        write_raster(diagram(net), target)
    return target
