"""Node positions for a diagram: stress majorisation over several deterministic starts.

Positions approximate the graph distances of the drawing (SMACOF, started
from classical scaling, a circle and seeded random layouts); the start whose
result is rotated so its long side is horizontal with the first tensor on
the left. Conv networks also get layered candidates in the paper's columns
(inputs left, index patterns middle, kernels right). The candidate with the
fewest crossing lines wins, then the fewest lines passing close by nodes,
then the lowest stress; of equally good ones (mirror images, images under
the graph's symmetries) a canonical one is taken. Hyperedge dots are then
moved off lines they do not belong to. No randomness survives: the same network
always gives the same positions. The linear algebra runs in torch (float64,
CPU), so drawing needs no other numerical library.
"""

from __future__ import annotations

import itertools
import math

import torch

from tnconv.render.geometry import foot, intersect
from tnconv.render.structure import Graph
from tnconv.render.symmetry import automorphisms

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


THROUGH = 0.2  # graph units: a line this close to a node not its own runs through it


def _crossings(
    pos: list[Point], pairs: list[tuple[int, int]], movable: frozenset[int] = frozenset()
) -> tuple[int, int]:
    """Lines that cross (sharing an end does not count) or run through a node, then lines passing close by one.

    "Close" grows with the number of lines between the same two nodes, since
    they are drawn fanned out as curves. Nodes in ``movable`` (dots and their
    ends, which ``_clear_dots`` moves off lines) do not count as run through.
    """
    fan = {pair: sum(1 for other in pairs if {*other} == {*pair}) for pair in pairs}
    crossing = near_misses = 0
    for n, (a, b) in enumerate(pairs):
        for c, d in pairs[n + 1 :]:
            if len({a, b, c, d}) == 4 and intersect(pos[a], pos[b], pos[c], pos[d]):
                crossing += 1
        near = 0.5 + 0.2 * (fan[(a, b)] - 1)
        for node in range(len(pos)):
            if node in (a, b):
                continue
            distance = foot(pos[node], pos[a], pos[b])[1]
            crossing += distance < THROUGH and node not in movable  # as bad as a crossing
            near_misses += distance < near
    return crossing, near_misses


def best_layout(graph: Graph) -> list[Point]:
    """The candidate layout with the fewest crossing lines (then the lowest stress), oriented.

    Candidates are stress layouts from several starts (rotated so the long
    side is horizontal) and, for conv networks, layered layouts in the
    paper's columns (see ``_layered``); ties go to a canonical one (see ``_choose``).
    """
    dist = _distances(graph)
    if dist.shape[0] == 1:
        return [[0.0, 0.0]]
    index = {key: n for n, key in enumerate(graph.keys)}
    pairs = [(index[a], index[b]) for _, a, b in graph.lines if a != b]
    tensors = sum(1 for key in graph.keys if key.startswith("t"))
    candidates = [_stress_layout(dist, start) for start in _starts(dist)]
    oriented: list[tuple[list[Point], float, Flips]] = [
        (orient(pos.tolist(), tensors), stress, ANY_MIRROR) for pos, stress in candidates
    ]
    oriented += [(pos.tolist(), _stress(dist, pos), UPSIDE_DOWN) for pos in _layered(graph)]
    dots = {n for n, shape in enumerate(graph.shapes) if shape == "dot"}
    movable = frozenset(dots | {b for a, b in pairs if a in dots and graph.shapes[b] == "end"})
    scored = [(_crossings(points, pairs, movable), stress, points, flips) for points, stress, flips in oriented]
    return _clear_dots(_choose(scored, automorphisms(graph)), graph, pairs)


STRESS_TIE = 1e-6  # relative: stresses this close are equal (equivalent layouts differ by rounding alone)
POSITION_TIE = 1e-3  # graph units: coordinates this close are equal
Flips = tuple[tuple[float, float], ...]  # (x, y) signs of the mirror images a candidate may take
ANY_MIRROR: Flips = ((1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0))  # a stress layout, either way
UPSIDE_DOWN: Flips = ((1.0, 1.0), (1.0, -1.0))  # a layered one keeps its inputs left
Scored = tuple[tuple[int, int], float, list[Point], Flips]


def _choose(scored: list[Scored], symmetries: list[list[int]]) -> list[Point]:
    """The layout with the fewest crossings, then near misses, then the lowest stress, made canonical.

    Mirror images and the images under the graph's ``symmetries`` (see
    ``tnconv.render.symmetry``) of the winners are exactly as good; which of
    them the placement found first depends on its starts and on the last bits
    of its linear algebra. Of all winners (stresses equal but for rounding)
    and their images, the one that puts the first node that differs highest,
    then leftmost (``Pi1`` above ``Pi2``, the first tensor top left), is
    taken, so the same network gets the same picture on every machine.
    """
    fewest = min(crossings for crossings, _, _, _ in scored)
    tied = [(stress, points, flips) for crossings, stress, points, flips in scored if crossings == fewest]
    lowest = min(stress for stress, _, _ in tied)
    best: list[Point] | None = None
    for stress, points, flips in tied:
        if stress > lowest + STRESS_TIE * max(1.0, lowest):
            continue
        for image in _images(points, flips, symmetries):
            if best is None or _reads_before(image, best):
                best = image
    assert best is not None
    return best


