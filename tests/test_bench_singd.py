"""benchmarks/bench_singd.py: its ``unfold`` baseline computes singd's patch averages, and its report (the paper's
layout, targets checked on CPU time and memory) goes into its own section of RESULTS.md, keeping the others."""

from __future__ import annotations

import sys

import pytest
import singd.optim.utils as singd_utils
import torch
from cli_run import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_singd import SECTION, averaged_by_unfold, markdown, merged, sides_of  # noqa: E402


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups", [(3, 1, 1, 1, 1), ((2, 3), 2, 0, (1, 2), 2)])
def test_the_unfold_baseline_averages_singds_unfolded_patches(kernel, stride, padding, dilation, groups) -> None:
    """Inside the context singd's KFAC-reduce patch averages come from ``F.unfold`` and equal its einconv ones;
    outside, singd's own function is back."""
    x = torch.randn(3, 4, 7, 8, dtype=torch.float64)
    arguments = (kernel, stride, padding, dilation, groups)
    expected = singd_utils._extract_averaged_patches(x, *arguments)
    original = singd_utils._extract_averaged_patches
    with averaged_by_unfold():
        assert singd_utils._extract_averaged_patches is not original
        torch.testing.assert_close(singd_utils._extract_averaged_patches(x, *arguments), expected)
    assert singd_utils._extract_averaged_patches is original


def row(approx: str, cpu: dict[str, float], peaks: dict[str, int]) -> dict:
    return {"model": "resnet18", "shape": [8, 3, 224, 224], "approx": approx, "structure": "diagonal", "threads": 1,
            "repeats": 5, "times": {side: 2 * value for side, value in cpu.items()}, "cpu": cpu, "peaks": peaks,
            "date": "2026-01-01 00:00", "load": 1.0}


def test_the_section_checks_the_targets_and_keeps_the_other_sections(tmp_path) -> None:
    """Reduce must also be no slower than singd's own einconv path; memory within 1.02x of SGD."""
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Another benchmark\n\nits table\n", encoding="utf-8")
    reduce = row("reduce", {"sgd": 1.0, "unfold": 1.4, "einconv": 1.05, "tnconv": 1.06}, dict.fromkeys(sides_of("reduce"), 100))
    expand = row("expand", {"sgd": 1.0, "unfold": 1.9, "tnconv": 1.05}, {"sgd": 100, "unfold": 130, "tnconv": 103})
    markdown(path, merged([], [expand, reduce]), quick=False)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\n## Another benchmark\n\nits table\n") and f"## {SECTION}" in text
    lines = [line for line in text.splitlines() if "SINGD (tnconv)" in line]
    assert len(lines) == 2 and "MISSED" in lines[0] and "MISSED" in lines[1]  # slower than einconv; 1.03x memory
    assert text.index("reduce, diagonal") < text.index("expand, diagonal")
    unfold = next(line for line in text.splitlines() if "SINGD (unfold)" in line)  # reduce's, the first
    assert "1.67x, 1.25x" in unfold  # the paper's numbers beside the row they correspond to
    faster = row("reduce", {"sgd": 1.0, "unfold": 1.4, "einconv": 1.05, "tnconv": 1.04}, dict.fromkeys(sides_of("reduce"), 100))
    markdown(path, merged([reduce, expand], [faster]), quick=False)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if "SINGD (tnconv)" in line]
    assert len(lines) == 2 and lines[0].endswith("met |") and "MISSED" in lines[1]
