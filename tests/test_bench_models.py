"""benchmarks/bench_models.py: a quick run on the tiny model writes its section of RESULTS.md (keeping the other
sections) and its plot; ``write_section`` replaces one section and leaves the rest as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_run import ROOT

BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from bench_models import TASKS, merged  # noqa: E402
from common import write_section, write_sections  # noqa: E402


def test_write_section_replaces_its_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## First\n\nold first\n\n## Mine\n\nold mine\n\n## Last\n\nlast\n", encoding="utf-8")
    write_section(path, "Mine", "new mine\n| a |")
    assert path.read_text(encoding="utf-8") == (
        "# Results\n\n## First\n\nold first\n\n## Mine\n\nnew mine\n| a |\n\n## Last\n\nlast\n"
    )
    write_section(path, "Added", "added")
    assert path.read_text(encoding="utf-8").endswith("## Last\n\nlast\n\n## Added\n\nadded\n")
    write_section(path, "Added", "again")
    assert path.read_text(encoding="utf-8").endswith("## Last\n\nlast\n\n## Added\n\nagain\n")
    fresh = tmp_path / "fresh.md"
    write_section(fresh, "Only", "body")
    assert fresh.read_text(encoding="utf-8") == "## Only\n\nbody\n"


def test_write_sections_replaces_the_preamble_and_its_sections_and_keeps_the_others(tmp_path):
    """bench_routines.py writes a whole document: its sections replace theirs, other scripts' sections stay."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Old title\n\nold intro\n\n## Table\n\nold table\n\n## Dropout\n\nkept\n", encoding="utf-8")
    write_sections(path, "# Title\n\nintro\n\n## Table\n\nnew table\n\n## Added\n\nadded\n")
    assert path.read_text(encoding="utf-8") == (
        "# Title\n\nintro\n\n## Table\n\nnew table\n\n## Dropout\n\nkept\n\n## Added\n\nadded\n"
    )


def test_quick_run_on_the_tiny_model_writes_its_section_plot_and_rows(tmp_path):
    """A second run of one comparison replaces that row in the kept rows and keeps the others in the section."""
    results, plot, kept = tmp_path / "RESULTS.md", tmp_path / "models.png", tmp_path / "models.json"
    results.write_text("# Benchmark results\n\n## Another benchmark\n\nits table\n", encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(BENCHMARKS / "bench_models.py"), "--quick", "--models", "tiny", "--threads", "1",
               "--no-memory", "--rows", str(kept), "--markdown", str(results), "--plot", str(plot)]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    first = json.loads(kept.read_text(encoding="utf-8"))["rows"]
    completed = subprocess.run(command + ["--tasks", "A reduce"], env=environment, capture_output=True, text=True,
                               timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    second = json.loads(kept.read_text(encoding="utf-8"))["rows"]
    assert [row["task"] for row in second] == [row["task"] for row in first] == list(TASKS)
    assert [row["times"] for row in second if row["task"] != "A reduce"] == [
        row["times"] for row in first if row["task"] != "A reduce"]
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\n## Another benchmark\n\nits table\n\n## Whole models (issue 15)\n")
    for comparison in TASKS:
        assert f"| tiny | {comparison} |" in text
    assert "backpack" in text and "curvlinops" in text and "unfold" in text and "1 round(s), load" in text
    assert plot.stat().st_size > 10_000


def test_kept_rows_are_replaced_by_the_ones_measured_again_and_sorted():
    def row(model: str, threads: int, task: str, seconds: float) -> dict:
        return {"model": model, "threads": threads, "task": task, "times": {"tnconv": seconds}}

    kept = [row("vgg19", 1, "A expand", 3.0), row("resnet18", 1, "A reduce", 2.0), row("resnet18", 1, "A expand", 1.0)]
    new = [row("resnet18", 1, "A reduce", 5.0), row("convnext", 1, "per-sample", 7.0),
           row("resnet18", 2, "A expand", 6.0)]
    result = merged(kept, new, ("model", "threads", "task"))
    assert [(r["model"], r["threads"], r["task"], r["times"]["tnconv"]) for r in result] == [
        ("resnet18", 1, "A expand", 1.0), ("resnet18", 1, "A reduce", 5.0), ("resnet18", 2, "A expand", 6.0),
        ("vgg19", 1, "A expand", 3.0), ("convnext", 1, "per-sample", 7.0)]
