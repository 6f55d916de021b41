"""Deterministic diagram layout: a network -> positioned nodes, legs and labels.

The drawing follows the tensor-network diagrams of the paper: every tensor is
a labelled node; a leg shared by exactly two tensors is a line between them;
an open (output) leg on one tensor dangles from it; every other leg (on three
or more tensors, on two tensors and the output, on one tensor only and summed,
or twice on one tensor) is a hyperedge whose lines meet at a dot.

Placement is stress majorisation (SMACOF) started from classical scaling, so
the same network always gives the same picture: no random seeds. The drawing
is then rotated so that its long side is horizontal and the first tensor is on
the left. Leg labels are placed greedily at the first candidate position along
their line that overlaps no node and no earlier label; if some label cannot be
placed freely the whole drawing is spread out and placed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tnconv.ir.sizes import leg_symbol
from tnconv.ir.tensors import Data, Identity, IndexPattern, Ones, PatternSum

if TYPE_CHECKING:
    from tnconv.ir.network import Network

FONT_SIZE = 13.0
CHAR_WIDTH = 0.6 * FONT_SIZE  # monospace advance width
LINE_HEIGHT = 1.3 * FONT_SIZE
DOT_RADIUS = 4.5
MARGIN = 24.0
BASE_UNIT = 95.0  # pixels per unit of graph distance before spreading


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


def leg_text(net: "Network", leg: str) -> str:
    """``leg=size``, or the leg alone when its size is its own unknown symbol."""
    size = net.size(leg)
    if size == leg_symbol(leg):
        return leg
    return f"{leg}={size}".replace(" ", "")


def node_shape(kind: object) -> str:
    """The drawn shape of a tensor kind."""
    if isinstance(kind, IndexPattern):
        return "pattern"
    if isinstance(kind, PatternSum):
        return "pattern_sum"
    if isinstance(kind, Identity):
        return "identity"
    if isinstance(kind, Ones):
        return "ones"
    if isinstance(kind, Data):
        return "data"
    return "data"


def tensor_text(entry: object) -> str:
    """The text inside a tensor's node."""
    kind = entry.kind  # type: ignore[attr-defined]
    if isinstance(kind, Identity):
        return "δ"
    if isinstance(kind, Ones):
        return "1"
    if isinstance(kind, PatternSum):
        return f"Σ{entry.name}"  # type: ignore[attr-defined]
    return entry.name  # type: ignore[attr-defined]


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


@dataclass(frozen=True)
class _Graph:
    """The abstract drawing: node keys with shapes and texts, and one entry per line."""

    keys: tuple[str, ...]
    shapes: tuple[str, ...]
    texts: tuple[str, ...]
    lines: tuple[tuple[str, str, str], ...]  # (leg, a, b)
    lengths: tuple[float, ...]  # preferred length of each line, in graph units
    labelled: tuple[tuple[str, int], ...]  # (leg, index of the line that carries its label)


def structure(net: "Network") -> _Graph:
    """Decide which legs are plain lines, dangling legs or hyperedges with a dot."""
    keys = [f"t{p}" for p in range(len(net.entries))]
    shapes = [node_shape(e.kind) for e in net.entries]
    texts = [tensor_text(e) for e in net.entries]
    lines: list[tuple[str, str, str]] = []
    lengths: list[float] = []
    labelled: list[tuple[str, int]] = []
    for leg in net.all_legs:
        slots = [f"t{p}" for p, e in enumerate(net.entries) for l in e.legs if l == leg]
        is_output = leg in net.output
        if is_output and len(slots) == 1:
            keys.append(f"end:{leg}")
            shapes.append("end")
            texts.append("")
            labelled.append((leg, len(lines)))
            lines.append((leg, slots[0], f"end:{leg}"))
            lengths.append(0.8)
        elif not is_output and len(slots) == 2 and slots[0] != slots[1]:
            labelled.append((leg, len(lines)))
            lines.append((leg, slots[0], slots[1]))
            both_data = all(shapes[keys.index(s)] == "data" for s in slots)
            lengths.append(2.1 if both_data else 1.3)
        else:
            dot = f"dot:{leg}"
            keys.append(dot)
            shapes.append("dot")
            texts.append("")
            first = len(lines)
            for slot in slots:
                lines.append((leg, slot, dot))
                lengths.append(1.25)
            labelled.append((leg, first))
            if is_output:
                keys.append(f"end:{leg}")
                shapes.append("end")
                texts.append("")
                labelled[-1] = (leg, len(lines))
                lines.append((leg, dot, f"end:{leg}"))
                lengths.append(0.7)
    return _Graph(tuple(keys), tuple(shapes), tuple(texts), tuple(lines), tuple(lengths), tuple(labelled))


