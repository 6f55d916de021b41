"""What a tnconv SVG drawing shows, free of float coordinates: ``svg_structure(text)``.

A drawing is read back into its items (node texts, hyperedge dots, leg
labels, and the loose ends of dangling legs), the lines between them (leg,
colour, straight or curved, which items they join), the caption, and for
every pair of items whether one sits left of, right of or level with the
other, and above, below or level with it (``TOLERANCE`` pixels count as
level). Two drawings with the same structure show the same picture up to
small shifts, so the check of the checked-in diagrams holds on any machine
(the last bits of the layout's linear algebra differ between BLAS builds)
and still fails when a node moves past another, a label changes side, a
line joins other nodes, or the network changes.

Import as ``from svg_structure import svg_structure`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import itertools
import re
from xml.etree import ElementTree

SVG = "{http://www.w3.org/2000/svg}"
TOLERANCE = 4.0  # pixels: items closer than this along an axis are level on it
SAME_POINT = 1.0  # pixels: a line's end this close to an item's centre ends at that item


def _items(root: ElementTree.Element) -> list[tuple[str, float, float]]:
    """``(name, x, y)`` of every node text, dot and label (the caption, the last text, excluded).

    Names are ``node:TEXT#n``, ``dot#n`` and ``label:TEXT#n`` with ``n`` counting equal names in
    document order (which follows the network's tensors and legs).
    """
    found: list[tuple[str, float, float]] = []
    for element in root.iter():
        if element.tag == f"{SVG}circle":
            found.append(("dot", float(element.get("cx", "nan")), float(element.get("cy", "nan"))))
        elif element.tag == f"{SVG}text":
            kind = "node" if element.get("font-weight") == "bold" else "label"
            found.append((f"{kind}:{element.text}", float(element.get("x", "nan")), float(element.get("y", "nan"))))
    counts: dict[str, int] = {}
    named = []
    for name, x, y in found[:-1]:
        counts[name] = counts.get(name, -1) + 1
        named.append((f"{name}#{counts[name]}", x, y))
    return named


def _ends(path: str) -> tuple[tuple[float, float], tuple[float, float], bool]:
    """The start and end point of an ``M.. L..`` or ``M.. Q.. ..`` path, and whether it is curved."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path)]
    return (numbers[0], numbers[1]), (numbers[-2], numbers[-1]), "Q" in path


def _side(delta: float) -> str:
    return "<" if delta < -TOLERANCE else ">" if delta > TOLERANCE else "="


def svg_structure(text: str) -> dict[str, object]:
    """The structure of an SVG written by ``tnconv.render.draw.to_svg`` (see the module docstring)."""
    root = ElementTree.fromstring(text)
    items = _items(root)
    lines = []
    for number, element in enumerate(root.iter(f"{SVG}path")):
        start, end, curved = _ends(element.get("d", ""))
        title = element.find(f"{SVG}title")
        leg = title.text if title is not None else ""
        joined = []
        for point in (start, end):
            at = [name for name, x, y in items if abs(x - point[0]) <= SAME_POINT and abs(y - point[1]) <= SAME_POINT]
            if not at:  # a dangling leg's loose end: positioned like an item
                at = [f"end:{leg}#{number}"]
                items.append((at[0], *point))
            joined.append(at[0])
        lines.append((leg, element.get("stroke"), "curved" if curved else "straight", *joined))
    texts = [element.text for element in root.iter(f"{SVG}text")]
    relations = sorted(
        (a, b, _side(bx - ax), _side(by - ay)) for (a, ax, ay), (b, bx, by) in itertools.combinations(items, 2)
    )
    return {
        "items": sorted(name for name, _, _ in items),
        "lines": sorted(lines),
        "caption": texts[-1] if texts else None,
        "relations": relations,
    }
