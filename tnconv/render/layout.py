"""Deterministic diagram layout: a network -> positioned nodes, legs and labels (pixels).

What is drawn comes from ``tnconv.render.structure`` (lines, dangling legs,
hyperedge dots), where it goes from ``tnconv.render.placement`` (stress
layout; no random seeds, so the same network always gives the same picture).
This module sizes the nodes, fans out parallel lines as curves, and places
each leg's label greedily at the first candidate position along its line
that overlaps no node and no earlier label; if some label cannot be placed
freely, the whole drawing is spread out and the labels placed again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tnconv.render.placement import best_layout
from tnconv.render.structure import Graph, leg_text, structure

if TYPE_CHECKING:
    from tnconv.ir.network import Network

FONT_SIZE = 13.0
CHAR_WIDTH = 0.6 * FONT_SIZE  # monospace advance width
LINE_HEIGHT = 1.3 * FONT_SIZE
DOT_RADIUS = 4.5
MARGIN = 24.0
BASE_UNIT = 95.0  # pixels per unit of graph distance before spreading
SUM_GAP = 40.0  # pixels between the terms of a sum, where the + goes


@dataclass(frozen=True)
class Box:
    """An axis-aligned box by its centre and half extents (pixels)."""

    x: float
    y: float
    half_width: float
    half_height: float

    def overlap(self, other: "Box") -> float:
        """The area the two boxes share (0 when apart)."""
        dx = min(self.x + self.half_width, other.x + other.half_width) - max(
            self.x - self.half_width, other.x - other.half_width
        )
        dy = min(self.y + self.half_height, other.y + other.half_height) - max(
            self.y - self.half_height, other.y - other.half_height
        )
        return max(dx, 0.0) * max(dy, 0.0)


@dataclass(frozen=True)
class Node:
    """A drawn node: ``shape`` is ``data``, ``pattern``, ``pattern_sum``, ``identity``, ``ones``, ``dot`` or ``end``."""

    key: str
    shape: str
    text: str
    box: Box


@dataclass(frozen=True)
class Line:
    """One line of a leg, from node ``a`` to node ``b``; ``bend`` offsets its middle sideways (pixels)."""

    leg: str
    a: str
    b: str
    start: tuple[float, float]
    end: tuple[float, float]
    bend: float

    def point(self, t: float) -> tuple[float, float]:
        """The point at parameter ``t`` in [0, 1] of the (quadratic) curve."""
        (x0, y0), (x2, y2) = self.start, self.end
        cx, cy = self.control
        return (
            (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x2,
            (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y2,
        )

    @property
    def dangling(self) -> bool:
        """Whether this line is an open (output) leg ending in the air."""
        return self.b.rsplit("/", 1)[-1].startswith("end:")

    @property
    def control(self) -> tuple[float, float]:
        """The control point of the quadratic curve (twice the bend, so the curve's middle moves by ``bend``)."""
        (x0, y0), (x2, y2) = self.start, self.end
        nx_, ny_ = _normal(x2 - x0, y2 - y0)
        return ((x0 + x2) / 2 + 2 * self.bend * nx_, (y0 + y2) / 2 + 2 * self.bend * ny_)


@dataclass(frozen=True)
class Label:
    """A leg label: its text and box."""

    leg: str
    text: str
    box: Box


@dataclass(frozen=True)
class Diagram:
    """A laid-out network, in pixels with y pointing down."""

    nodes: tuple[Node, ...]
    lines: tuple[Line, ...]
    labels: tuple[Label, ...]
    caption: str
    width: float
    height: float


def text_width(text: str) -> float:
    """The width of ``text`` in the diagram's monospace font."""
    return CHAR_WIDTH * len(text)


def _node_box(shape: str, text: str) -> tuple[float, float]:
    """Half width and half height of a node with this shape and text."""
    if shape == "dot":
        return DOT_RADIUS, DOT_RADIUS
    if shape == "end":
        return 1.0, 1.0
    if shape in ("identity", "ones"):
        return 11.0, 11.0
    if shape in ("pattern", "pattern_sum"):
        return text_width(text) / 2 + 12.0, 14.0
    return text_width(text) / 2 + 10.0, 14.0


def _normal(dx: float, dy: float) -> tuple[float, float]:
    length = math.hypot(dx, dy) or 1.0
    return -dy / length, dx / length


def _bends(graph: Graph) -> list[float]:
    """Sideways offsets that fan out lines joining the same pair of nodes."""
    groups: dict[tuple[str, str], list[int]] = {}
    for n, (_, a, b) in enumerate(graph.lines):
        groups.setdefault((min(a, b), max(a, b)), []).append(n)
    bends = [0.0] * len(graph.lines)
    for (low, _), members in groups.items():
        for rank, n in enumerate(members):
            offset = (rank - (len(members) - 1) / 2) * 26.0
            # orient the offset by the pair's canonical direction so fans do not cross
            bends[n] = offset if graph.lines[n][1] == low else -offset
    return bends


def _place_labels(
    graph: Graph, lines: list[Line], nodes: list[Node], texts: dict[str, str]
) -> tuple[list[Label], float]:
    """Put each leg's label near its line; return the labels and the overlap left over."""
    obstacles = [node.box for node in nodes if node.shape not in ("end",)]
    placed: list[Label] = []
    leftover = 0.0
    for leg, line_index in graph.labelled:
        line = lines[line_index]
        text = texts[leg]
        half_w, half_h = text_width(text) / 2 + 3.0, LINE_HEIGHT / 2
        best: tuple[float, Box] | None = None
        for box in _candidates(line, half_w, half_h):
            cost = sum(box.overlap(o) for o in obstacles) + sum(box.overlap(l.box) for l in placed)
            cost += sum(_crossing(box, other) for other in lines if other is not line)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, box)
            if cost == 0.0:
                break
        assert best is not None
        leftover += best[0]
        placed.append(Label(leg, text, best[1]))
    return placed, leftover


