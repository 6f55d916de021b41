"""``tnconv derive`` with symbolic sizes: ``--input N,64,H,W`` derives once for all sizes and shows cost formulas."""

from __future__ import annotations

import json

import pytest
import sympy
from cli_run import heavy_imports, one_line_error, run

import tnconv
from tnconv.ir.sizes import leg_symbol

ARGV = ["derive", "kfac-reduce", "--input", "N,64,H,W", "--kernel", "3", "--padding", "1", "--no-diagram"]


def test_kfac_reduce_shows_its_cost_formula_next_to_the_unfold_based_one() -> None:
    status, out, _ = run(*ARGV)
    assert status == 0
    assert "strategy  symbolic: one plan for all sizes, chosen with every symbol = 64" in out
    program = tnconv.compile(tnconv.conv_network("kfac_reduce", ("N", 64, "H", "W"), 3, padding=1))
    assert f"flops     {program.flops}\n" in out
    n, h, w = (leg_symbol(name) for name in "NHW")
    unfolded = 576 * n * h * w  # (N, 64*3*3, H*W): the patches of a 3x3 'same' conv
    gram = 2 * n * (64 * 9) ** 2
    assert f"unfold-based flops  {2 * unfolded + gram} (U = unfold(X) has {unfolded} elements)" in out
    assert "1/(N*T^2) = 1/(H**2*N*W**2)" in out


def test_the_json_report_holds_the_formulas() -> None:
    status, out, _ = run(*ARGV, "--json")
    assert status == 0
    report = json.loads(out)
    flops = sympy.sympify(report["flops"], locals={name: leg_symbol(name) for name in "NHW"})
    assert flops.free_symbols == {leg_symbol(name) for name in "NHW"}
    assert report["symbolic"] and report["unfold_based"]["unfolded_elements"] == "576*H*N*W"


def test_a_rewrite_that_is_not_proven_for_all_sizes_is_reported() -> None:
    """A stride-2 kernel-2 forward: the dense rule needs H % 2 == 0, which a symbolic H does not prove."""
    status, out, _ = run("derive", "forward", "--input", "N,3,H,8", "--kernel", "2", "--stride", "2",
                         "--no-diagram")
    assert status == 0
    assert "not proven for all sizes: H % 2 == 0" in out
    assert "flops     " in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "N,C,H,W"], "--input: the channels (second size) must be an integer, got 'C'"),
        (["--input", "N,3,H,W", "--check"], "--check: needs numbers for every size"),
        (["--input", "N,3,H,W", "--bench"], "--bench: needs numbers for every size"),
        (["--input", "N,3,H-1,W"], "--input: expected comma-separated integers"),
    ],
)
def test_symbolic_input_errors_name_the_flag_without_torch(argv: list[str], message: str) -> None:
    full = ["derive", "forward", *argv]
    assert message in one_line_error(run(*full)[2])
    assert heavy_imports(full) == (2, [])
