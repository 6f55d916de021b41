"""benchmarks/bench_training.py and benchmarks/train_digits.py: smoke runs on the tiny model and a few digits steps
write their rows, RESULTS.md section, JSON and plots; the FLOP floor adds the parts of a step as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_training import floor  # noqa: E402

ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_flop_floor_adds_factors_columns_applying_and_amortised_inversions():
    counts = {"forward": 10.0, "sgd": 30.0, "A expand": 6.0, "A reduce": 1.0, "B expand": 4.0, "B reduce": 2.0,
              "apply": 3.0, "invert": 50.0}  # fmt: skip
    assert floor(counts, "track reduce/empirical", 10) == (30 + 1 + 2 + 3 + 5) / 30
    assert floor(counts, "track expand/type-2", 1) == (30 + 6 + 10 * 4 + 10 * 10 + 3 + 50) / 30
    assert floor(counts, "track reduce/mc", 50) == (30 + 1 + 2 + 10 + 3 + 1) / 30
    assert floor(counts, "update reduce/empirical", 10) == (30 + 1 + 2 + 10 + 10 + 3 + 5) / 30


def test_a_smoke_run_on_the_tiny_model_writes_rows_section_and_plot(tmp_path):
    results, plot, kept = tmp_path / "RESULTS.md", tmp_path / "training.png", tmp_path / "training.json"
    results.write_text("# Benchmark results\n\n## Another benchmark\n\nits table\n", encoding="utf-8")
    command = [sys.executable, str(BENCHMARKS / "bench_training.py"), "--models", "tiny", "--batches", "4",
               "--threads", "1", "--rounds", "1", "--configs", "track reduce/empirical", "update reduce/empirical",
               "--invert-every", "1", "10", "--memory", "--rows", str(kept), "--markdown", str(results),
               "--plot", str(plot)]  # fmt: skip
    completed = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(kept.read_text(encoding="utf-8"))["rows"]
    assert [(row["model"], row["batch"], row["threads"]) for row in rows] == [("tiny", 4, 1)]
    assert set(rows[0]["times"]) == {"sgd", "track reduce/empirical", "update reduce/empirical", "invert"}
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n\n## Another benchmark\n\nits table\n\n## Training steps (issue 23)\n")
    for side in ("track reduce/empirical", "update reduce/empirical"):
        for every in (1, 10):
            assert f"| tiny | 4 | 1 | {side} | {every} |" in text
    assert "FLOP floor" in completed.stdout and plot.stat().st_size > 10_000


def test_a_few_digits_steps_write_the_study_json_and_plot(tmp_path):
    out, plot = tmp_path / "digits.json", tmp_path / "digits.png"
    command = [sys.executable, str(BENCHMARKS / "train_digits.py"), "--steps", "3", "--eval-every", "1", "--grid",
               "first", "--json", str(out), "--plot", str(plot)]  # fmt: skip
    completed = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [(run["method"], len(run["losses"])) for run in results["runs"]] == [("sgd", 4), ("adam", 4), ("kfac", 4),
                                                                                 ("kfac-empirical", 4)]
    assert results["target"] == results["runs"][0]["losses"][-1] and results["seconds_to_target"]["sgd"] is not None
    assert plot.stat().st_size > 10_000
