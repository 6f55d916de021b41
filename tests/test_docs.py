"""The documentation site builds with ``mkdocs build --strict`` (every page, link and API docstring resolves)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from svg_structure import svg_structure

import tnconv
from tnconv.render.draw import to_svg
from tnconv.render.layout import layout
from tnconv.render.svg import to_svg_text

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strictly(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    concepts = (tmp_path / "site" / "concepts" / "index.html").read_text()
    for diagram in ("conv2d-forward.svg", "conv2d-weight-vjp.svg", "conv2d-kfac-reduce.svg"):
        assert diagram in concepts
        assert (tmp_path / "site" / "diagrams" / diagram).exists()


def _drawn_diagrams():
    """``{name: network}`` of the diagrams ``docs/make_diagrams.py`` draws."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_diagrams
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return {
        name: tnconv.conv_network(op, **layer, simplify=simplify)
        for name, (op, layer, simplify) in make_diagrams.DIAGRAMS.items()
    }


def test_checked_in_diagrams_are_current():
    """docs/diagrams/*.svg show what ``python docs/make_diagrams.py`` draws today: the same nodes,
    lines, labels and caption, each item left/right of and above/below the same others (coordinates
    may differ in their last digits between machines, see ``svg_structure``)."""
    for name, net in _drawn_diagrams().items():
        current = svg_structure((ROOT / "docs" / "diagrams" / f"{name}.svg").read_text(encoding="utf-8"))
        drawn = svg_structure(to_svg(net))
        for part in ("items", "lines", "caption", "relations"):
            assert current[part] == drawn[part], f"{name}.svg is stale ({part}): run python docs/make_diagrams.py"


def test_the_diagram_check_sees_moves_and_other_networks():
    """The structure compared above changes when nodes trade places or the network changes, and
    not when coordinates move by less than a pixel."""
    net = _drawn_diagrams()["conv2d-kfac-reduce"]
    drawing = layout(net)
    structure = svg_structure(to_svg_text(drawing))
    assert svg_structure(to_svg_text(_moved(drawing, lambda n, x, y: (x + 0.01 * (n % 3), y - 0.02 * (n % 2))))) == structure
    flipped = svg_structure(to_svg_text(_moved(drawing, lambda n, x, y: (x, drawing.height - y))))
    assert flipped["relations"] != structure["relations"]
    other = tnconv.conv_network("kfac_reduce", (8, 64, 28, 28), 3, padding=1, simplify=True)
    assert svg_structure(to_svg(other)) != structure


def _moved(drawing, move):
    """``drawing`` with node ``n`` (and the ends of its lines) and label ``n`` moved to ``move(n, x, y)``."""
    nodes = [replace(node, box=replace(node.box, **dict(zip("xy", move(n, node.box.x, node.box.y)))))
             for n, node in enumerate(drawing.nodes)]
    at = {node.key: (node.box.x, node.box.y) for node in nodes}
    lines = [replace(line, start=at[line.a], end=at[line.b]) for line in drawing.lines]
    labels = [replace(label, box=replace(label.box, **dict(zip("xy", move(n, label.box.x, label.box.y)))))
              for n, label in enumerate(drawing.labels)]
    return replace(drawing, nodes=tuple(nodes), lines=tuple(lines), labels=tuple(labels))
