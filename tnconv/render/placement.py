"""Node positions for a diagram: stress majorisation over several deterministic starts.

Positions approximate the graph distances of the drawing (SMACOF, started
from classical scaling, a circle and seeded random layouts); the start whose
result has the fewest crossing lines and lines passing close by nodes wins
(then the lowest stress). Hyperedge dots are then moved off lines they do not
belong to, and the drawing is rotated so its long side is horizontal with
the first tensor on the left. No randomness survives: the same network
always gives the same positions.
"""

from __future__ import annotations

import numpy as np

from tnconv.render.structure import Graph


def _distances(graph: Graph) -> np.ndarray:
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


def best_layout(graph: Graph) -> np.ndarray:
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


def _clear_dots(pos: np.ndarray, graph: Graph, pairs: list[tuple[int, int]], gap: float = 0.5) -> np.ndarray:
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


def orient(pos: np.ndarray, tensors: int) -> np.ndarray:
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
