"""The documentation site builds with ``mkdocs build --strict`` (every page, link and API docstring resolves)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_checked_in_diagrams_are_current():
    """docs/diagrams/*.svg are what ``python docs/make_diagrams.py`` draws today."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_diagrams
    finally:
        sys.path.remove(str(ROOT / "docs"))
    import tnconv
    from tnconv.render.draw import to_svg

    for name, (op, layer, simplify) in make_diagrams.DIAGRAMS.items():
        net = tnconv.conv_network(op, **layer, simplify=simplify)
        current = (ROOT / "docs" / "diagrams" / f"{name}.svg").read_text()
        assert current == to_svg(net), f"{name}.svg is stale: run python docs/make_diagrams.py"
