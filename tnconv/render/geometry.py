"""Plane geometry for diagrams: segment intersection, nearest points, and crossings of drawn lines.

Used while placing nodes (to prefer drawings without crossing lines) and to
measure a finished drawing: two lines cross when their curves intersect
anywhere but at a node they share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from tnconv.render.layout import Diagram, Line

Point = Sequence[float]  # (x, y)


def foot(p: Point, a: Point, b: Point) -> tuple[float, float]:
    """``(t, distance)``: where on segment ``a``-``b`` (``t`` in [0, 1]) ``p`` is closest, and how close."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = ((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / max(abx * abx + aby * aby, 1e-12)
    t = min(max(t, 0.0), 1.0)
    return t, math.hypot(p[0] - a[0] - t * abx, p[1] - a[1] - t * aby)


def intersect(p: Point, q: Point, r: Point, s: Point) -> bool:
    """Whether segments ``p``-``q`` and ``r``-``s`` cross properly (touching at an end does not count)."""

    def side(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def polyline(line: "Line", samples: int = 24) -> list[tuple[float, float]]:
    """The drawn curve of ``line`` as ``samples`` straight pieces (one piece when it is straight)."""
    if line.bend == 0.0:
        return [line.start, line.end]
    return [line.point(s / samples) for s in range(samples + 1)]


def crossings(diagram: "Diagram") -> int:
    """The number of pairs of drawn lines that cross (lines meeting at a shared node do not count)."""
    curves = [polyline(line) for line in diagram.lines]
    count = 0
    for n, (line, curve) in enumerate(zip(diagram.lines, curves)):
        for other, other_curve in zip(diagram.lines[n + 1 :], curves[n + 1 :]):
            if _curves_cross(curve, other_curve):
                count += 1
    return count


def _curves_cross(first: list[tuple[float, float]], second: list[tuple[float, float]]) -> bool:
    for p, q in zip(first, first[1:]):
        for r, s in zip(second, second[1:]):
            if intersect(p, q, r, s):
                return True
    return False