def _distances(graph: _Graph) -> np.ndarray:
    """All-pairs shortest path lengths (Floyd-Warshall); unreachable pairs get the largest finite + 1."""
    index = {key: n for n, key in enumerate(graph.keys)}
    size = len(graph.keys)
    dist = np.full((size, size), np.inf)
    np.fill_diagonal(dist, 0.0)
    for (_, a, b), length in zip(graph.lines, graph.lengths):
        i, j = index[a], index[b]
        if i != j:
            dist[i, j] = dist[j, i] = min(dist[i, j], length)
    for k in range(size):
        dist = np.minimum(dist, dist[:, k : k + 1] + dist[k : k + 1, :])
    finite = dist[np.isfinite(dist)]
    dist[~np.isfinite(dist)] = (finite.max() if finite.size else 1.0) + 1.0
    return dist


def _stress_layout(dist: np.ndarray, start: np.ndarray, iterations: int = 300) -> tuple[np.ndarray, float]:
    """SMACOF from ``start``: positions whose distances approximate ``dist``, and their stress."""
    size = dist.shape[0]
    pos = start.copy()
    weights = np.zeros_like(dist)
    np.divide(1.0, dist**2, out=weights, where=dist > 0)
    laplacian = -weights
    np.fill_diagonal(laplacian, weights.sum(axis=1))
    pseudo = np.linalg.pinv(laplacian)
    for _ in range(iterations):
        delta = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
        ratio = np.zeros_like(dist)
        np.divide(weights * dist, delta, out=ratio, where=delta > 1e-12)
        b = -ratio
        np.fill_diagonal(b, ratio.sum(axis=1))
        new = pseudo @ b @ pos
        converged = np.abs(new - pos).max() < 1e-7
        pos = new
        if converged:
            break
    delta = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=2)
    return pos, float((weights * (delta - dist) ** 2).sum() / 2)


def _starts(dist: np.ndarray, count: int = 8) -> list[np.ndarray]:
    """Deterministic starting layouts: classical scaling, a circle, and seeded random ones."""
    size = dist.shape[0]
    centring = np.eye(size) - 1.0 / size
    gram = -0.5 * centring @ (dist**2) @ centring
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:2]
    classical = vectors[:, order] * np.sqrt(np.maximum(values[order], 1e-9))
    classical = classical + 1e-3 * np.stack([np.arange(size), np.arange(size) ** 2 % 7], axis=1)
    angles = 2 * np.pi * np.arange(size) / size
    circle = dist.mean() * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    generator = np.random.default_rng(0)
    shuffled = [generator.normal(scale=dist.mean(), size=(size, 2)) for _ in range(count - 2)]
    return [classical, circle, *shuffled]


