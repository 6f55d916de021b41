"""The command line's arguments: answered without torch, names in either spelling with a hint for a typo,
every flag checked before any work, conflicts named by their flags, sizes within int64."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cli_run import heavy_imports, one_line_error, run, torch_at_first_write

import tnconv
from tnconv.cli.arguments import parse, request
from tnconv.routines import TABLE


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["derive", "--help"],
        ["layers"],
        ["derive", "kfac-reduse"],
        ["derive", "forward", "--kernal", "3"],
        ["derive", "forward", "--layer", "tiny_2d", "--diagram", "x.jpg"],
        ["derive", "forward", "--layer", "tiny_2d", "--input", "8,4,9"],
        ["derive", "forward", "--input", "99999999999999999999,3,8,8"],
    ],
    ids=["help", "derive-help", "layers", "routine-typo", "flag-typo", "diagram-suffix", "dims", "int64"],
)
def test_answers_without_importing_torch(argv):
    """--help, layers and argument errors import neither torch nor the IR's libraries (they answer at once)."""
    assert heavy_imports(argv) == (0 if argv[-1] in ("--help", "layers") else 2, [])


def test_derive_prints_its_header_before_importing_torch():
    """The main job starts its output before the heavy imports (and then runs to the end)."""
    argv = ["derive", "forward", "--layer", "tiny_2d", "--no-diagram"]
    assert torch_at_first_write(argv, "== compiled ==") == (0, False, True)


@pytest.mark.parametrize("spelling", ["kfac_reduce", "kfac-reduce"])
def test_routines_take_either_spelling(spelling, tmp_path):
    status, out, err = run("derive", spelling, "--layer", "tiny_2d", "--no-diagram")
    assert status == 0, err
    assert out.startswith("tnconv derive kfac-reduce   (conv_network op 'kfac_reduce')")


@pytest.mark.parametrize("op", [op for op in TABLE if "_" in op])
def test_conv_network_takes_either_spelling(op):
    hyphen = op.replace("_", "-")
    kwargs = {"input_shape": (2, 4, 6, 6), "kernel_size": 3, "out_channels": 4}
    assert tnconv.conv_network(hyphen, **kwargs).dump() == tnconv.conv_network(op, **kwargs).dump()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["derive", "kfac-reduse"], "ROUTINE: unknown routine 'kfac-reduse'; did you mean 'kfac-reduce'?"),
        (["derive", "per_sample_grads"], "did you mean 'per-sample-grad'?"),
        (["derive", "forward", "--layer", "tiny2d"], "--layer: unknown layer 'tiny2d'; did you mean 'tiny_2d'?"),
        (["derive", "forward", "--kernal", "3"], "unrecognized arguments: --kernal 3; did you mean '--kernel'?"),
        (["derive", "forward", "--optimize", "greedi"], "--optimize: unknown optimizer 'greedi'; did you mean 'greedy'?"),
    ],
)
def test_typos_get_the_closest_name(argv, message):
    status, out, err = run(*argv)
    assert status == 2 and out == ""
    assert message in one_line_error(err)


def test_conv_network_suggests_the_closest_op():
    with pytest.raises(ValueError, match=r"^op: unknown routine 'kfac_reduse'; did you mean 'kfac_reduce'\? \(choose"):
        tnconv.conv_network("kfac_reduse", (2, 3, 8, 8), 3)
    with pytest.raises(ValueError, match=r"^op: unknown routine 'xyz' \(choose from forward, input_vjp, "):
        tnconv.conv_network("xyz", (2, 3, 8, 8), 3)


