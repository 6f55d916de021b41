"""Every ```python block of README.md and of the docs pages runs as written after the README's install.

The README installs tnconv without extras (``pip install torch==2.13.0 -e .``),
so each block runs in a fresh interpreter, in an empty temporary folder,
where only the standard library, tnconv, and the packages its dependencies
bring (recursively, extras left out) can be imported. Anything else
(matplotlib of the ``draw`` extra, hypothesis of the ``test`` extra, ...)
raises ``ModuleNotFoundError`` there, as it would after a fresh install.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> dict[str, str]:
    """``{"page.md:n": code}`` for the ``n``-th ```python block of each page."""
    return {
        f"{page.relative_to(ROOT)}:{number}": code
        for page in PAGES
        for number, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")))
    }


def installed_modules() -> set[str]:
    """Top-level modules that ``pip install -e .`` brings: tnconv's dependencies and theirs, no extras."""
    providers: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            providers.setdefault(_canonical(distribution), set()).add(module)
    seen: set[str] = set()
    waiting = ["tnconv"]
    while waiting:
        name = waiting.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            if name == "tnconv":
                raise RuntimeError("tnconv is not installed: run the README's install (pip install -e .)") from None
            continue  # a requirement for another platform
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(_canonical(requirement.name))
    return {"tnconv"} | {module for name in seen for module in providers.get(name, ())}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


PRELUDE = """\
import importlib.abc, importlib.machinery, os, sys, sysconfig

STDLIB = [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")]
STDLIB.append(os.path.join(STDLIB[1], "lib-dynload"))

class NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    '''Modules other than the standard library and ALLOWED behave as after the README's install.

    One that is not on this machine at all stays absent (``find_spec`` gives None, so optional
    probes such as torch's work as usual); one that is here but not ALLOWED gets a spec whose
    import raises ModuleNotFoundError. The standard library is ``sys.stdlib_module_names`` and
    whatever lies in the interpreter's own folders (private modules such as ``_sysconfigdata_*``).'''

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names:
            return None
        if importlib.machinery.PathFinder.find_spec(top, STDLIB) is not None:
            return None
        if importlib.machinery.PathFinder.find_spec(top) is None:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        top = spec.name.partition(".")[0]
        raise ModuleNotFoundError(f"No module named {top!r} (not installed by the README's install)", name=top)

    def exec_module(self, module):
        raise AssertionError("create_module always raises")

sys.meta_path.insert(0, NotInstalled())
del NotInstalled
"""


def run_isolated(code: str, folder: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``folder`` with only the README's install importable."""
    program = f"ALLOWED = {sorted(installed_modules())!r}\n{PRELUDE}\nexec(compile({code!r}, 'snippet', 'exec'))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", program], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_page_with_code_has_python_blocks():
    """The pages whose Python a newcomer copies are found (so the test below checks something)."""
    pages = {name.partition(":")[0] for name in python_blocks()}
    assert {"README.md", "docs/index.md", "docs/concepts.md"} <= pages


@pytest.mark.parametrize("name", sorted(python_blocks()))
def test_python_block_runs_after_the_readme_install(name, tmp_path):
    completed = run_isolated(python_blocks()[name], tmp_path)
    assert completed.returncode == 0, f"{name} fails:\n{completed.stderr[-3000:]}"


def test_only_the_readme_install_is_importable(tmp_path):
    """The isolation works: the extras' packages fail, so does a PNG diagram; tnconv, torch and SVG work."""
    for code in ("import matplotlib", "import hypothesis", "import pytest"):
        completed = run_isolated(code, tmp_path)
        assert completed.returncode != 0 and "ModuleNotFoundError" in completed.stderr, code
    draw = "import tnconv\nnet = tnconv.Network.from_einsum('ij,jk->ik', 'A', 'B')\ntnconv.draw(net, '{}')"
    assert run_isolated(draw.format("net.svg"), tmp_path).returncode == 0
    assert (tmp_path / "net.svg").exists()
    completed = run_isolated(draw.format("net.png"), tmp_path)
    assert completed.returncode != 0 and "matplotlib" in completed.stderr
