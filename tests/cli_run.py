"""Running the ``tnconv`` command in-process and in a fresh interpreter, for the command-line tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from tnconv.cli import main
from tnconv.routines import TABLE, Routine

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str, cwd: Path | None = None, routines: Mapping[str, Routine] = TABLE) -> tuple[int, str, str]:
    """``tnconv ARGV`` in this process (in folder ``cwd``, with the routine table ``routines``): exit status,
    stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        status = main(list(argv), out, err, routines=routines)
    finally:
        os.chdir(previous)
    return status, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    """The single ``tnconv: error: ...`` line of ``err`` (asserting there is exactly one and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tnconv: error: ")
    assert "Traceback" not in err
    return lines[0]


def _environment() -> dict[str, str]:
    """The environment of a fresh interpreter that imports this repository's tnconv first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}


def python(code: str, cwd: Path = ROOT) -> str:
    """Run ``code`` in a fresh interpreter (this repository's tnconv first on the path); its stdout."""
    completed = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_environment(), capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def with_stdout_unread(argv: list[str], cwd: Path = ROOT) -> tuple[int, str]:
    """``python -m tnconv ARGV`` in a fresh interpreter whose stdout is a pipe that nobody reads (its read end
    closed before the command starts, as ``| head -1`` leaves it once head is done): exit status and stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        completed = subprocess.run([sys.executable, "-m", "tnconv", *argv], cwd=cwd, env=_environment(), stdout=write,
                                   stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    return completed.returncode, completed.stderr


HEAVY = ("torch", "sympy", "networkx", "opt_einsum")  # what --help and argument errors must not import


def heavy_imports(argv: list[str]) -> tuple[int, list[str]]:
    """``tnconv ARGV`` in a fresh interpreter: its exit status and which of ``HEAVY`` it imported."""
    code = (
        "import contextlib, io, sys\n"
        "from tnconv.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = main({argv!r}, err=io.StringIO())\n"
        f"print(status, *sorted(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    status, *heavy = python(code).split()
    return int(status), heavy


def torch_at_first_write(argv: list[str], marker: str, cwd: Path = ROOT) -> tuple[int, bool, bool]:
    """``tnconv ARGV`` in a fresh interpreter: its exit status, whether torch was loaded when it first wrote to
    stdout, and whether ``marker`` is in its stdout (it ran to the end)."""
    code = (
        "import io, sys\n"
        "from tnconv.cli import main\n"
        "class Probe(io.StringIO):\n"
        "    torch_at_first_write = None\n"
        "    def write(self, text):\n"
        "        if self.torch_at_first_write is None and text:\n"
        "            self.torch_at_first_write = 'torch' in sys.modules\n"
        "        return super().write(text)\n"
        "probe = Probe()\n"
        f"status = main({argv!r}, probe, io.StringIO())\n"
        f"print(status, probe.torch_at_first_write, {marker!r} in probe.getvalue())\n"
    )
    status, loaded, ran = python(code, cwd).split()
    return int(status), loaded == "True", ran == "True"