def test_builtin_layers_take_either_spelling():
    status, out, err = run("derive", "forward", "--layer", "tiny-depthwise-2d", "--no-diagram")
    assert status == 0, err
    assert "layer  tiny_depthwise_2d: Conv2d" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--diagram", "x.jpg"], "--diagram 'x.jpg': the file name must end in one of .svg, .png, .pdf, .dot, .gv"),
        (["--diagram", "missing/d.svg"], "--diagram 'missing/d.svg': folder 'missing' does not exist"),
        (["--diagram", "folder.svg"], "--diagram 'folder.svg': that is a folder, not a file"),
        (["--diagram", "d.svg", "--no-diagram"], "--diagram and --no-diagram contradict each other"),
        (["--repeats", "3"], "--repeats applies to --bench only"),
        (["--ggn-columns", "3"], "--ggn-columns applies to diag-ggn only, not to forward"),
        (["--input", "1,2,3,4,5,6", "--kernel", "1", "--check"], "--check: PyTorch has no 4-d convolution"),
        (["--input", "1,2,3,4,5,6", "--kernel", "1", "--bench"], "--bench: PyTorch has no 4-d convolution"),
    ],
)
def test_flags_are_checked_before_any_work(flags, message, tmp_path):
    """A bad flag is reported, naming it, before anything is derived or printed."""
    (tmp_path / "folder.svg").mkdir()
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", *flags, cwd=tmp_path)
    assert status == 2
    assert out == ""
    assert message in one_line_error(err)


@pytest.mark.parametrize(
    "target, message",
    [
        ("/proc/tnconv-diagram.svg", "--diagram '/proc/tnconv-diagram.svg': cannot write there (No such file"),
        ("x" * 300 + ".svg", "--diagram 'xxxx"),
        ("", "--diagram '': the file name must end in one of .svg"),
    ],
    ids=["proc", "name-too-long", "empty"],
)
def test_a_diagram_that_cannot_be_written_is_refused_first(target, message, tmp_path):
    """Writing is tried before any work (root may write where ``os.access`` says it may, and still fail)."""
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--diagram", target, cwd=tmp_path)
    assert status == 2 and out == ""
    assert message in one_line_error(err)
    assert "cannot write there (File name too long)" in err or len(target) < 300
    assert not list(tmp_path.iterdir())


def test_the_write_trial_leaves_an_existing_diagram_as_it_was(tmp_path):
    (tmp_path / "d.svg").write_text("old", encoding="utf-8")
    assert request(parse(["derive", "forward", "--layer", "tiny_2d", "--diagram", str(tmp_path / "d.svg")])).diagram
    assert (tmp_path / "d.svg").read_text(encoding="utf-8") == "old"
    assert request(parse(["derive", "forward", "--layer", "tiny_2d", "--diagram", str(tmp_path / "new.svg")])).diagram
    assert sorted(path.name for path in tmp_path.iterdir()) == ["d.svg"]


def test_a_raster_diagram_without_matplotlib_is_refused_first(monkeypatch, tmp_path):
    from tnconv.cli import arguments

    real = arguments.importlib.util.find_spec
    monkeypatch.setattr(arguments.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--diagram", "d.png", cwd=tmp_path)
    assert status == 2 and out == ""
    assert "--diagram 'd.png': .png needs matplotlib (pip install matplotlib); .svg and .dot need nothing" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--layer", "tiny_2d", "--input", "8,4,9"],
         "--input has 1 spatial dim but --layer tiny_2d has a 2-d kernel (3,3); give --kernel too"),
        (["--layer", "c3d_conv1_3d", "--input", "2,3,8,8"],
         "--input has 2 spatial dims but --layer c3d_conv1_3d has a 3-d kernel (3,3,3); give --kernel too"),
        (["--layer", "tiny_2d", "--stride", "1,2,3"], "--stride: expected 1 or 2 integers for a 2-d input, got 1,2,3"),
        (["--input", "2,3,8", "--dilation", "1,2"], "--dilation: expected 1 integer for a 1-d input, got 1,2"),
        (["--input", "99999999999999999999,3,8,8"], "--input: '99999999999999999999,3,8,8' has a size beyond int64"),
        (["--input", f"{2**62},3,8,8"],
         f"the layer input ({2**62},3,8,8) has {2**62 * 192:,} elements, more than a tensor can hold (2**63-1)"),
        (["--layer", "tiny_2d", "--batch", f"{2**62}"], "more than a tensor can hold (2**63-1); use a smaller --input"),
        (["--input", "2,3,8,8", "--out-channels", f"{2**62}"], "the layer weight"),
    ],
)
def test_conflicts_and_sizes_name_their_flags(flags, message):
    status, out, err = run("derive", "forward", *flags, "--no-diagram")
    assert status == 2 and out == ""
    assert message in one_line_error(err)


