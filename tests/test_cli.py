"""The ``tnconv`` command: every subcommand and routine, --check/--bench/--json, and every error path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tnconv.cli import main
from tnconv.cli.derive import ROUTINES, derive
from tnconv.cli.layers import builtin_layer, custom_layer, layer_names
from tnconv.cli import reference


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        status = main(list(argv), out, err)
    finally:
        os.chdir(previous)
    return status, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tnconv: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("routine", list(ROUTINES))
def test_every_routine_derives_and_checks(routine, tmp_path):
    status, out, err = run("derive", routine, "--layer", "tiny_depthwise_2d", "--check", cwd=tmp_path)
    assert status == 0, err
    assert "PASSED" in out
    for part in ("== 1. ", "pass: simplify", "rewrites:", "einsum ", "path ", "flops ", "largest intermediate",
                 "strategy "):
        assert part in out
    diagram = tmp_path / f"tnconv-derive-{routine}.svg"
    assert diagram.read_text().startswith("<svg")


@pytest.mark.parametrize(
    "flags",
    [
        ["--input", "2,3,11", "--kernel", "4", "--stride", "3", "--dilation", "2", "--out-channels", "5"],
        ["--input", "1,4,5,6,7", "--kernel", "2,3,1", "--padding", "1", "--groups", "2", "--out-channels", "2"],
        ["--input", "3,6,7,5", "--kernel", "3", "--stride", "2", "--padding", "1", "--output-padding", "1",
         "--groups", "3", "--out-channels", "9", "--transposed"],
        ["--input", "2,2,8,9", "--kernel", "3", "--padding", "same", "--dilation", "2", "--padding-mode", "reflect"],
        ["--layer", "tiny_2d", "--stride", "2", "--kernel", "2", "--batch", "3"],
    ],
    ids=["1d-strided-dilated", "3d-grouped", "2d-transposed-output-padding", "2d-same-reflect", "override-builtin"],
)
@pytest.mark.parametrize("routine", ["forward", "input-vjp", "weight-vjp", "unfold", "kfac-expand", "kfac-reduce",
                                     "per-sample-grad", "diag-ggn"])
def test_check_passes_for_varied_layers(routine, flags):
    if "reflect" in flags and routine not in ("forward", "unfold", "kfac-expand", "kfac-reduce"):
        flags = [f for f in flags if f not in ("--padding-mode", "reflect")]
    status, out, err = run("derive", routine, *flags, "--check", "--no-diagram", "--ggn-columns", "2")
    assert status == 0, err
    assert "PASSED" in out


def test_check_fails_loudly_on_a_wrong_network(monkeypatch):
    """--check compares with PyTorch for real: a reference that differs makes it fail with exit status 1."""
    original = reference.implementation

    def perturbed(op, hyper):
        function = original(op, hyper)
        return lambda operands: function(operands) * (1 + 1e-8)

    monkeypatch.setattr(reference, "implementation", perturbed)
    status, out, _ = run("derive", "forward", "--layer", "tiny_2d", "--check", "--no-diagram")
    assert status == 1
    assert "FAILED" in out


def test_bare_derive_uses_the_default_layer(tmp_path):
    status, out, err = run("derive", "kfac-reduce", cwd=tmp_path)
    assert status == 0, err
    assert "resnet18_layer1_3x3" in out
    assert (tmp_path / "tnconv-derive-kfac-reduce.svg").exists()


def test_json_output_is_complete(tmp_path):
    target = tmp_path / "d.png"
    status, out, err = run("derive", "weight-vjp", "--layer", "tiny_2d", "--check", "--json", "--diagram", str(target))
    assert status == 0, err
    report = json.loads(out)
    assert report["op"] == "weight_vjp" and report["layer"]["name"] == "tiny_2d"
    assert report["check"]["passed"] is True
    assert report["diagram"] == str(target) and target.read_bytes().startswith(b"\x89PNG")
    assert report["flops"] > 0 and report["largest_intermediate"] > 0
    assert report["stages"][0]["network"].startswith("X ")
    assert isinstance(report["stages"][-1]["rewrites"], list)
    assert report["einsum"].count("->") == 1 and report["strategy"]


def test_bench_times_both_and_shows_progress():
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--bench", "--repeats", "2", "--no-diagram")
    assert status == 0, err
    assert "bench [" in err and err.rstrip().endswith("pytorch")
    assert "tnconv " in out and "pytorch " in out and "ratio " in out
    status, out, err = run("derive", "unfold", "--layer", "tiny_2d", "--bench", "--repeats", "1", "--json",
                           "--no-diagram")
    result = json.loads(out)["bench"]
    assert result["tnconv_s"] > 0 and result["pytorch_s"] > 0 and result["ratio"] > 0
    assert err == ""


def test_layers_lists_the_builtin_layers():
    status, out, _ = run("layers")
    assert status == 0
    for name in layer_names():
        assert name in out
    assert "* resnet18_layer1_3x3" in out
    status, out, _ = run("layers", "--json", "--batch", "32")
    listed = json.loads(out)
    assert listed["default"] == "resnet18_layer1_3x3"
    assert all(layer["input_shape"][0] == 32 for layer in listed["layers"])
    transposed = next(layer for layer in listed["layers"] if layer["transposed"])
    assert transposed["weight_shape"] == [128, 64, 2, 2] and transposed["out_channels"] == 64


def test_builtin_layers_match_the_benchmark_list():
    shared = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "layers.json"
    if not shared.exists():
        shared = Path(__file__).resolve().parents[1] / "shared" / "benchmarks" / "layers.json"
    assert shared.exists(), "the shared benchmark list sits beside the repository"
    for entry in json.loads(shared.read_text())["layers"]:
        layer = builtin_layer(entry["name"])
        assert layer.input_shape[1:] == tuple(entry["x"])
        assert layer.weight_shape == tuple(entry["w"])
        assert layer.groups == entry.get("groups", 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["derive", "kfac-reduce", "--input", "8,x,5,5"], "--input: expected comma-separated integers, got '8,x,5,5'"),
        (["derive", "kfac-reduce", "--input", "8,0,5,5"], "--input: expected integers >= 1"),
        (["derive", "kfac-reduce", "--input", "8,4"], "--input: expected (N, C_in, *spatial)"),
        (["derive", "forward", "--kernel", "3,3,3", "--input", "1,2,5,5"], "--kernel: expected 1 or 2 integers"),
        (["derive", "convolve"], "invalid choice: 'convolve'"),
        (["derive", "forward", "--layer", "resnet99"], "unknown layer 'resnet99'"),
        (["derive", "forward", "--input", "2,4,9,9", "--groups", "3"], "in_channels=4 must be divisible by groups=3"),
        (["derive", "forward", "--input", "2,4,3,3", "--kernel", "5"], "kernel"),
        (["derive", "forward", "--layer", "tiny_2d", "--stride", "0"], "--stride: expected integers >= 1"),
        (["derive", "forward", "--layer", "tiny_2d", "--diagram", "d.jpg"], "must end in one of"),
        (["derive", "forward", "--layer", "tiny_2d", "--optimize", "fastest"], "optimize must be one of"),
        (["derive", "forward", "--layer", "tiny_2d", "--output-padding", "1"], "output_padding"),
        (["derive", "unfold-transpose", "--layer", "vit_b16_patchify", "--check"], "use a smaller --batch or layer"),
        (["derive"], "the following arguments are required: ROUTINE"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, tmp_path):
    status, out, err = run(*argv, cwd=tmp_path)
    assert status == 2
    line = one_line_error(err)
    assert message in line
    assert not list(tmp_path.iterdir())  # nothing written on an error


def test_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tnconv 0.")
    assert main(["derive", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--layer", "--input", "--check", "--bench", "--json", "--diagram", "--transposed"):
        assert flag in text


def test_custom_layer_defaults():
    layer = custom_layer((2, 4, 9), {})
    assert layer.kernel_size == (3,) and layer.out_channels == 4 and layer.weight_shape == (4, 4, 3)


def test_derivation_object_is_usable_from_python():
    layer = builtin_layer("tiny_2d", batch=2)
    derivation = derive("per-sample-grad", layer)
    x = torch.randn(layer.input_shape, dtype=torch.float64)
    v = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    result = derivation.program(X=x, V=v)
    assert result.shape[0] == 2 and result.numel() == 2 * 6 * 4 * 3 * 3


def test_python_m_tnconv_writes_the_readme_diagram(tmp_path):
    """The README's first command, through the module entry point: a derivation and a diagram file."""
    completed = subprocess.run(
        [sys.executable, "-m", "tnconv", "derive", "kfac-reduce"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "== compiled ==" in completed.stdout
    assert (tmp_path / "tnconv-derive-kfac-reduce.svg").read_text().startswith("<svg")
    failed = subprocess.run(
        [sys.executable, "-m", "tnconv", "derive", "nope"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2 and "Traceback" not in failed.stderr and len(failed.stderr.splitlines()) == 1


def test_console_script_is_installed():
    """``pip install -e .`` installs the ``tnconv`` command next to the interpreter."""
    script = Path(sys.executable).with_name("tnconv")
    assert script.exists(), f"no console script at {script}: is the package installed (pip install -e .)?"
    completed = subprocess.run([str(script), "layers"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "resnet18_layer1_3x3" in completed.stdout