def _candidates(line: Line, half_w: float, half_h: float) -> list[Box]:
    """Label boxes to try: beyond a dangling end first, else along the line on either side."""
    boxes = []
    if line.dangling:
        (x0, y0), (x1, y1) = line.start, line.end
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        gap = 4.0 + abs(ux) * half_w + abs(uy) * half_h
        boxes.append(Box(x1 + ux * gap, y1 + uy * gap, half_w, half_h))
    for t in (0.5, 0.38, 0.62, 0.26, 0.74, 0.16, 0.84):
        x, y = line.point(t)
        x2, y2 = line.point(min(t + 0.01, 1.0))
        nx_, ny_ = _normal(x2 - x, y2 - y)
        gap = 3.0 + abs(nx_) * half_w + abs(ny_) * half_h
        for side in (1.0, -1.0):
            boxes.append(Box(x + side * nx_ * gap, y + side * ny_ * gap, half_w, half_h))
    return boxes


def _crossing(box: Box, line: Line, samples: int = 16) -> float:
    """A penalty for a label box that sits on another leg's line."""
    hits = 0
    for s in range(1, samples):
        x, y = line.point(s / samples)
        if abs(x - box.x) < box.half_width and abs(y - box.y) < box.half_height:
            hits += 1
    return 40.0 * hits


def layout(net: "Network") -> Diagram:
    """Lay out ``net`` deterministically; see the module docstring for the conventions."""
    graph = structure(net)
    texts = {leg: leg_text(net, leg) for leg in net.all_legs}
    if not graph.keys:
        return Diagram((), (), (), _caption(net), 2 * MARGIN, 2 * MARGIN)
    unit_pos = best_layout(graph)
    bends = _bends(graph)
    index = {key: n for n, key in enumerate(graph.keys)}
    best: tuple[float, list[Node], list[Line], list[Label]] | None = None
    for attempt in range(6):
        scale = BASE_UNIT * (1.25**attempt)
        pos = _separate([[x * scale, y * scale] for x, y in unit_pos], graph)
        nodes = [
            Node(key, shape, text, Box(x, y, *_node_box(shape, text)))
            for key, shape, text, (x, y) in zip(graph.keys, graph.shapes, graph.texts, pos)
        ]
        lines = [
            Line(leg, a, b, (pos[index[a]][0], pos[index[a]][1]), (pos[index[b]][0], pos[index[b]][1]), bend)
            for (leg, a, b), bend in zip(graph.lines, bends)
        ]
        labels, leftover = _place_labels(graph, lines, nodes, texts)
        if best is None or leftover < best[0]:
            best = (leftover, nodes, lines, labels)
        if leftover == 0.0:
            break
    assert best is not None
    return _frame(best[1], best[2], best[3], _caption(net))


