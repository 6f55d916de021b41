"""``tnconv curvature MODEL``: one row per supported layer with KFAC's factor shapes, the A routine and its cost,
the time and memory of an update; flags checked without torch; the user's file and factory errors named."""

from __future__ import annotations

import json
import re
import textwrap
from unittest import mock

import pytest
import torch
from cli_run import heavy_imports, one_line_error, run, torch_at_first_write
from support.flops import counted_products
from support.gram_plans import planned

from tnconv.cli import curvature
from tnconv.curvature import KFAC
from tnconv.curvature import kfac as kfac_module
from tnconv.curvature import patches as patches_module
from tnconv.curvature.factors import input_factor

# a model with every kind of supported layer: a transposed conv, a grouped conv with reflect padding (from
# tnconv.nn), a Linear on locations (N, T, C), a Linear without bias, and a frozen layer (no curvature)
MODEL = textwrap.dedent(
    """
    import torch
    import tnconv.nn


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1)
            self.conv = tnconv.nn.Conv2d(4, 6, 3, groups=2, padding=1, padding_mode="reflect")
            self.frozen = torch.nn.Conv2d(6, 6, 1).requires_grad_(False)
            self.mix = torch.nn.Linear(6, 5)
            self.head = torch.nn.Linear(5, 3, bias=False)

        def forward(self, x):
            y = self.frozen(self.conv(torch.relu(self.up(x))))
            y = self.mix(y.flatten(2).transpose(1, 2))
            return self.head(y.mean(1))


    def make():
        return Net()


    NOT_CALLABLE = 3


    def not_a_module():
        return "model"


    def no_layers():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU())


    def image_output():
        return torch.nn.Conv2d(3, 2, 1)
    """
)
NAMES = ["up", "conv", "mix", "head"]
INPUT = (2, 3, 4, 4)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(MODEL, encoding="utf-8")
    return path


def _json(*argv: str) -> dict:
    status, out, err = run("curvature", *argv, "--json")
    assert status == 0, err
    assert err == ""  # no progress bar with --json
    return json.loads(out)


def _kfac_shapes(model_file, approx: str = "expand") -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The factor shapes of KFAC itself on the file's model (bias entries left out)."""
    namespace: dict = {}
    exec(compile(model_file.read_text(), str(model_file), "exec"), namespace)
    kfac = KFAC(namespace["make"](), torch.nn.CrossEntropyLoss(), approx=approx)
    kfac.update(torch.randn(INPUT), torch.randint(0, 3, (INPUT[0],)))
    return {name: (tuple(a.shape), tuple(b.shape)) for name, (a, b) in kfac.factors.items() if a is not None}


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_one_row_per_supported_layer_with_kfacs_factor_shapes(model_file, approx):
    report = _json(f"{model_file}:make", "--input", ",".join(map(str, INPUT)), "--approx", approx, "--no-timing")
    rows = report["layers"]
    assert [row["name"] for row in rows] == NAMES
    assert {row["name"]: (tuple(row["A"]), tuple(row["B"])) for row in rows} == _kfac_shapes(model_file, approx)
    by_name = {row["name"]: row for row in rows}
    assert by_name["up"]["type"] == "ConvTranspose2d" and by_name["conv"]["groups"] == 2
    assert by_name["conv"]["input_shape"] == [2, 4, 10, 10]  # what the layer got, not its reflect-padded copy
    assert by_name["mix"]["input_shape"] == [2, 100, 6] and by_name["head"]["bias"] is False
    assert [row["routine"] for row in rows] == [f"kfac_{approx}"] * 2 + ["linear"] * 2
    assert report["classes"] == 3 and report["update"] is None and rows[0]["seconds"] is None


# convs whose small patches a native kernel forms (no FLOPs), a Linear on locations, a Linear head
UNFOLDED = textwrap.dedent(
    """
    import torch


    def make():
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, stride=2, groups=2),
            torch.nn.Flatten(2), torch.nn.Linear(9, 5), torch.nn.Flatten(), torch.nn.Linear(30, 3),
        )
    """
)
UNFOLDED_INPUT = (2, 3, 8, 8)  # the Linear sees (2, 6, 9): 6 locations of 9 features


