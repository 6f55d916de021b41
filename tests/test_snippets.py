"""Every ```python block of README.md and of the docs pages runs as written after the README's install.

The README installs tnconv without extras (``pip install torch==2.13.0 -e .``),
so each block runs in a fresh interpreter, in an empty temporary folder,
where only the standard library, tnconv, and the packages its dependencies
bring (recursively, extras left out) can be imported. Anything else
(matplotlib of the ``draw`` extra, hypothesis of the ``test`` extra, ...)
raises ``ModuleNotFoundError`` there, as it would after a fresh install.
A page about an optional extra says so on a line ``<!-- extras: singd -->``:
its blocks run after ``pip install -e .[singd]`` (that extra's packages too).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXTRAS = re.compile(r"^<!-- extras: ([\w, -]+) -->$", re.MULTILINE)


def python_blocks() -> dict[str, str]:
    """``{"page.md:n": code}`` for the ``n``-th ```python block of each page."""
    return {
        f"{page.relative_to(ROOT)}:{number}": code
        for page in PAGES
        for number, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")))
    }


def page_extras(name: str) -> tuple[str, ...]:
    """The extras that the page of block ``name`` (``page.md:n``) installs (its ``<!-- extras: ... -->`` line)."""
    found = EXTRAS.search((ROOT / name.rpartition(":")[0]).read_text(encoding="utf-8"))
    return () if found is None else tuple(extra.strip() for extra in found.group(1).split(","))


def installed_modules(extras: tuple[str, ...] = ()) -> set[str]:
    """Top-level modules that ``pip install -e .`` (``.[extras]``) of this checkout brings: the dependencies its
    pyproject.toml names (and those of the extras) and theirs, their own extras left out."""
    try:
        importlib.metadata.distribution("tnconv")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("tnconv is not installed: run the README's install (pip install -e .)") from None
    providers: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            providers.setdefault(_canonical(distribution), set()).add(module)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    direct = [*project["dependencies"], *(text for extra in extras for text in project["optional-dependencies"][extra])]
    seen = {"tnconv"}
    waiting = list(direct)
    while waiting:
        requirement = Requirement(waiting.pop())
        name = _canonical(requirement.name)
        if name in seen or not (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            waiting.extend(importlib.metadata.distribution(name).requires or [])
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform
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


def run_isolated(code: str, folder: Path, extras: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``folder`` with only the README's install (with ``extras``) importable."""
    program = f"ALLOWED = {sorted(installed_modules(extras))!r}\n{PRELUDE}\nexec(compile({code!r}, 'snippet', 'exec'))\n"
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
    completed = run_isolated(python_blocks()[name], tmp_path, page_extras(name))
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


def test_a_page_installs_the_extras_it_names(tmp_path):
    """docs/singd.md names the singd extra: singd imports there, not after the plain install."""
    assert page_extras("docs/singd.md:0") == ("singd",) and page_extras("README.md:0") == ()
    assert run_isolated("import singd", tmp_path).returncode != 0
    assert run_isolated("import singd", tmp_path, ("singd",)).returncode == 0