def layout_sum(terms: Sequence["Network"]) -> Diagram:
    """The terms of a sum of networks side by side with ``+`` between them, under one caption.

    Node keys of term ``t`` get the prefix ``"s{t}/"``.
    """
    parts = [layout(term) for term in terms]
    height = max(part.height for part in parts)
    nodes: list[Node] = []
    lines: list[Line] = []
    labels: list[Label] = []
    left = 0.0
    for number, part in enumerate(parts):
        if number:
            plus = Box(round(left + SUM_GAP / 2, 2), round(height / 2, 2), text_width("+") / 2 + 3, LINE_HEIGHT / 2)
            labels.append(Label("", "+", plus))
            left += SUM_GAP
        dx, dy, prefix = left, (height - part.height) / 2, f"s{number}/"
        nodes += [Node(prefix + n.key, n.shape, n.text, _moved(n.box, dx, dy)) for n in part.nodes]
        lines += [
            Line(l.leg, prefix + l.a, prefix + l.b, _point(l.start, dx, dy), _point(l.end, dx, dy), l.bend)
            for l in part.lines
        ]
        labels += [Label(l.leg, l.text, _moved(l.box, dx, dy)) for l in part.labels]
        left += part.width
    return Diagram(tuple(nodes), tuple(lines), tuple(labels), parts[0].caption, round(left, 2), round(height, 2))


def _moved(box: Box, dx: float, dy: float) -> Box:
    return Box(round(box.x + dx, 2), round(box.y + dy, 2), box.half_width, box.half_height)


def _point(point: tuple[float, float], dx: float, dy: float) -> tuple[float, float]:
    return round(point[0] + dx, 2), round(point[1] + dy, 2)


def _separate(pos: list[list[float]], graph: Graph, rounds: int = 50) -> list[list[float]]:
    """Push apart node boxes that overlap (a few deterministic sweeps)."""
    pos = [list(point) for point in pos]
    sizes = [_node_box(s, t) for s, t in zip(graph.shapes, graph.texts)]
    for _ in range(rounds):
        moved = False
        for i in range(len(pos)):
            for j in range(i + 1, len(pos)):
                need_x = sizes[i][0] + sizes[j][0] + 12.0
                need_y = sizes[i][1] + sizes[j][1] + 12.0
                dx, dy = pos[j][0] - pos[i][0], pos[j][1] - pos[i][1]
                if abs(dx) < need_x and abs(dy) < need_y:
                    push_x, push_y = need_x - abs(dx), need_y - abs(dy)
                    axis, push, delta = (0, push_x, dx) if push_x < push_y else (1, push_y, dy)
                    step = push / 2 * (1 if delta >= 0 else -1)
                    pos[i][axis] -= step
                    pos[j][axis] += step
                    moved = True
        if not moved:
            break
    return pos


def _caption(net: "Network") -> str:
    return f"-> ({', '.join(net.output)})"


def _frame(nodes: list[Node], lines: list[Line], labels: list[Label], caption: str) -> Diagram:
    """Shift everything so the drawing starts at the margin; size the canvas to fit the caption too."""
    boxes = [n.box for n in nodes] + [l.box for l in labels]
    points = [line.point(t / 8) for line in lines for t in range(9)]
    left = min([b.x - b.half_width for b in boxes] + [p[0] for p in points])
    top = min([b.y - b.half_height for b in boxes] + [p[1] for p in points])
    right = max([b.x + b.half_width for b in boxes] + [p[0] for p in points])
    bottom = max([b.y + b.half_height for b in boxes] + [p[1] for p in points])
    dx, dy = MARGIN - left, MARGIN - top
    moved_nodes = tuple(Node(n.key, n.shape, n.text, _moved(n.box, dx, dy)) for n in nodes)
    moved_lines = tuple(
        Line(l.leg, l.a, l.b, _point(l.start, dx, dy), _point(l.end, dx, dy), l.bend) for l in lines
    )
    moved_labels = tuple(Label(l.leg, l.text, _moved(l.box, dx, dy)) for l in labels)
    width = max(right - left, text_width(caption)) + 2 * MARGIN
    height = bottom - top + 2 * MARGIN + LINE_HEIGHT
    return Diagram(moved_nodes, moved_lines, moved_labels, caption, round(width, 2), round(height, 2))