def _crossings(pos: np.ndarray, pairs: list[tuple[int, int]]) -> int:
    """Lines that cross (sharing an end does not count) plus lines that pass close by a node.

    "Close" grows with the number of lines between the same two nodes, since
    they are drawn fanned out as curves.
    """
    fan = {pair: sum(1 for other in pairs if {*other} == {*pair}) for pair in pairs}
    count = 0
    for n, (a, b) in enumerate(pairs):
        for c, d in pairs[n + 1 :]:
            if len({a, b, c, d}) == 4 and _intersect(pos[a], pos[b], pos[c], pos[d]):
                count += 1
        near = 0.5 + 0.2 * (fan[(a, b)] - 1)
        for node in range(len(pos)):
            if node not in (a, b) and _segment_distance(pos[node], pos[a], pos[b]) < near:
                count += 1
    return count


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from point ``p`` to the segment ``a``-``b``."""
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _intersect(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> bool:
    def side(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def _best_layout(graph: "_Graph") -> np.ndarray:
    """The stress layout with the fewest crossing lines (then the lowest stress) over several starts."""
    dist = _distances(graph)
    if dist.shape[0] == 1:
        return np.zeros((1, 2))
    index = {key: n for n, key in enumerate(graph.keys)}
    pairs = [(index[a], index[b]) for _, a, b in graph.lines if a != b]
    best: tuple[int, float, np.ndarray] | None = None
    for start in _starts(dist):
        pos, stress = _stress_layout(dist, start)
        score = (_crossings(pos, pairs), round(stress, 6))
        if best is None or score < best[:2]:
            best = (*score, pos)
    assert best is not None
    return _clear_dots(best[2], graph, pairs)


def _clear_dots(pos: np.ndarray, graph: "_Graph", pairs: list[tuple[int, int]], gap: float = 0.5) -> np.ndarray:
    """Move each hyperedge dot (with its dangling end) off lines it does not belong to."""
    pos = pos.copy()
    centre = pos.mean(axis=0)
    for dot, shape in enumerate(graph.shapes):
        if shape != "dot":
            continue
        attached = [b for a, b in pairs if a == dot] + [a for a, b in pairs if b == dot]
        ends = [n for n in attached if graph.shapes[n] == "end"]
        for _ in range(3):
            for a, b in pairs:
                if dot in (a, b) or a in ends or b in ends:
                    continue
                ab = pos[b] - pos[a]
                t = float(np.clip(np.dot(pos[dot] - pos[a], ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
                foot = pos[a] + t * ab
                away = pos[dot] - foot
                distance = float(np.linalg.norm(away))
                if distance >= gap or not 0.0 < t < 1.0:
                    continue
                if distance < 1e-9:
                    normal = np.array([-ab[1], ab[0]]) / max(float(np.linalg.norm(ab)), 1e-12)
                    away = normal if np.dot(normal, pos[dot] - centre) >= 0 else -normal
                    distance = 0.0
                else:
                    away = away / distance
                shift = away * (gap - distance)
                pos[dot] += shift
                for end in ends:
                    pos[end] += shift
    return pos


def _orient(pos: np.ndarray, tensors: int) -> np.ndarray:
    """Rotate the long side horizontal; put the first tensor left and above the middle."""
    pos = pos - pos.mean(axis=0)
    if len(pos) > 1:
        _, _, axes = np.linalg.svd(pos, full_matrices=False)
        pos = pos @ axes.T
    if tensors and pos[0, 0] > 0:
        pos[:, 0] = -pos[:, 0]
    if tensors and pos[0, 1] > 0:
        pos[:, 1] = -pos[:, 1]
    return pos


def _normal(dx: float, dy: float) -> tuple[float, float]:
    length = float(np.hypot(dx, dy)) or 1.0
    return -dy / length, dx / length


def _bends(graph: _Graph) -> list[float]:
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
    graph: _Graph, lines: list[Line], nodes: list[Node], texts: dict[str, str]
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
    if line.b.startswith("end:"):
        (x0, y0), (x1, y1) = line.start, line.end
        length = float(np.hypot(x1 - x0, y1 - y0)) or 1.0
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
    unit_pos = _orient(_best_layout(graph), len(net.entries))
    bends = _bends(graph)
    index = {key: n for n, key in enumerate(graph.keys)}
    best: tuple[float, list[Node], list[Line], list[Label]] | None = None
    for attempt in range(6):
        scale = BASE_UNIT * (1.25**attempt)
        pos = _separate(unit_pos * scale, graph)
        nodes = [
            Node(key, shape, text, Box(float(x), float(y), *_node_box(shape, text)))
            for key, shape, text, (x, y) in zip(graph.keys, graph.shapes, graph.texts, pos)
        ]
        lines = [
            Line(leg, a, b, _xy(pos[index[a]]), _xy(pos[index[b]]), bend)
            for (leg, a, b), bend in zip(graph.lines, bends)
        ]
        labels, leftover = _place_labels(graph, lines, nodes, texts)
        if best is None or leftover < best[0]:
            best = (leftover, nodes, lines, labels)
        if leftover == 0.0:
            break
    assert best is not None
    return _frame(best[1], best[2], best[3], _caption(net))


def _separate(pos: np.ndarray, graph: _Graph, rounds: int = 50) -> np.ndarray:
    """Push apart node boxes that overlap (a few deterministic sweeps)."""
    pos = pos.copy()
    sizes = [_node_box(s, t) for s, t in zip(graph.shapes, graph.texts)]
    for _ in range(rounds):
        moved = False
        for i in range(len(pos)):
            for j in range(i + 1, len(pos)):
                need_x = sizes[i][0] + sizes[j][0] + 12.0
                need_y = sizes[i][1] + sizes[j][1] + 12.0
                dx, dy = pos[j] - pos[i]
                if abs(dx) < need_x and abs(dy) < need_y:
                    push_x, push_y = need_x - abs(dx), need_y - abs(dy)
                    if push_x < push_y:
                        step = np.array([push_x / 2 * (1 if dx >= 0 else -1), 0.0])
                    else:
                        step = np.array([0.0, push_y / 2 * (1 if dy >= 0 else -1)])
                    pos[i] -= step
                    pos[j] += step
                    moved = True
        if not moved:
            break
    return pos


def _xy(point: np.ndarray) -> tuple[float, float]:
    return float(point[0]), float(point[1])


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

    def shift(box: Box) -> Box:
        return Box(round(box.x + dx, 2), round(box.y + dy, 2), box.half_width, box.half_height)

    def move(point: tuple[float, float]) -> tuple[float, float]:
        return round(point[0] + dx, 2), round(point[1] + dy, 2)

    moved_nodes = tuple(Node(n.key, n.shape, n.text, shift(n.box)) for n in nodes)
    moved_lines = tuple(Line(l.leg, l.a, l.b, move(l.start), move(l.end), l.bend) for l in lines)
    moved_labels = tuple(Label(l.leg, l.text, shift(l.box)) for l in labels)
    width = max(right - left, text_width(caption)) + 2 * MARGIN
    height = bottom - top + 2 * MARGIN + LINE_HEIGHT
    return Diagram(moved_nodes, moved_lines, moved_labels, caption, round(width, 2), round(height, 2))
