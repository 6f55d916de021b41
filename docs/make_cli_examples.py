"""Regenerate the examples of docs/cli.md (and docs/symbolic.md, docs/privacy.md): run each command and write its output between the markers.

An example in the page is::

    <!-- example: tnconv derive forward --layer tiny_2d -->
    ```text
    $ tnconv derive forward --layer tiny_2d
    ...what it prints (stdout, then stderr)...
    ```
    <!-- end example -->

Only the marker line is written by hand; ``python docs/make_cli_examples.py``
rewrites everything up to ``<!-- end example -->``. Commands run in-process
(``tnconv.cli.main``) in an empty temporary folder, so that the diagram path
they print is relative. ``tests/test_cli_docs.py`` regenerates the page and
compares it with the committed one after ``deterministic`` (which masks the
only figures that depend on the machine: the rounding errors of ``--check``).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from tnconv.cli import main as tnconv_main

PAGE = Path(__file__).resolve().parent / "cli.md"
PAGES = (PAGE, PAGE.with_name("symbolic.md"), PAGE.with_name("privacy.md"))
"""The pages with examples (docs/symbolic.md: the cost formulas of a symbolic derivation; docs/privacy.md: the
per-sample norm routine's derivation and which evaluation runs)."""
EXAMPLE = re.compile(r"<!-- example: (?P<command>.+?) -->\n.*?<!-- end example -->", re.DOTALL)
ROUNDING = re.compile(r"max \|error\| \S+")


def output(command: str) -> str:
    """What ``command`` (``tnconv ...``) prints, stdout then stderr as a terminal shows it, run in an empty folder."""
    words = shlex.split(command)
    if words[0] != "tnconv":
        raise ValueError(f"an example command must start with tnconv, got {command!r}")
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            tnconv_main(words[1:], out, err)
        finally:
            os.chdir(previous)
    return out.getvalue() + terminal(err.getvalue())


def terminal(text: str) -> str:
    """What a terminal shows of ``text``: each line as its last carriage return left it (a progress bar's end)."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def regenerate(page: str) -> str:
    """``page`` with every example's output replaced by what its command prints today."""

    def block(match: re.Match[str]) -> str:
        command = match["command"]
        return (f"<!-- example: {command} -->\n```text\n$ {command}\n{output(command).rstrip()}\n```\n"
                "<!-- end example -->")

    return EXAMPLE.sub(block, page)


def deterministic(page: str) -> str:
    """``page`` with the figures that differ between machines masked (``--check``'s rounding errors)."""
    return ROUNDING.sub("max |error| (rounding)", page)


def main() -> None:
    for page in PAGES:
        page.write_text(regenerate(page.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote {page}", file=sys.stderr)


if __name__ == "__main__":
    main()
