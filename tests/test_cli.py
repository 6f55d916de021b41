"""The ``tnconv`` command: every subcommand and routine, --check/--bench/--json, and every error path."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_run import ROOT, one_line_error, run, with_stdout_unread

from tnconv.cli import main
from tnconv.cli.derive import derive
from tnconv.cli.layers import builtin_layer, custom_layer, layer_names
from tnconv.cli.main import EXIT_BROKEN_PIPE
from tnconv.routines import TABLE, routine_table


def with_reference(name, wrap):
    """A copy of ``TABLE`` whose routine ``name`` has the reference ``wrap(reference)``."""
    entry = TABLE[name]
    build = entry.reference.build
    changed = replace(entry, reference=replace(entry.reference, build=lambda hyper: wrap(build(hyper))))
    return routine_table(changed if routine is entry else routine for routine in TABLE.values())


@pytest.mark.parametrize("routine", [routine.hyphen_name for routine in TABLE.values()])
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
                                     "per-sample-grad", "diag-ggn", "per-sample-grad-norm", "sum-grad-squared"])
def test_check_passes_for_varied_layers(routine, flags):
    if "reflect" in flags and routine not in ("forward", "unfold", "kfac-expand", "kfac-reduce"):
        flags = [f for f in flags if f not in ("--padding-mode", "reflect")]
    columns = ["--ggn-columns", "2"] if routine == "diag-ggn" else []
    status, out, err = run("derive", routine, *flags, *columns, "--check", "--no-diagram")
    assert status == 0, err
    assert "PASSED" in out


def test_check_fails_loudly_on_a_wrong_network():
    """--check compares with PyTorch for real: a reference that differs makes it fail with exit status 1."""
    routines = with_reference("forward", lambda function: lambda operands: function(operands) * (1 + 1e-8))
    status, out, _ = run("derive", "forward", "--layer", "tiny_2d", "--check", "--no-diagram", routines=routines)
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
    assert report["einsum"].count("->") == 1 and report["strategy"] == "native:conv2d_weight"
    assert report["kernel"]["name"] == "conv2d_weight" and report["kernel"]["created"]
    plan = report["einsum_plan"]
    assert plan["runs"] is False and plan["path"] and len(plan["steps"]) == len(plan["path"])
    assert [c["against"] for c in report["check"]["comparisons"]] == ["PyTorch", "einsum plan"]
    assert report["scaling"] is None


def test_bench_times_both_and_shows_progress():
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--bench", "--repeats", "2", "--no-diagram")
    assert status == 0, err
    assert "bench [" in err and "8/8" in err  # 2 warm-up + 2 timed rounds of both sides
    assert "tnconv " in out and "pytorch " in out and "ratio " in out
    status, out, err = run("derive", "unfold", "--layer", "tiny_2d", "--bench", "--repeats", "1", "--json",
                           "--no-diagram")
    result = json.loads(out)["bench"]
    assert result["tnconv_s"] > 0 and result["pytorch_s"] > 0 and result["ratio"] > 0
    assert err == ""


def test_bench_reports_the_spread_of_both_sides():
    """min <= median <= max per side and of the paired ratios, threads, repeats, warm-up; both sides warmed up."""
    calls = {"pytorch": 0}

    def counted(function):
        def call(operands):
            calls["pytorch"] += 1
            return function(operands)

        return call

    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--bench", "--repeats", "3", "--json",
                           "--no-diagram", routines=with_reference("forward", counted))
    assert status == 0, err
    result = json.loads(out)["bench"]
    assert (result["repeats"], result["warmup"], result["threads"]) == (3, 2, torch.get_num_threads())
    for side in ("tnconv", "pytorch", "paired_ratio"):
        assert 0 < result[side]["min"] <= result[side]["median"] <= result[side]["max"]
    assert result["tnconv_s"] == result["tnconv"]["median"] and result["pytorch_s"] == result["pytorch"]["median"]
    assert calls["pytorch"] == result["warmup"] + result["repeats"] * result["calls_per_sample"]
    status, out, _ = run("derive", "forward", "--layer", "tiny_2d", "--bench", "--repeats", "3", "--no-diagram")
    assert "2 threads" in out or f"{torch.get_num_threads()} threads" in out
    assert "3 interleaved rounds" in out and "2 warm-up calls" in out
    assert "ms per call" in out and "min" in out and "median" in out and "max" in out


def test_bench_prints_small_ratios_and_times_with_significant_digits():
    """A tiny ratio is not printed as 0.00x (three significant digits), nor a tiny time as 0.000 ms."""
    import io

    from tnconv.cli import show

    result = {
        "dtype": "float32", "threads": 2, "warmup": 2, "repeats": 3, "calls_per_sample": 1,
        "tnconv": {"min": 1.1e-7, "median": 1.2e-7, "max": 1.3e-7},
        "pytorch": {"min": 0.05, "median": 0.091, "max": 0.2},
        "paired_ratio": {"min": 1.1e-6, "median": 1.32e-6, "max": 2e-6}, "ratio": 1.32e-6,
    }
    out = io.StringIO()
    show.bench(result, out)
    text = out.getvalue()
    assert "1.32e-06x" in text and "0.00x" not in text
    assert "0.00012" in text and "91" in text


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


BENCHMARK_LAYERS = ROOT / "benchmarks" / "layers.json"
SHARED_LAYERS = ROOT.parent / "shared" / "benchmarks" / "layers.json"  # the list the project was given, if beside it


def test_builtin_layers_match_the_benchmark_list():
    """Every benchmark layer (benchmarks/layers.json) is a built-in layer with the same shapes and hyper-parameters."""
    benchmark = json.loads(BENCHMARK_LAYERS.read_text())["layers"]
    assert len(benchmark) >= 10
    builtin = {name: builtin_layer(name) for name in layer_names()}
    for entry in benchmark:
        layer = builtin[entry["name"]]
        assert layer.input_shape[1:] == tuple(entry["x"])
        assert layer.weight_shape == tuple(entry["w"])
        assert (layer.stride, layer.padding) == (entry["stride"], entry["padding"])
        assert layer.groups == entry.get("groups", 1)
        assert layer.transposed == entry.get("transposed", False)
    extra = set(builtin) - {entry["name"] for entry in benchmark}
    assert extra == {"tiny_2d", "tiny_depthwise_2d"}  # the built-in list is the benchmark list plus tiny layers


@pytest.mark.skipif(not SHARED_LAYERS.exists(), reason=f"{SHARED_LAYERS} is absent: the repository is not beside "
                    "the shared folder it was created from, so there is no original to compare its copy with")
def test_benchmark_list_is_the_shared_one():
    """benchmarks/layers.json is a copy of ../shared/benchmarks/layers.json (where that file exists)."""
    assert json.loads(BENCHMARK_LAYERS.read_text()) == json.loads(SHARED_LAYERS.read_text())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["derive", "kfac-reduce", "--input", "8,4,5,5.5"], "--input: expected comma-separated integers, got '8,4,5,5.5'"),
        (["derive", "kfac-reduce", "--input", "8,0,5,5"], "--input: expected integers >= 1"),
        (["derive", "kfac-reduce", "--input", "8,4"], "--input: expected (N, C_in, *spatial)"),
        (["derive", "forward", "--kernel", "3,3,3", "--input", "1,2,5,5"], "--kernel: expected 1 or 2 integers"),
        (["derive", "convolve"], "ROUTINE: unknown routine 'convolve'"),
        (["derive", "forward", "--layer", "resnet99"], "unknown layer 'resnet99'"),
        (["derive", "forward", "--input", "2,4,9,9", "--groups", "3"], "in_channels=4 must be divisible by groups=3"),
        (["derive", "forward", "--input", "2,4,3,3", "--kernel", "5"], "kernel"),
        (["derive", "forward", "--layer", "tiny_2d", "--stride", "0"], "--stride: expected integers >= 1"),
        (["derive", "forward", "--layer", "tiny_2d", "--diagram", "d.jpg"], "--diagram 'd.jpg': the file name must end in"),
        (["derive", "forward", "--layer", "tiny_2d", "--optimize", "fastest"], "--optimize: unknown optimizer 'fastest'"),
        (["derive", "forward", "--layer", "tiny_2d", "--output-padding", "1"],
         "--output-padding applies to a transposed layer only"),
        (["derive", "unfold-transpose", "--layer", "vit_b16_patchify", "--check"], "use a smaller --batch or layer"),
        (["derive"], "the following arguments are required: ROUTINE"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, tmp_path):
    status, out, err = run(*argv, cwd=tmp_path)
    assert status == 2 and out == ""
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


def test_native_programs_report_what_the_kernel_runs():
    """A native kernel's FLOPs and created tensors are printed as what runs; the einsum plan is labelled not run."""
    status, out, err = run("derive", "forward", "--layer", "convnext_base_dw7", "--json", "--no-diagram")
    assert status == 0, err
    report = json.loads(out)
    assert report["strategy"] == "native:conv2d"
    result = 8 * 128 * 56 * 56
    assert report["kernel"]["created"] == [{"op": "aten.convolution", "shape": [8, 128, 56, 56], "elements": result}]
    assert report["largest_intermediate"] == result  # not the 157M of the unfolded input
    assert report["flops"] == 2 * 8 * 128 * 56 * 56 * 7 * 7
    assert report["einsum_plan"]["largest_intermediate"] == 8 * 128 * 49 * 56 * 56 and not report["einsum_plan"]["runs"]
    status, out, err = run("derive", "forward", "--layer", "convnext_base_dw7", "--no-diagram")
    compiled = out[out.index("== compiled =="):]
    assert f"largest tensor created  {result:,} elements" in compiled
    plan = compiled[compiled.index("einsum plan (not run"):]
    assert "largest intermediate  157,351,936 elements" in plan
    assert "157,351,936" not in compiled[: compiled.index("einsum plan (not run")]


