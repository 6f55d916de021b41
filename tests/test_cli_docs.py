"""docs/cli.md, docs/symbolic.md and docs/privacy.md show what the commands print today: their examples are regenerated and compared."""

from __future__ import annotations

import sys

from cli_run import ROOT


def _generator():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_cli_examples
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return make_cli_examples


def test_cli_examples_are_current():
    """Every example block holds its command's output (rounding errors of --check masked): if this fails, run
    python docs/make_cli_examples.py."""
    generator = _generator()
    committed = generator.PAGE.read_text(encoding="utf-8")
    commands = [match["command"] for match in generator.EXAMPLE.finditer(committed)]
    assert len(commands) >= 5 and any("--check" in command for command in commands)
    assert generator.deterministic(generator.regenerate(committed)) == generator.deterministic(committed)


def test_cli_examples_hold_no_machine_specific_text():
    committed = _generator().PAGE.read_text(encoding="utf-8")
    assert str(ROOT) not in committed and "/tmp" not in committed
    assert "bench (" not in committed  # timings are never part of a checked example


def test_symbolic_page_examples_are_current():
    """docs/symbolic.md's cost formulas are what ``tnconv derive`` prints for symbolic sizes today."""
    generator = _generator()
    page = generator.PAGES[1]
    committed = page.read_text(encoding="utf-8")
    commands = [match["command"] for match in generator.EXAMPLE.finditer(committed)]
    assert any("N,64,H,W" in command for command in commands)
    assert generator.regenerate(committed) == committed


def test_privacy_page_examples_are_current():
    """docs/privacy.md's derivation of the per-sample norms and its choice of evaluation are what ``tnconv derive``
    prints today."""
    generator = _generator()
    page = generator.PAGES[2]
    committed = page.read_text(encoding="utf-8")
    commands = [match["command"] for match in generator.EXAMPLE.finditer(committed)]
    assert any(command.startswith("tnconv derive per-sample-grad-norm") for command in commands)
    assert generator.deterministic(generator.regenerate(committed)) == generator.deterministic(committed)
