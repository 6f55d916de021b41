"""A network -> Graphviz DOT text (for ``dot -Tsvg``), with the same conventions as the drawings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tnconv.render.structure import leg_text, structure, terms_of
from tnconv.render.style import FILLS, INK, OPEN_LEG

if TYPE_CHECKING:
    from tnconv.ir.network import Network
    from tnconv.ir.networksum import NetworkSum

_SHAPES = {
    "data": "box",
    "pattern": "ellipse",
    "pattern_sum": "ellipse",
    "identity": "circle",
    "ones": "circle",
}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(net: "Network | NetworkSum") -> str:
    """The Graphviz DOT source of ``net``'s diagram (an undirected graph; ``dot -Tsvg`` or ``neato``).

    Tensors are nodes (data: boxes, index patterns: orange ellipses), hyperedges
    are point nodes, open legs end at invisible points; every line carries its
    leg label ``leg=size``. The terms of a ``NetworkSum`` are clusters.
    """
    terms, output = terms_of(net)
    lines = [
        "graph tnconv {",
        '  graph [layout=neato, overlap=false, splines=true, sep="+12"];',
        '  node [fontname="monospace", style=filled];',
        '  edge [fontname="monospace", fontsize=11];',
    ]
    for number, term in enumerate(terms):
        prefix = f"s{number}/" if len(terms) > 1 else ""
        body = _term(term, prefix)
        if len(terms) > 1:
            body = [f"  subgraph cluster_{number} {{", f'    label="term {number}";'] + ["  " + b for b in body] + ["  }"]
        lines.extend(body)
    lines.append(f"  label={_quote('-> (' + ', '.join(output) + ')')};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _term(net: "Network", prefix: str) -> list[str]:
    """The node and edge statements of one network, node names prefixed."""
    graph = structure(net)
    lines = []
    for key, shape, text in zip(graph.keys, graph.shapes, graph.texts):
        name = _quote(prefix + key)
        if shape == "end":
            lines.append(f"  {name} [shape=point, width=0.01, style=invis];")
        elif shape == "dot":
            lines.append(f"  {name} [shape=point, width=0.1, color={_quote(INK)}];")
        else:
            fill, stroke, dashed = FILLS[shape]
            style = "filled,dashed" if dashed else "filled"
            lines.append(
                f"  {name} [label={_quote(text)}, shape={_SHAPES[shape]}, fillcolor={_quote(fill)}, "
                f"color={_quote(stroke)}, style={_quote(style)}];"
            )
    labelled = {index for _, index in graph.labelled}
    for index, (leg, a, b) in enumerate(graph.lines):
        attributes = []
        if index in labelled:
            attributes.append(f"label={_quote(leg_text(net, leg))}")
        if b.startswith("end:"):
            attributes.append(f"color={_quote(OPEN_LEG)}, fontcolor={_quote(OPEN_LEG)}")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"  {_quote(prefix + a)} -- {_quote(prefix + b)}{suffix};")
    return lines
