"""The documentation: the site builds with ``mkdocs build --strict`` (every page, link and API
docstring resolves), typesets its math, documents every public module and name, and no page or
docstring points at a file that does not exist; the checked-in diagrams are current."""

from __future__ import annotations

import importlib
import json
import importlib.util
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


def test_pages_with_math_show_it_as_mathml(site):
    """The math is MathML made when the site is built (docs/hooks/mathml.py): no TeX or arithmatex markup is left
    in any page, and no page loads a script from another host, so formulas show offline."""
    pages = {page: page.read_text(encoding="utf-8") for page in site.glob("**/*.html")}
    with_math = sorted(page.relative_to(site).as_posix() for page, text in pages.items() if "<math " in text)
    assert with_math == ["dropout/index.html", "index.html", "privacy/index.html"]
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in pages[site / "index.html"]
    for page, text in pages.items():
        assert 'class="arithmatex"' not in text and not re.search(r"\\[(\[]|\$\$", prose(text)), page
        assert not re.search(r'<script[^>]* src="(https?:)?//', text), page


def prose(page: str) -> str:
    """The text of a built page's article without its code (where a backslash or ``$$`` may stand for itself)."""
    article = re.search(r"<article.*?</article>", page, re.DOTALL)
    assert article is not None
    return re.sub(r"<(pre|code)[^>]*>.*?</\1>", "", article.group(0), flags=re.DOTALL)


MATH_PAGE = r"""# Math

Inline $a_{n} = \frac{1}{N}$ and \(\sum_k x_k\), display:

$$
Y_{n,c_\text{out}} = \sum_{c_\text{in}} X_{n,c_\text{in}}\, W_{c_\text{out},c_\text{in}}
$$

\[
\Pi_{k,o,i} = [\,i = S\,o + D\,k - P\,]
\]
"""


def test_every_spelling_of_math_becomes_mathml(tmp_path):
    """A new page with inline and display math in each spelling arithmatex takes, built with the site's own
    markdown extensions and hooks: four MathML formulas (two of them display), none of the TeX left."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(MATH_PAGE, encoding="utf-8")
    config.update(docs_dir=str(tmp_path / "docs"), nav=["index.md"], plugins=[], exclude_docs="",
                  hooks=[str(ROOT / hook) for hook in config["hooks"]])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert text.count("<math ") == 4 and text.count('display="block"') == 2
    assert "<mfrac>" in text and "<mtext>out</mtext>" in text
    assert "\\" not in prose(text)


def test_tex_that_mathml_cannot_show_fails_the_build():
    """latex2mathml leaves a command it does not know as text: the hook refuses it instead of showing raw TeX."""
    spec = importlib.util.spec_from_file_location("mathml_hook", ROOT / "docs" / "hooks" / "mathml.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert hook.mathml(r"x_{1}", display=False).startswith('<math xmlns="http://www.w3.org/1998/Math/MathML"')
    with pytest.raises(ValueError, match=r"does not know '\\\\nosuchcommand'"):
        hook.mathml(r"\nosuchcommand x", display=False)
    with pytest.raises(ValueError, match="cannot convert it"):
        hook.mathml(r"x^{", display=True)


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


UNIQUENESS = re.compile(r"no (other )?(framework|library)|nowhere else|(not|never) (offered|available) elsewhere",
                        re.IGNORECASE)


def test_no_page_or_docstring_claims_the_peers_lack_its_routines():
    """BackPACK and curvlinops compute per-sample gradients, GGN diagonals and KFAC factors: no text may say that
    no framework does."""
    claims = [f"{path.relative_to(ROOT)}: {match.group(0)!r}" for path in CITING
              for match in UNIQUENESS.finditer(path.read_text(encoding="utf-8"))]
    assert not claims, claims


def test_the_speed_against_the_peers_is_the_measured_one():
    """The README's and the home page's figures against BackPACK and curvlinops are the ranges of the ratios that
    benchmarks/models.json holds (the rows of benchmarks/RESULTS.md's whole-model tables)."""
    ratios: dict[str, list[float]] = {}
    for row in json.loads((ROOT / "benchmarks" / "models.json").read_text(encoding="utf-8"))["rows"]:
        task, times = ("update" if row["task"].startswith("update") else row["task"]), row["times"]
        peer = {"update": "curvlinops", "per-sample": "backpack", "diag GGN": "backpack"}.get(task)
        if peer in times:
            ratios.setdefault(task, []).append(times["tnconv"] / times[peer])
    span = {task: f"{min(values):.2f}-{max(values):.2f}x" for task, values in ratios.items()}
    claims = (f"{span['per-sample']} BackPACK's time for per-sample gradients", f"{span['diag GGN']} for GGN diagonals",
              f"{span['update']} curvlinops' time for a KFAC update")
    for page in (ROOT / "README.md", ROOT / "docs" / "index.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert all(claim in text for claim in claims), (page.name, claims)


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
