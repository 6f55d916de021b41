"""A laid-out diagram -> SVG text, written directly (no plotting library, byte-for-byte deterministic)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from tnconv.render.layout import FONT_SIZE, LINE_HEIGHT, MARGIN, Diagram, Line, Node
from tnconv.render.style import (
    BACKGROUND,
    FILLS,
    FONT_FAMILY,
    INK,
    LABEL_BACKGROUND_OPACITY,
    LINE_WIDTH,
    OPEN_LEG,
)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _path(line: Line) -> str:
    (x0, y0), (x1, y1) = line.start, line.end
    if line.bend == 0.0:
        return f"M{_num(x0)},{_num(y0)} L{_num(x1)},{_num(y1)}"
    cx, cy = line.control
    return f"M{_num(x0)},{_num(y0)} Q{_num(cx)},{_num(cy)} {_num(x1)},{_num(y1)}"


def _node(node: Node) -> str:
    box = node.box
    if node.shape == "end":
        return ""
    fill, stroke, dashed = FILLS[node.shape]
    dash = ' stroke-dasharray="4,2"' if dashed else ""
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="{LINE_WIDTH}"{dash}'
    if node.shape == "dot":
        return f'<circle cx="{_num(box.x)}" cy="{_num(box.y)}" r="{_num(box.half_width)}" {style}/>'
    if node.shape in ("pattern", "pattern_sum", "identity", "ones"):
        shape = (
            f'<ellipse cx="{_num(box.x)}" cy="{_num(box.y)}" rx="{_num(box.half_width)}" '
            f'ry="{_num(box.half_height)}" {style}/>'
        )
    else:
        shape = (
            f'<rect x="{_num(box.x - box.half_width)}" y="{_num(box.y - box.half_height)}" '
            f'width="{_num(2 * box.half_width)}" height="{_num(2 * box.half_height)}" rx="5" {style}/>'
        )
    text = (
        f'<text x="{_num(box.x)}" y="{_num(box.y)}" text-anchor="middle" dominant-baseline="central" '
        f'font-weight="bold">{escape(node.text)}</text>'
    )
    return shape + text


def to_svg_text(diagram: Diagram) -> str:
    """The SVG document of ``diagram``."""
    open_legs = {line.leg for line in diagram.lines if line.dangling}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(diagram.width)}" height="{_num(diagram.height)}" '
        f'viewBox="0 0 {_num(diagram.width)} {_num(diagram.height)}" font-family="{FONT_FAMILY}" '
        f'font-size="{_num(FONT_SIZE)}">',
        f'<rect width="100%" height="100%" fill="{BACKGROUND}"/>',
        f'<g fill="none" stroke-width="{LINE_WIDTH}" stroke-linecap="round">',
    ]
    for line in diagram.lines:
        colour = OPEN_LEG if line.dangling else INK
        parts.append(f'<path d="{_path(line)}" stroke="{colour}"><title>{escape(line.leg)}</title></path>')
    parts.append("</g>")
    parts.extend(filter(None, (_node(node) for node in diagram.nodes)))
    for label in diagram.labels:
        box = label.box
        colour = OPEN_LEG if label.leg in open_legs else INK
        parts.append(
            f'<rect x="{_num(box.x - box.half_width)}" y="{_num(box.y - box.half_height)}" '
            f'width="{_num(2 * box.half_width)}" height="{_num(2 * box.half_height)}" fill="{BACKGROUND}" '
            f'fill-opacity="{LABEL_BACKGROUND_OPACITY}"/>'
            f'<text x="{_num(box.x)}" y="{_num(box.y)}" text-anchor="middle" dominant-baseline="central" '
            f'fill="{colour}">{escape(label.text)}</text>'
        )
    parts.append(
        f'<text x="{_num(MARGIN)}" y="{_num(diagram.height - MARGIN / 2 - LINE_HEIGHT / 2)}" '
        f'dominant-baseline="central" fill="{OPEN_LEG}">{escape(diagram.caption)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