def test_kernel_cost_counts_padded_copies_and_results():
    """Program.kernel_cost: a pad the kernel cannot do is a created tensor; an einsum program has no kernel cost."""
    import tnconv

    same = tnconv.compile(tnconv.conv_network("forward", (2, 3, 8, 8), 2, 4, padding="same"))
    cost = same.kernel_cost()
    assert same.strategy == "native:conv2d"
    assert [(c.op, c.shape) for c in cost.created] == [("aten.constant_pad_nd", (2, 3, 9, 9)),
                                                      ("aten.convolution", (2, 4, 8, 8))]
    assert cost.largest == 2 * 4 * 8 * 8 and cost.flops == 2 * 2 * 4 * 8 * 8 * 3 * 2 * 2
    unfold = tnconv.compile(tnconv.conv_network("unfold", (2, 3, 8, 8), 3, padding=1))
    assert unfold.kernel_cost().flops == 0 and unfold.kernel_cost().largest == 2 * 27 * 64
    for op in ("forward", "input_vjp", "weight_vjp"):  # grouped: C_in/G input channels per output channel
        grouped = tnconv.compile(tnconv.conv_network(op, (2, 8, 9, 9), 3, 4, stride=2, groups=4))
        assert grouped.strategy.startswith("native:")
        assert grouped.kernel_cost().flops == 2 * 2 * 4 * 2 * 4 * 4 * 3 * 3
    reduce = tnconv.compile(tnconv.conv_network("kfac_reduce", (2, 3, 8, 8), 3))
    assert reduce.strategy.startswith("einsum") and reduce.kernel_cost() is None