def _update_products(model: torch.nn.Module, approx: str) -> tuple[int, list[int]]:
    """The FLOPs of the Gram products one ``KFAC.update`` runs for the ``A`` factors (``support.flops``), in all and
    per layer."""
    kfac = KFAC(model, torch.nn.CrossEntropyLoss(), approx=approx)
    per_layer = []

    def counted_input_factor(*args, **kwargs):
        products.counting = True
        before = products.flops
        result = input_factor(*args, **kwargs)
        products.counting = False  # B's Gram runs the same products
        per_layer.append(products.flops - before)
        return result

    with counted_products() as products, mock.patch.object(kfac_module, "input_factor", counted_input_factor):
        products.counting = False
        kfac.update(torch.randn(UNFOLDED_INPUT), torch.randint(0, 3, (UNFOLDED_INPUT[0],)))
    return products.flops, per_layer


@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("chunk", [50, 10**9])
def test_the_a_flops_are_those_of_what_update_runs(tmp_path, approx, chunk):
    """The printed ``A`` FLOPs count what ``KFAC.update`` runs for ``A`` (the routines' shortcuts: patches in
    chunks of samples or patch sums, then a symmetric Gram by panels), not the whole derived network: the
    Gram's part equals the products one update runs, counted where they run."""
    path = tmp_path / "unfolded.py"
    path.write_text(UNFOLDED, encoding="utf-8")
    argv = (f"{path}:make", "--input", ",".join(map(str, UNFOLDED_INPUT)), "--approx", approx, "--no-timing")
    with planned(chunk=chunk, whole=False):
        report = _json(*argv)
        status, out, err = run("curvature", *argv)
        namespace: dict = {}
        exec(compile(UNFOLDED, str(path), "exec"), namespace)
        counted, per_layer = _update_products(namespace["make"](), approx)
    assert status == 0, err
    rows = report["layers"]
    assert [row["gram_flops"] for row in rows] == per_layer
    assert sum(row["gram_flops"] for row in rows) == counted
    assert all(row["flops"] == row["part_flops"] + row["gram_flops"] for row in rows)
    printed = int(re.search(r"A FLOPs ([\d,]+)", out).group(1).replace(",", ""))
    assert printed == report["totals"]["flops"] == sum(row["flops"] for row in rows)
    conv, strided = rows[:2]
    if approx == "expand":
        assert printed == counted  # small patches come from F.unfold (below VIEWS_FROM): no FLOPs
        assert conv["strategy"].startswith("patches (native:unfold2d)") and conv["kernel"] == "unfold2d"
        assert all((" in 2 chunks + " in row["strategy"]) == (chunk == 50) for row in (conv, strided))  # 1 sample each
        assert [row["strategy"] for row in rows[2:]] == ["gram symmetrized"] * 2
    else:
        assert conv["strategy"].startswith("patch sums (") and rows[2]["strategy"] == "location sums + gram symmetrized"
        assert rows[2]["part_flops"] == 2 * (6 - 1) * 9  # 2 samples' sums over 6 locations of 9 features


def test_text_rows_match_the_json_rows(model_file):
    argv = (f"{model_file}:make", "--input", "2,3,4,4", "--no-timing")
    status, out, err = run("curvature", *argv)
    assert status == 0, err
    rows = _json(*argv)["layers"]
    lines = out.splitlines()
    assert lines[0] == f"tnconv curvature {model_file}:make   (factory 'make' of {model_file})"
    table = lines[lines.index(next(line for line in lines if line.startswith("layer "))) + 1:][: len(rows)]
    for line, row in zip(table, rows):
        words = re.split(r"\s{2,}", line.strip())  # cells are 2+ spaces apart; a strategy has single spaces
        assert words[:4] == [row["name"], row["type"], "yes" if row["bias"] else "no",
                             "(" + ",".join(map(str, row["input_shape"])) + ")"]
        assert words[4:8] == ["(" + ",".join(map(str, row["A"])) + ")", "(" + ",".join(map(str, row["B"])) + ")",
                              row["routine"], row["strategy"]]
        assert words[8] == f"{row['flops']:,}"
    assert "(--no-timing: no update ran)" in out
    assert err.endswith(f"{len(rows)}/{len(rows)} head    \n") and "curvature [" in err


