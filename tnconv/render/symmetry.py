"""Symmetries of a drawing: the node permutations that leave its layout problem unchanged.

The placement sees only the drawing's graph (node shapes, the paper's
columns, lines and their preferred lengths), not the texts inside the nodes.
A permutation of the nodes that keeps all of these (an automorphism, such as
swapping ``Pi1`` with ``Pi2`` together with their legs) turns every layout
into one exactly as good. Which of those equals the placement finds first
depends on its starting points and on the last bits of its linear algebra,
which differ between machines; choosing among all images (see
``tnconv.render.placement``) gives every machine the same picture.
"""

from __future__ import annotations

import itertools

import networkx as nx
from networkx.algorithms.isomorphism import GraphMatcher

from tnconv.render.structure import Graph

MAX_AUTOMORPHISMS = 48  # enough for the symmetric conv networks; a star of equal legs would have n! of them


def automorphisms(graph: Graph, limit: int = MAX_AUTOMORPHISMS) -> list[list[int]]:
    """Up to ``limit`` permutations ``p`` (node ``n`` -> node ``p[n]``) that keep ``graph``'s layout problem.

    The identity comes first; the rest follow the (deterministic) order of
    networkx's VF2 matcher.
    """
    index = {key: n for n, key in enumerate(graph.keys)}
    columns = [*graph.columns, *[None] * (len(graph.keys) - len(graph.columns))]
    simple = nx.Graph()
    for n, shape in enumerate(graph.shapes):
        simple.add_node(n, kind=(shape, columns[n]))
    for (_, a, b), length in zip(graph.lines, graph.lengths):
        i, j = index[a], index[b]
        lengths = simple.edges[i, j]["lengths"] if simple.has_edge(i, j) else ()
        simple.add_edge(i, j, lengths=tuple(sorted((*lengths, length))))
    matcher = GraphMatcher(
        simple, simple,
        node_match=lambda u, v: u["kind"] == v["kind"],
        edge_match=lambda u, v: u["lengths"] == v["lengths"],
    )
    identity = list(range(len(graph.keys)))
    found = [identity]
    for mapping in itertools.islice(matcher.isomorphisms_iter(), limit):
        permutation = [mapping[n] for n in identity]
        if permutation != identity:
            found.append(permutation)
    return found[:limit]