def test_check_of_a_native_kernel_compares_with_its_einsum_plan(monkeypatch):
    """--check on a native routine also compares with the einsum plan in float64, and fails when they differ."""
    from tnconv.programs.program import Program

    status, out, err = run("derive", "input-vjp", "--layer", "tiny_depthwise_2d", "--check", "--no-diagram")
    assert status == 0, err
    assert "passed  vs PyTorch" in out and "passed  vs einsum plan" in out
    original = Program.run_einsum_plan
    monkeypatch.setattr(Program, "run_einsum_plan", lambda self, **operands: original(self, **operands) * (1 + 1e-8))
    status, out, _ = run("derive", "input-vjp", "--layer", "tiny_depthwise_2d", "--check", "--no-diagram")
    assert status == 1
    assert "FAILED" in out and "FAILED  vs einsum plan" in out and "passed  vs PyTorch" in out


def test_run_einsum_plan_is_the_einsum_path():
    """Program.run_einsum_plan agrees with the native kernel without calling it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import tnconv

    class Ops(TorchDispatchMode):
        """Records the aten ops that run."""

        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    program = tnconv.compile(tnconv.conv_network("weight_vjp", (2, 4, 7, 6), (3, 2), 6, stride=2, groups=2))
    x, v = torch.randn(2, 4, 7, 6, dtype=torch.float64), torch.randn(2, 6, 3, 3, dtype=torch.float64)
    with Ops() as native:
        expected = program(X=x, V=v)
    with Ops() as einsum:
        program_plan = program.run_einsum_plan(X=x, V=v)
    assert "aten.convolution_backward" in native.names and not any("convolution" in op for op in einsum.names)
    assert torch.allclose(program_plan, expected, rtol=1e-12, atol=1e-12)
    symbolic = tnconv.compile(tnconv.Network.from_einsum("ij,jk->ik", "A", "B"))
    with pytest.raises(ValueError, match="needs a concrete program"):
        symbolic.run_einsum_plan(torch.ones(2, 3), torch.ones(3, 4))


@pytest.mark.parametrize("routine, divisor", [("kfac-reduce", 8 * 81**2), ("kfac-expand", 8 * 81)])
def test_kfac_derivations_state_the_scaling_and_shape(routine, divisor):
    """The KFAC routines say their sum is unnormalised, how the factor is scaled, and its (G, d, d) shape."""
    status, out, err = run("derive", routine, "--layer", "tiny_2d", "--no-diagram")
    assert status == 0, err
    formula = "1/(N*T^2) = 1/(8*81^2)" if routine == "kfac-reduce" else "1/(N*T) = 1/(8*81)"
    assert f"{formula} = 1/{divisor:,}" in out and "without normalisation" in out
    assert "(G, d, d) = (1, 36, 36)" in out and "N = 8 samples, T = 81 output locations" in out
    status, out, _ = run("derive", routine, "--layer", "tiny_2d", "--no-diagram", "--json")
    scaling = json.loads(out)["scaling"]
    assert scaling["divisor"] == divisor and scaling["shape"] == [1, 36, 36]


@pytest.mark.parametrize("op", ["kfac_reduce", "kfac_expand"])
def test_stated_kfac_scaling_gives_the_curvature_factor(op):
    """The network's sum times the stated scale, reshaped to the stated shape, is tnconv.curvature's factor."""
    from tnconv.curvature import kfac_expand_factor, kfac_reduce_factor

    layer = builtin_layer("tiny_depthwise_2d", batch=3)
    derivation = derive(op.replace("_", "-"), layer)
    status, out, err = run("derive", op, "--layer", "tiny_depthwise_2d", "--batch", "3", "--no-diagram", "--json")
    assert status == 0, err
    scaling = json.loads(out)["scaling"]
    x = torch.randn(layer.input_shape, dtype=torch.float64)
    factor = (derivation.program(X=x) / scaling["divisor"]).reshape(scaling["shape"])
    function = kfac_reduce_factor if op == "kfac_reduce" else kfac_expand_factor
    expected = function(x, layer.kernel_size, stride=layer.stride, padding=layer.padding, groups=layer.groups)
    assert scaling["function"] == f"tnconv.curvature.{function.__name__}"
    assert torch.allclose(factor, expected, rtol=1e-10, atol=1e-12)


def test_flops_are_exact_integers_or_marked_as_estimates():
    """A native kernel's FLOPs print exactly at any size; an einsum-plan figure beyond 2**53 prints as 'about'."""
    channels = 2**24  # input and output of 2**27 numbers, weight of 3 * 2**48 (never allocated without --check)
    status, out, err = run("derive", "forward", "--input", f"1,{channels},8", "--no-diagram")
    assert status == 0, err
    exact = 2 * channels * channels * 6 * 3
    assert f"flops     {exact:,} " in out
    plan = out[out.index("einsum plan (not run"):]
    assert "flops     about " in plan
    from tnconv.cli.show import count

    assert count(2**60 + 1) == f"{2**60 + 1:,}" and count(2**60, exact=False) == "about 1.15e+18"