def test_timing_reports_the_update_and_each_layer(model_file):
    report = _json(f"{model_file}:make", "--input", "2,3,4,4", "--repeats", "2", "--fisher", "mc", "--loss", "mse",
                   "--threads", "1")
    update = report["update"]
    assert update["repeats"] == 2 and report["threads"] == 1
    assert 0 < update["seconds"]["min"] <= update["seconds"]["median"] <= update["seconds"]["max"]
    assert update["peak_bytes"] > 0 and "torch.profiler" in update["memory_method"]
    for row in report["layers"]:
        assert row["seconds"] > 0 and 0 < row["peak_bytes"] <= update["peak_bytes"]
    # the factors (A, B) of a layer are at least what its factors take (float32), made inside its range
    up = report["layers"][0]
    assert up["peak_bytes"] >= 4 * (27**2 + 4**2)


def test_threads_are_restored(model_file):
    before = torch.get_num_threads()
    report = _json(f"{model_file}:make", "--input", "2,3,4,4", "--no-timing", "--threads", "1")
    assert report["threads"] == 1 and torch.get_num_threads() == before


def test_text_report_with_timing(model_file):
    status, out, err = run("curvature", f"{model_file}:make", "--input", "2,3,4,4", "--repeats", "1")
    assert status == 0, err
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    assert header.split()[-2:] == ["time", "memory"]
    assert re.search(r"^update: \S+ [mu]s median \(min .*; 1 run after a warm-up", out, re.MULTILINE)
    assert "extra peak memory of one update: " in out
    assert err.rstrip().endswith("7/7 memory")  # 4 layers, warm-up, 1 timed update, the profiled one


def test_peak_memory_follows_allocations_and_frees():
    """The profiler-based peak: the highest level of allocated minus freed bytes, per marked range too."""
    from tnconv.cli.curvature_measure import LAYER_MARK, peak_memory

    def work():
        kept = torch.empty(1000)  # 4,000 bytes
        with torch.profiler.record_function(LAYER_MARK + "inner"):
            temporary = torch.empty(3000)  # 12,000 bytes, freed at once
            del temporary
            small = torch.empty(500)  # 2,000 bytes
        del kept, small

    peak, layers = peak_memory(work)
    assert peak == 16_000 and layers == {"inner": 12_000}


def test_builtin_model_takes_classes_and_input_channels():
    """--classes and the input's channels go to the built-in factory (a small input keeps it fast)."""
    report = _json("resnet18_cifar", "--input", "2,1,8,8", "--classes", "4", "--no-timing")
    rows = {row["name"]: row for row in report["layers"]}
    assert len(rows) == 21 and report["model"] == "resnet18-cifar"
    assert rows["conv1"]["A"] == [1, 9, 9] and rows["fc"]["B"] == [1, 4, 4] and rows["fc"]["A"] == [1, 512, 512]
    assert rows["layer4.1.conv2"]["A"] == [1, 4608, 4608] and rows["layer4.1.conv2"]["input_shape"] == [2, 512, 1, 1]


@pytest.mark.parametrize(
    "argv",
    [
        ["curvature", "--help"],
        ["curvature", "resnet18"],
        ["curvature", "missing.py:make", "--input", "2,3,8,8"],
        ["curvature", "resnet18-cifar", "--input", "2,3,32"],
        ["curvature", "resnet18-cifar", "--no-timing", "--repeats", "2"],
        ["curvature", "resnet18-cifar", "--fisher", "typ-2"],
    ],
    ids=["help", "model-typo", "missing-file", "input-dims", "repeats-no-timing", "fisher-choice"],
)
def test_answers_without_importing_torch(argv):
    assert heavy_imports(argv) == (0 if argv[-1] == "--help" else 2, [])