def test_input_with_a_kernel_for_its_dims_overrides_a_builtin_layer():
    status, out, err = run("derive", "forward", "--layer", "tiny_2d", "--input", "8,4,9", "--kernel", "3",
                           "--check", "--no-diagram")
    assert status == 0, err
    assert "x=(8,4,9) w=(6,4,3)" in out and "PASSED" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--input", "2,4,9,9", "--groups", "3"], "--input, --groups: in_channels=4 must be divisible by groups=3"),
        (["--layer", "tiny_depthwise_2d", "--input", "2,5,9,9"], "--input: in_channels=5 must be divisible by groups=6"),
        (["--layer", "tiny_2d", "--padding", "same", "--stride", "2"],
         "--padding, --stride: padding='same' needs stride 1 in every dim, got stride=(2, 2)"),
        (["--input", "2,4,3,3", "--kernel", "5"], "--kernel: kernel_size=(5, 5) (dilation=(1, 1)) spans 5 pixels"),
        (["--layer", "tiny_2d", "--padding", "9", "--padding-mode", "reflect"],
         "--padding-mode, --padding: padding_mode='reflect' needs padding smaller than the input size"),
        (["--layer", "tiny_2d", "--transposed", "--output-padding", "1"],
         "--output-padding: output_padding must be smaller than max(stride, dilation)"),
        (["--layer", "tiny_2d", "--padding", "10000000"], "--padding: padding=10000000 with input shape (8, 4, 9, 9)"),
        (["--input", "N,4,H,W", "--groups", "3"], "--input, --groups: in_channels=4 must be divisible by groups=3"),
    ],
    ids=["groups", "layer-groups", "same-stride", "kernel", "reflect", "output-padding", "elements", "symbolic"],
)
def test_library_errors_name_their_flags_before_any_output(flags, message):
    """What only conv_hyper can judge is one line on stderr led by the flags it concerns, status 2, no header."""
    status, out, err = run("derive", "forward", *flags, "--no-diagram")
    assert status == 2 and out == ""
    assert message in one_line_error(err)


def test_library_errors_blame_what_they_name(monkeypatch):
    """The given flags among those the library's message names, else the first it names."""
    from tnconv.cli.layers import builtin_layer, library_checked

    layer = builtin_layer("tiny_2d")
    with pytest.raises(ValueError, match=r"^--kernel, --padding: kernel_size="):
        library_checked(replace(layer, kernel_size=(20, 20), padding=1), {"--kernel", "--padding"})
    with pytest.raises(ValueError, match=r"^--kernel: kernel_size="):
        library_checked(replace(layer, kernel_size=(20, 20)), {"--input"})
    assert library_checked(layer, set()) is layer


def test_an_empty_input_is_named():
    status, out, err = run("derive", "forward", "--input", "", "--no-diagram")
    assert status == 2 and out == ""
    assert "argument --input: expected comma-separated integers, got ''" in one_line_error(err)


def test_check_refusals_come_before_any_output():
    """--check and --bench ask PyTorch to run the layer: whether it can is known before the header."""
    status, out, err = run("derive", "unfold-transpose", "--layer", "vit_b16_patchify", "--check", "--no-diagram")
    assert status == 2 and out == ""
    assert "--check: this layer's largest tensor (use a smaller --batch or layer) would hold" in one_line_error(err)


def test_json_output_has_no_header():
    status, out, err = run("derive", "unfold", "--layer", "tiny_2d", "--json", "--no-diagram")
    assert status == 0, err
    assert json.loads(out)["routine"] == "unfold"


def test_light_copies_match_the_library():
    """The constants the command line checks without torch are those of the library."""
    from tnconv.cli import arguments
    from tnconv.lower.optimize import OPTIMIZERS
    from tnconv.render.draw import FORMATS
    from tnconv.routines.references import REFERENCE_DIMS

    assert arguments.DIAGRAM_FORMATS == FORMATS and arguments.OPTIMIZERS == OPTIMIZERS
    assert arguments.REFERENCE_DIMS == REFERENCE_DIMS