def test_derive_shows_which_evaluation_of_a_costed_shortcut_runs():
    """per-sample-grad-norm: its shortcut (the per-sample gradients) where locations are many, the location-pair
    network where they are few; formulas for a symbolic layer; nothing for a routine whose shortcut always runs."""
    layer = ["--kernel", "3", "--padding", "1", "--no-diagram"]
    status, out, err = run("derive", "per-sample-grad-norm", "--input", "2,64,4,4", *layer)
    assert status == 0, err
    assert "shortcut  N*C_in*K*C_out*(T + 1)/G = 1,253,376" in out  # 2*64*9*64*17
    assert "network   N*T^2*(C_in*K + C_out + G) = 328,192" in out  # 2*256*641
    assert "runs      the whole network" in out
    status, out, _ = run("derive", "per-sample-grad-norm", "--input", "2,8,16,16", *layer, "--json")
    costs = json.loads(out)["costs"]
    assert costs["runs"] == "shortcut" and costs["shortcut"]["value"] == 2 * 8 * 9 * 8 * 257
    status, out, _ = run("derive", "per-sample-grad-norm", "--input", "N,8,H,W", *layer)
    assert "runs      the cheaper one for the sizes it is called with" in out and "N*T^2" in out
    status, out, _ = run("derive", "sum-grad-squared", "--input", "2,8,4,4", *layer)
    assert status == 0 and "which evaluation runs" not in out


@pytest.mark.parametrize(
    "argv",
    [["layers"], ["derive", "forward", "--layer", "tiny_2d", "--no-diagram"],
     ["curvature", "lin.py:make", "--input", "2,4", "--no-timing"]],
    ids=["layers", "derive", "curvature"],
)
def test_a_reader_gone_away_ends_every_command_quietly(argv, tmp_path):
    """``tnconv layers | head -1``: no message, status 141 (128 + SIGPIPE) as for ``ls | head -1``."""
    (tmp_path / "lin.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2)\n", encoding="utf-8")
    assert with_stdout_unread(argv, cwd=tmp_path) == (EXIT_BROKEN_PIPE, "")


class GoneAway(io.StringIO):
    """A stdout whose reader went away: every write fails as on a closed pipe."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_pipe_is_no_error():
    err = io.StringIO()
    assert main(["derive", "forward", "--layer", "tiny_2d", "--no-diagram"], GoneAway(), err) == EXIT_BROKEN_PIPE
    assert err.getvalue() == ""