def test_the_header_comes_once_the_model_is_loaded(tmp_path):
    (tmp_path / "lin.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2)\n", encoding="utf-8")
    argv = ["curvature", "lin.py:make", "--input", "2,4", "--no-timing"]
    assert torch_at_first_write(argv, "total: 1 layer,", cwd=tmp_path) == (0, True, True)
    status, out, err = run(*argv, cwd=tmp_path)
    assert status == 0 and out.startswith("tnconv curvature lin.py:make   (factory 'make' of lin.py)\ninput (2,4)")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18"], "MODEL: unknown built-in model 'resnet18'; did you mean 'resnet18-cifar'?"),
        (["missing.py:make", "--input", "2,3,8,8"], "MODEL: file 'missing.py' does not exist"),
        (["net.py", "--input", "2,3,8,8"], "MODEL: 'net.py' names a file but no factory; give net.py:FACTORY"),
        (["net.py:1make", "--input", "2,3,8,8"], "MODEL: the factory after ':' must be a Python name, got '1make'"),
        ([".:make", "--input", "2,3,8,8"], "MODEL: '.' is not a file"),
        (["net.py:make"], "--input: required for a model from a file"),
        (["vgg19-cifar", "--input", "2,3,32"], "--input: vgg19-cifar takes (N, C, H, W) images, got 2,3,32"),
        (["vgg19-cifar", "--input", "2"], "argument --input: expected the batch and at least one more dim"),
        (["vgg19-cifar", "--input", "2,0,3"], "argument --input: expected integers >= 1, got '2,0,3'"),
        (["vgg19-cifar", "--classes", "0"], "argument --classes: expected integers >= 1, got '0'"),
        (["vgg19-cifar", "--no-timing", "--repeats", "2"], "--repeats times the updates, which --no-timing skips"),
        (["vgg19-cifar", "--approx", "exp"], "argument --approx: invalid choice: 'exp'"),
        (["vgg19-cifar", "--loss", "nll"], "argument --loss: invalid choice: 'nll'"),
        (["vgg19-cifar", "--threds", "2"], "unrecognized arguments: --threds 2; did you mean '--threads'?"),
    ],
)
def test_flags_are_checked_before_any_work(argv, message, model_file):
    status, out, err = run("curvature", *argv, cwd=model_file.parent)
    assert status == 2 and out == ""
    assert message in one_line_error(err)


@pytest.mark.parametrize(
    "factory, message",
    [
        ("mak", "MODEL: 'net.py' defines no 'mak'; did you mean 'make'?"),
        ("NOT_CALLABLE", "MODEL: 'NOT_CALLABLE' in 'net.py' is a int, not a callable"),
        ("not_a_module", "MODEL: net.py:not_a_module() returned a str, not a torch.nn.Module"),
        ("no_layers", "MODEL: net.py:no_layers: model has no supported layer with a trainable weight"),
        ("image_output", "MODEL: net.py:image_output must return (N, C) logits or predictions, got shape (2, 2, 4, 4)"),
    ],
)
def test_the_files_factory_and_model_errors_are_named(factory, message, model_file):
    status, out, err = run("curvature", f"net.py:{factory}", "--input", "2,3,4,4", "--no-timing",
                           cwd=model_file.parent)
    assert status == 2 and out == ""  # no header before the error
    assert message in one_line_error(err)


def test_errors_of_the_users_file_and_model_are_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\nundefined_name\n", encoding="utf-8")
    status, out, err = run("curvature", "broken.py:make", "--input", "2,3", cwd=tmp_path)
    assert status == 2
    assert "MODEL: loading 'broken.py' failed: NameError: name 'undefined_name' is not defined" in one_line_error(err)
    (tmp_path / "bad.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2)\n", encoding="utf-8")
    status, out, err = run("curvature", "bad.py:make", "--input", "2,3", cwd=tmp_path)
    assert status == 2
    assert "MODEL: bad.py:make on an input of shape (2, 3): RuntimeError: mat1 and mat2" in one_line_error(err)
    status, out, err = run("curvature", "bad.py:make", "--input", "2,4", "--classes", "5", cwd=tmp_path)
    assert status == 2 and out == ""
    assert "--classes 5: the model outputs 2 classes (shape (2, 2)); give --classes 2" in one_line_error(err)


def test_a_model_file_can_import_its_neighbours(tmp_path):
    (tmp_path / "neighbour_of_uses.py").write_text("import torch\nWIDTH = 3\n", encoding="utf-8")
    code = "import torch\nfrom neighbour_of_uses import WIDTH\ndef make():\n    return torch.nn.Linear(4, WIDTH)\n"
    (tmp_path / "uses.py").write_text(code, encoding="utf-8")
    report = _json(str(tmp_path / "uses.py") + ":make", "--input", "2,4", "--no-timing")
    assert report["layers"][0]["B"] == [1, 3, 3]


def test_light_copies_match_the_library():
    from tnconv import models
    from tnconv.curvature.columns import FISHERS
    from tnconv.curvature.kfac import APPROXES

    assert curvature.APPROXES == APPROXES and curvature.FISHERS == FISHERS
    for factory, _ in curvature.BUILTIN_MODELS.values():
        assert callable(getattr(models, factory)) and factory in models.__all__
