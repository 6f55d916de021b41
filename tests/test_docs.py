"""The documentation: the site builds with ``mkdocs build --strict`` (every page, link and API
docstring resolves), typesets its math, documents every public module and name, and no page or
docstring points at a file that does not exist; the checked-in diagrams are current."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from svg_structure import svg_structure

import tnconv
from tnconv.render.draw import to_svg
from tnconv.render.layout import layout
from tnconv.render.svg import to_svg_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site (built once for the tests of this file)."""
    folder = tmp_path_factory.mktemp("docs") / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder


def test_mkdocs_builds_strictly(site):
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    for diagram in ("conv2d-forward.svg", "conv2d-weight-vjp.svg", "conv2d-kfac-reduce.svg"):
        assert diagram in concepts
        assert (site / "diagrams" / diagram).exists()


def test_pages_with_math_load_mathjax(site):
    """arithmatex (generic) only marks the math up; each page with math must load MathJax and its
    configuration, or the home page shows raw TeX."""
    scripts = re.compile(r'<script src="([^"]+)"')
    pages = [page for page in site.glob("**/*.html") if 'class="arithmatex"' in page.read_text(encoding="utf-8")]
    assert site / "index.html" in pages
    for page in pages:
        sources = scripts.findall(page.read_text(encoding="utf-8"))
        assert any(source.endswith("javascripts/mathjax.js") for source in sources), page
        assert any(re.search(r"mathjax@3/es5/tex-[\w-]+\.js$", source) for source in sources), page
    assert "processHtmlClass" in (site / "javascripts" / "mathjax.js").read_text(encoding="utf-8")


def api_directives() -> list[tuple[str, list[str] | None]]:
    """``(target, members or None)`` of every ``::: target`` directive of docs/api/*.md."""
    found = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^::: ([\w.]+)\n((?:[ \t]+.*\n?)*)", text, re.MULTILINE):
            members = re.search(r"members: \[([^\]]*)\]", match.group(2))
            found.append((match.group(1), [m.strip() for m in members.group(1).split(",")] if members else None))
    return found


def _resolve(target: str) -> object:
    """The object a directive target names (a module, or an attribute of one)."""
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError:
        module, _, attribute = target.rpartition(".")
        return getattr(_resolve(module), attribute)


def documented_objects() -> list[object]:
    """What the API pages document: each directive's object and the members it lists."""
    objects = []
    for target, members in api_directives():
        owner = _resolve(target)
        objects.append(owner)
        objects += [getattr(owner, member) for member in members or ()]
    return objects


def test_every_public_module_and_name_has_an_api_page():
    """Each name ``tnconv`` exports (modules like ``tnconv.distributed`` included) is on an API page."""
    documented = documented_objects()
    missing = [
        name for name in tnconv.__all__ if not any(getattr(tnconv, name) is obj for obj in documented)
    ]
    assert not missing, f"no docs/api page documents tnconv.{', tnconv.'.join(missing)}"


def test_api_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, page.name


CITING = [ROOT / "README.md", ROOT / "mkdocs.yml", *ROOT.glob("docs/**/*.md"), *ROOT.glob("tnconv/**/*.py"),
          *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("benchmarks/**/*.md")]


def test_no_page_or_docstring_cites_a_missing_markdown_file():
    """Every ``*.md`` a file mentions exists, beside it, at the repository root or in docs/."""
    missing = []
    for path in CITING:
        for cited in set(re.findall(r"[\w./-]*\w\.md\b", path.read_text(encoding="utf-8"))):
            if not any((base / cited).is_file() for base in (path.parent, ROOT, ROOT / "docs")):
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, missing


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
    nudged = _moved(drawing, lambda n, x, y: (x + 0.01 * (n % 3), y - 0.02 * (n % 2)))
    assert svg_structure(to_svg_text(nudged)) == structure
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