def _images(points: list[Point], flips: Flips, symmetries: list[list[int]]) -> list[list[Point]]:
    """``points`` centred, mirrored by each of ``flips`` and permuted by each symmetry."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    images = []
    for sx, sy in flips:
        mirrored = [[sx * (x - mean_x), sy * (y - mean_y)] for x, y in points]
        for permutation in symmetries:
            image: list[Point] = [[0.0, 0.0] for _ in points]
            for node, target in enumerate(permutation):
                image[target] = mirrored[node]
            images.append(image)
    return images


def _reads_before(a: list[Point], b: list[Point]) -> bool:
    """Whether layout ``a`` puts the first node that sits differently higher (then further left) than ``b``."""
    for (ax, ay), (bx, by) in zip(a, b):
        for mine, theirs in ((ay, by), (ax, bx)):
            if abs(mine - theirs) > POSITION_TIE:
                return mine < theirs
    return False


def _stress(dist: torch.Tensor, pos: torch.Tensor) -> float:
    """How far the distances of ``pos`` are from the graph distances (weighted as in SMACOF)."""
    positive = dist > 0
    weights = torch.where(positive, 1.0 / torch.where(positive, dist, 1.0) ** 2, 0.0)
    return float((weights * (torch.cdist(pos, pos) - dist) ** 2).sum() / 2)


COLUMN_GAP = 1.4  # graph units between the columns of a layered layout
ROW_GAP = 1.3  # graph units between the nodes of one column


def _layered(graph: Graph, limit: int = 6) -> list[torch.Tensor]:
    """Layered layouts of a conv network: inputs left, index patterns in a middle column, kernels right.

    Tensors go to their columns (``graph.columns``); a dot or a tensor without
    a column goes to the column nearest the mean of its neighbours' columns.
    The middle column is tried in several orders (up to ``limit``, mirror
    images skipped) and the side columns level with it or half a row or a row
    above or below (so lines between the sides can pass between two
    patterns). Dangling ends point away from their node's neighbours.
    Networks without index patterns get no layered layouts.
    """
    if not any(column == 0 for column in graph.columns):
        return []
    size = len(graph.keys)
    index = {key: n for n, key in enumerate(graph.keys)}
    neighbours: list[list[int]] = [[] for _ in range(size)]
    for _, a, b in graph.lines:
        neighbours[index[a]].append(index[b])
        neighbours[index[b]].append(index[a])
    column: list[int | None] = [*graph.columns, *[None] * (size - len(graph.columns))]
    for n in range(size):
        known = [column[m] for m in neighbours[n] if column[m] is not None]
        if column[n] is None and graph.shapes[n] != "end":
            column[n] = max(-1, min(1, round(sum(known) / len(known)))) if known else 0  # type: ignore[arg-type]
    members = {c: [n for n in range(size) if column[n] == c] for c in (-1, 0, 1)}
    unmirrored = (order for order in itertools.permutations(members[0]) if order <= order[::-1])
    orders = list(itertools.islice(unmirrored, limit))
    layouts = []
    for order in orders:
        for shift in (0.0, 0.5, -0.5, 1.0, -1.0):
            pos = torch.zeros(size, 2, dtype=torch.float64)
            for c, nodes in ((-1, members[-1]), (0, list(order)), (1, members[1])):
                offset = shift * ROW_GAP if c else 0.0
                for rank, n in enumerate(nodes):
                    pos[n, 0] = c * COLUMN_GAP
                    pos[n, 1] = (rank - (len(nodes) - 1) / 2) * ROW_GAP + offset
            for n in range(size):
                if graph.shapes[n] == "end":
                    owner = neighbours[n][0]
                    pos[n] = pos[owner] + END_LENGTH * _outward(pos, owner, neighbours[owner], column[owner])
            layouts.append(pos)
    return layouts


END_LENGTH = 0.8  # graph units of a dangling leg in a layered layout


def _outward(pos: torch.Tensor, node: int, neighbours: list[int], column: int | None) -> torch.Tensor:
    """A unit direction for a dangling leg: away from the node's other neighbours (sideways on a side column)."""
    away = pos[node] - pos[neighbours].mean(dim=0) if neighbours else torch.zeros(2, dtype=torch.float64)
    if column:
        away = torch.stack([torch.tensor(float(column), dtype=torch.float64), 0.5 * torch.sign(away[1])])
    elif float(away.norm()) < 1e-9:
        away = torch.tensor([0.0, 1.0 if float(pos[node, 1]) >= 0 else -1.0], dtype=torch.float64)
    return away / away.norm()


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
                t, distance = foot(pos[dot], pos[a], pos[b])
                if distance >= gap or not 0.0 < t < 1.0:
                    continue
                abx, aby = pos[b][0] - pos[a][0], pos[b][1] - pos[a][1]
                if distance < 1e-9:  # on the line: step to the side away from the middle
                    length = max(math.hypot(abx, aby), 1e-12)
                    away = [-aby / length, abx / length]
                    if away[0] * (pos[dot][0] - centre[0]) + away[1] * (pos[dot][1] - centre[1]) < 0:
                        away = [-away[0], -away[1]]
                else:
                    nearest = [pos[a][0] + t * abx, pos[a][1] + t * aby]
                    away = [(pos[dot][0] - nearest[0]) / distance, (pos[dot][1] - nearest[1]) / distance]
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
