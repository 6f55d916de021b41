"""Node positions for a diagram: stress majorisation over several deterministic starts.

Positions approximate the graph distances of the drawing (SMACOF, started
from classical scaling, a circle and seeded random layouts); the start whose
result has the fewest crossing lines and lines passing close by nodes wins
(then the lowest stress). Hyperedge dots are then moved off lines they do not
belong to, and the drawing is rotated so its long side is horizontal with
the first tensor on the left. No randomness survives: the same network
always gives the same positions. The linear algebra runs in torch (float64,
CPU), so drawing needs no other numerical library.
"""

from __future__ import annotations

import math

import torch

from tnconv.render.structure import Graph

Point = list[float]  # [x, y] in graph units


def _distances(graph: Graph) -> torch.Tensor:
    """All-pairs shortest path lengths (Floyd-Warshall); unreachable pairs get the largest finite + 1."""
    index = {key: n for n, key in enumerate(graph.keys)}
    size = len(graph.keys)
    dist = torch.full((size, size), math.inf, dtype=torch.float64)
    dist.fill_diagonal_(0.0)
    for (_, a, b), length in zip(graph.lines, graph.lengths):
        i, j = index[a], index[b]
        if i != j:
            dist[i, j] = dist[j, i] = min(float(dist[i, j]), length)
    for k in range(size):
        dist = torch.minimum(dist, dist[:, k : k + 1] + dist[k : k + 1, :])
    finite = dist[torch.isfinite(dist)]
    dist[~torch.isfinite(dist)] = (float(finite.max()) if finite.numel() else 1.0) + 1.0
    return dist


def _stress_layout(dist: torch.Tensor, start: torch.Tensor, iterations: int = 300) -> tuple[torch.Tensor, float]:
    """SMACOF from ``start``: positions whose distances approximate ``dist``, and their stress."""
    positive = dist > 0
    weights = torch.where(positive, 1.0 / torch.where(positive, dist, 1.0) ** 2, 0.0)
    laplacian = torch.diag(weights.sum(dim=1)) - weights
    pseudo = torch.linalg.pinv(laplacian)
    pos = start.clone()
    for _ in range(iterations):
        delta = torch.cdist(pos, pos)
        apart = delta > 1e-12
        ratio = torch.where(apart, weights * dist / torch.where(apart, delta, 1.0), 0.0)
        new = pseudo @ (torch.diag(ratio.sum(dim=1)) - ratio) @ pos
        converged = float((new - pos).abs().max()) < 1e-7
        pos = new
        if converged:
            break
    delta = torch.cdist(pos, pos)
    return pos, float((weights * (delta - dist) ** 2).sum() / 2)


def _starts(dist: torch.Tensor, count: int = 8) -> list[torch.Tensor]:
    """Deterministic starting layouts: classical scaling, a circle, and seeded random ones."""
    size = dist.shape[0]
    centring = torch.eye(size, dtype=torch.float64) - 1.0 / size
    gram = -0.5 * centring @ (dist**2) @ centring
    values, vectors = torch.linalg.eigh(gram)
    top = values[-2:].flip(0)
    classical = vectors[:, -2:].flip(1) * torch.sqrt(torch.clamp(top, min=1e-9))
    steps = torch.arange(size, dtype=torch.float64)
    classical = classical + 1e-3 * torch.stack([steps, steps**2 % 7], dim=1)
    angles = 2 * math.pi * steps / size
    circle = float(dist.mean()) * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    generator = torch.Generator().manual_seed(0)
    shuffled = [
        float(dist.mean()) * torch.randn(size, 2, generator=generator, dtype=torch.float64) for _ in range(count - 2)
    ]
    return [classical, circle, *shuffled]


def _crossings(pos: list[Point], pairs: list[tuple[int, int]]) -> int:
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
            if node not in (a, b) and _foot(pos[node], pos[a], pos[b])[1] < near:
                count += 1
    return count


def _foot(p: Point, a: Point, b: Point) -> tuple[float, float]:
    """``(t, distance)``: where on segment ``a``-``b`` (``t`` in [0, 1]) ``p`` is closest, and how close."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = ((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / max(abx * abx + aby * aby, 1e-12)
    t = min(max(t, 0.0), 1.0)
    return t, math.hypot(p[0] - a[0] - t * abx, p[1] - a[1] - t * aby)


def _intersect(p: Point, q: Point, r: Point, s: Point) -> bool:
    def side(a: Point, b: Point, c: Point) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def best_layout(graph: Graph) -> list[Point]:
    """The stress layout with the fewest crossing lines (then the lowest stress) over several starts."""
    dist = _distances(graph)
    if dist.shape[0] == 1:
        return [[0.0, 0.0]]
    index = {key: n for n, key in enumerate(graph.keys)}
    pairs = [(index[a], index[b]) for _, a, b in graph.lines if a != b]
    best: tuple[int, float, list[Point]] | None = None
    for start in _starts(dist):
        pos, stress = _stress_layout(dist, start)
        points = pos.tolist()
        score = (_crossings(points, pairs), round(stress, 6))
        if best is None or score < best[:2]:
            best = (*score, points)
    assert best is not None
    return _clear_dots(best[2], graph, pairs)


def _clear_dots(pos: list[Point], graph: Graph, pairs: list[tuple[int, int]], gap: float = 0.5) -> list[Point]:
    """Move each hyperedge dot (with its dangling end) off lines it does not belong to."""
    pos = [list(point) for point in pos]
    centre = [sum(p[0] for p in pos) / len(pos), sum(p[1] for p in pos) / len(pos)]
    for dot, shape in enumerate(graph.shapes):
        if shape != "dot":
            continue
        attached = [b for a, b in pairs if a == dot] + [a for a, b in pairs if b == dot]
        ends = [n for n in attached if graph.shapes[n] == "end"]
        for _ in range(3):
            for a, b in pairs:
                if dot in (a, b) or a in ends or b in ends:
                    continue
                t, distance = _foot(pos[dot], pos[a], pos[b])
                if distance >= gap or not 0.0 < t < 1.0:
                    continue
                abx, aby = pos[b][0] - pos[a][0], pos[b][1] - pos[a][1]
                if distance < 1e-9:  # on the line: step to the side away from the middle
                    length = max(math.hypot(abx, aby), 1e-12)
                    away = [-aby / length, abx / length]
                    if away[0] * (pos[dot][0] - centre[0]) + away[1] * (pos[dot][1] - centre[1]) < 0:
                        away = [-away[0], -away[1]]
                else:
                    foot = [pos[a][0] + t * abx, pos[a][1] + t * aby]
                    away = [(pos[dot][0] - foot[0]) / distance, (pos[dot][1] - foot[1]) / distance]
                for moved in (dot, *ends):
                    pos[moved][0] += away[0] * (gap - distance)
                    pos[moved][1] += away[1] * (gap - distance)
    return pos


def orient(pos: list[Point], tensors: int) -> list[Point]:
    """Rotate the long side horizontal; put the first tensor left and above the middle."""
    points = torch.tensor(pos, dtype=torch.float64)
    points = points - points.mean(dim=0)
    if len(points) > 1:
        _, _, axes = torch.linalg.svd(points, full_matrices=False)
        points = points @ axes.T
    if tensors and points[0, 0] > 0:
        points[:, 0] = -points[:, 0]
    if tensors and points[0, 1] > 0:
        points[:, 1] = -points[:, 1]
    return points.tolist()
