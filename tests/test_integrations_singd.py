"""``tnconv.integrations.singd.SINGD``: singd's optimizer with tnconv's conv statistics.

- Where singd supports the layer (``Conv2d`` with zeros padding, ``Linear``), parameters and
  preconditioners after several steps equal singd's own, for every structure, both
  ``kfac_approx``, channel groups 1 and 2 (float64 for dense and diagonal, float32 for the
  structures singd runs in float32 only).
- The layers singd lacks equal singd on a twin it has: ``Conv1d`` (and ``Conv3d``) on the
  ``Conv2d`` of height (depth) 1, padding modes and asymmetric / unequal ``"same"`` padding on
  an explicit padding module before an unpadded ``Conv2d``, ``ConvTranspose2d`` (stride 1) on
  the ``Conv2d`` with the flipped kernel.
- ``input_term`` is singd's ``K.from_inner(X=a.T)`` for the unfolded patches ``a`` of any layer
  (1-3 dims, transposed, padding modes, groups averaged), every structure.
- Nothing is unfolded: ``F.unfold`` and singd's input processing never run; a diagonal
  structure never forms the Gram or the patches.
"""

from __future__ import annotations

import copy
import math
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singd.optim.optimizer import SINGD as SingdSINGD
from support.layers import ConvLayer, conv_layers

import tnconv.nn
from tnconv.conv.hyper import conv_hyper
from tnconv.curvature import patches as tnconv_patches
from tnconv.curvature.factors import geometry
from tnconv.integrations import singd as singd_module
from tnconv.integrations import singd_inputs
from tnconv.integrations.singd import SINGD
from tnconv.routines.references import patches as unfolded_patches

STRUCTURES = tuple(SingdSINGD.SUPPORTED_STRUCTURES)
EXACT = ("dense", "diagonal")  # singd runs the other structures in float32 only
MODES = ("zeros", "reflect", "replicate", "circular")

pytestmark = pytest.mark.filterwarnings("ignore:Calling naive implementation:UserWarning")  # singd's structures


def dtype_of(structure: str) -> torch.dtype:
    return torch.float64 if structure in EXACT else torch.float32


def tolerance(structure: str) -> dict[str, float]:
    return dict(rtol=1e-9, atol=1e-12) if structure in EXACT else dict(rtol=2e-4, atol=1e-6)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          steps: int = 3) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def options(structure: str, approx: str, **changes: object) -> dict[str, object]:
    """singd's defaults, with the preconditioner updated at every step and steps large enough to matter."""
    defaults = dict(structures=(structure, structure), kfac_approx=approx, T=1, lr=0.05, lr_cov=0.5, damping=1e-3,
                    warn_unsupported=False)
    return {**defaults, **changes}


def assert_same_state(ours: SINGD, theirs: SingdSINGD, structure: str, names: dict[str, str] | None = None,
                      views: dict[str, object] | None = None) -> None:
    """Equal ``K`` and ``C`` of every layer (``names``: our layer -> theirs; ``views``: how ours reads as theirs)."""
    views = views or {}
    for name in ours.Ks:
        other = (names or {}).get(name, name)
        for ours_matrix, theirs_matrix in ((ours.Ks[name], theirs.Ks[other]), (ours.Cs[name], theirs.Cs[other])):
            mine = ours_matrix.to_dense()
            view = views.get(name)
            if view is not None and ours_matrix is ours.Ks[name]:
                mine = view(mine)
            torch.testing.assert_close(mine, theirs_matrix.to_dense(), **tolerance(structure))


def assert_same_parameters(ours: torch.nn.Module, theirs: torch.nn.Module, structure: str) -> None:
    for (name, mine), other in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(mine.reshape(other.shape), other, **tolerance(structure), msg=name)


def grouped_model(groups: int, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, padding=1, groups=groups), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, (2, 3), stride=(2, 1), dilation=(1, 2), groups=groups, bias=False), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 1, 3),
    ).to(dtype)  # fmt: skip


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("approx", ["reduce", "expand"])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_equals_singd_where_singd_supports_the_layer(structure: str, approx: str, groups: int) -> None:
    dtype = dtype_of(structure)
    model = grouped_model(groups, dtype)
    twin = copy.deepcopy(model)
    ours, theirs = SINGD(model, **options(structure, approx)), SingdSINGD(twin, **options(structure, approx))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, 6, 5, generator=generator).to(dtype)
    y = torch.randn(5, 3, generator=generator).to(dtype)
    train(model, ours, x, y)
    train(twin, theirs, x, y)
    assert_same_state(ours, theirs, structure)
    assert_same_parameters(model, twin, structure)
    assert not torch.equal(model[0].weight, grouped_model(groups, dtype)[0].weight)  # it trained


@pytest.mark.parametrize("loss_average", [None, "batch+sequence"])
@pytest.mark.parametrize("approx", ["reduce", "expand"])
def test_equals_singd_for_every_loss_average(approx: str, loss_average: str | None) -> None:
    assert_trains_as_singd(1, "dense", approx, loss_average=loss_average)


def assert_trains_as_singd(groups: int, structure: str, approx: str, **changes: object) -> tuple[SINGD, SingdSINGD]:
    """Ours and singd's optimizers (``options(structure, approx, **changes)``) after training twins of the float64
    ``grouped_model(groups)``; their states and parameters are equal."""
    model = grouped_model(groups, torch.float64)
    twin = copy.deepcopy(model)
    settings_ = options(structure, approx, **changes)
    ours, theirs = SINGD(model, **settings_), SingdSINGD(twin, **settings_)
    x, y = torch.randn(4, 4, 6, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    train(model, ours, x, y)
    train(twin, theirs, x, y)
    assert_same_state(ours, theirs, structure)
    assert_same_parameters(model, twin, structure)
    return ours, theirs


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("approx", ["reduce", "expand"])
def test_diagonal_steps_in_chunks_of_rows_equal_singd(approx: str, momentum: float,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """With diagonal ``K`` and ``C`` the natural gradient is formed a few rows at a time (``CHUNK`` of 40 elements:
    2 rows of each layer, the Linear's 3 rows as 2 and 1), with weight decay, with and without momentum."""
    monkeypatch.setattr(singd_module, "CHUNK", 40)
    ours, theirs = assert_trains_as_singd(2, "diagonal", approx, weight_decay=0.1, momentum=momentum)
    buffers = [[state["momentum_buffer"] for state in optimizer.state.values()] for optimizer in (ours, theirs)]
    assert len(buffers[0]) == len(buffers[1]) == (5 if momentum else 0)  # one per parameter, as singd's
    for mine, other in zip(*buffers):
        torch.testing.assert_close(mine, other, **tolerance("diagonal"))


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_a_diagonal_step_forms_no_temporary_of_the_weights_size(layer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest allocation of a step (torch's profiler) is a chunk of ``CHUNK`` elements, not the weight."""
    monkeypatch.setattr(singd_module, "CHUNK", 256)
    torch.manual_seed(0)
    first = torch.nn.Linear(64, 512) if layer == "linear" else torch.nn.Conv2d(64, 512, 1)
    model = torch.nn.Sequential(first, torch.nn.Flatten(), torch.nn.Linear(512, 2))
    optimizer = SINGD(model, **options("diagonal", "reduce"))
    x = torch.randn(3, 64) if layer == "linear" else torch.randn(3, 64, 1, 1)
    for step in range(2):  # the momentum buffers exist after the first step
        optimizer.zero_grad()
        model(x).square().sum().backward()
        if step == 0:
            optimizer.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        optimizer.step()
    largest = max(event.self_cpu_memory_usage for event in profile.events())
    assert 0 < largest <= 4 * 513  # float32: the squares of K (513 entries), chunks of 256 elements


# --- layers singd lacks, against twins it has -------------------------------------------------------


def run_twins(model: torch.nn.Module, twin: torch.nn.Module, x: torch.Tensor, twin_x: torch.Tensor,
              structure: str, approx: str) -> tuple[SINGD, SingdSINGD]:
    ours, theirs = SINGD(model, **options(structure, approx)), SingdSINGD(twin, **options(structure, approx))
    y = torch.randn(model(x).shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
    train(model, ours, x, y)
    train(twin, theirs, twin_x, y)
    return ours, theirs


@pytest.mark.parametrize("approx", ["reduce", "expand"])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_conv1d_and_conv3d_equal_singd_on_their_conv2d_twins(structure: str, approx: str) -> None:
    """A Conv1d is the Conv2d of height 1 (kernel ``(1, K)``); a Conv3d of depth 1 the Conv2d of its other dims."""
    dtype = dtype_of(structure)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(4, 4, 2, stride=2, groups=2),
        torch.nn.Flatten(), torch.nn.Unflatten(1, (4, 1, 1, 4)), torch.nn.Conv3d(4, 3, (1, 1, 2), bias=False),
        torch.nn.Flatten(),
    ).to(dtype)  # fmt: skip
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, (1, 3), padding=(0, 1)), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, (1, 2), stride=(1, 2),
                                                                                       groups=2),
        torch.nn.Flatten(), torch.nn.Unflatten(1, (4, 1, 4)), torch.nn.Conv2d(4, 3, (1, 2), bias=False),
        torch.nn.Flatten(),
    ).to(dtype)  # fmt: skip
    with torch.no_grad():
        for mine, other in zip(model.parameters(), twin.parameters()):
            other.copy_(mine.reshape(other.shape))
    x = torch.randn(5, 2, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    ours, theirs = run_twins(model, twin, x, x[:, :, None], structure, approx)
    assert_same_state(ours, theirs, structure, names={"0": "0", "2": "2", "5": "5"})
    assert_same_parameters(model, twin, structure)


def padded_twin(pad: torch.nn.Module, conv: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.nn.Module, ...]:
    """``Sequential(conv, Flatten)`` and singd's twin ``Sequential(pad, unpadded Conv2d, Flatten)``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(conv, torch.nn.Flatten()).to(dtype)
    unpadded = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                               conv.groups, conv.bias is not None).to(dtype)
    with torch.no_grad():
        for mine, other in zip(conv.parameters(), unpadded.parameters()):
            other.copy_(mine)
    return model, torch.nn.Sequential(pad, unpadded, torch.nn.Flatten())


@pytest.mark.parametrize("approx", ["reduce", "expand"])
@pytest.mark.parametrize("structure", ["dense", "diagonal", "block30diagonal"])
@pytest.mark.parametrize("case", ["reflect", "replicate", "circular", "same", "asymmetric"])
def test_padding_equals_singd_on_explicit_padding(case: str, structure: str, approx: str) -> None:
    """Padding modes (singd reads them as zeros), unequal ``"same"`` (singd raises) and ``(left, right)`` pairs (a
    tnconv.nn.Conv2d) equal singd on a padding module before an unpadded Conv2d."""
    dtype = dtype_of(structure)
    if case in ("reflect", "replicate", "circular"):
        conv: torch.nn.Module = torch.nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=case, groups=1)
        pads = {"reflect": torch.nn.ReflectionPad2d, "replicate": torch.nn.ReplicationPad2d,
                "circular": torch.nn.CircularPad2d}
        pad: torch.nn.Module = pads[case]((2, 2, 1, 1))
    elif case == "same":
        conv, pad = torch.nn.Conv2d(3, 4, (2, 4), padding="same"), torch.nn.ZeroPad2d((1, 2, 0, 1))
    else:
        conv, pad = tnconv.nn.Conv2d(3, 4, 3, padding=((0, 2), (1, 0))), torch.nn.ZeroPad2d((1, 0, 0, 2))
    model, twin = padded_twin(pad, conv, dtype)
    x = torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    ours, theirs = run_twins(model, twin, x, x, structure, approx)
    assert_same_state(ours, theirs, structure, names={"0": "1"})
    assert_same_parameters(model, twin, structure)


@pytest.mark.parametrize("approx", ["reduce", "expand"])
@pytest.mark.parametrize("structure", ["dense", "diagonal"])
def test_conv_transpose_equals_singd_on_its_flipped_conv_twin(structure: str, approx: str) -> None:
    """A stride-1 ConvTranspose2d with padding P is the Conv2d with the flipped, transposed kernel and padding
    K - 1 - P; its patches are the conv's with the taps reversed, so ``K`` is the conv's with rows and columns
    permuted (which dense and diagonal structures preserve)."""
    dtype = dtype_of(structure)
    torch.manual_seed(0)
    transposed = torch.nn.ConvTranspose2d(3, 4, (2, 3), padding=(0, 1)).to(dtype)
    conv = torch.nn.Conv2d(3, 4, (2, 3), padding=(1, 1)).to(dtype)
    with torch.no_grad():
        conv.weight.copy_(transposed.weight.transpose(0, 1).flip(-1, -2))
        conv.bias.copy_(transposed.bias)
    model, twin = torch.nn.Sequential(transposed, torch.nn.Flatten()), torch.nn.Sequential(conv, torch.nn.Flatten())
    x = torch.randn(4, 3, 4, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    ours, theirs = run_twins(model, twin, x, x, structure, approx)
    taps = torch.arange(3 * 6).reshape(3, 6).flip(-1).flatten()
    order = torch.cat([taps, torch.tensor([18])])  # the bias column stays last

    def reversed_taps(matrix: torch.Tensor) -> torch.Tensor:
        return matrix[order][:, order]

    assert_same_state(ours, theirs, structure, views={"0": reversed_taps})
    torch.testing.assert_close(transposed.weight.transpose(0, 1).flip(-1, -2), conv.weight, **tolerance(structure))
    torch.testing.assert_close(transposed.bias, conv.bias, **tolerance(structure))


def other_layers(dtype: torch.dtype) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1, groups=2), torch.nn.Tanh(),
        torch.nn.Unflatten(2, (5, 1, 2)), torch.nn.ConvTranspose3d(4, 2, 2, stride=(1, 2, 1)), torch.nn.Tanh(),
        torch.nn.Unflatten(2, (6, 1)), tnconv.nn.ConvNd(4, 2, 3, 2, padding=((1, 0), (1, 0), (0, 1), 1)),
        torch.nn.Flatten(),
    ).to(dtype)  # fmt: skip


@pytest.mark.parametrize("approx", ["reduce", "expand"])
@pytest.mark.parametrize("structure", EXACT)
def test_other_layers_train(structure: str, approx: str) -> None:
    """Strided ConvTranspose1d/3d with groups and output padding, a 4-d tnconv ConvNd learn a teacher's outputs
    (their input terms, every structure: ``test_the_input_term_is_singds_from_the_unfolded_patches``)."""
    dtype = dtype_of(structure)
    torch.manual_seed(0)
    model = other_layers(dtype)
    torch.manual_seed(1)
    teacher = other_layers(dtype)
    x = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = teacher(x).detach()
    optimizer = SINGD(model, **options(structure, approx, lr=0.1, lr_cov=0.01))
    first = torch.nn.functional.mse_loss(model(x), y).item()
    train(model, optimizer, x, y, steps=10)
    assert len(optimizer.Ks) == 3
    assert torch.nn.functional.mse_loss(model(x), y).item() < 0.5 * first


def test_layers_whose_weights_need_no_gradient_are_left_out() -> None:
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 2), torch.nn.Conv1d(3, 1, 2))
    model[0].requires_grad_(False)
    optimizer = SINGD(model, **options("diagonal", "expand"))
    assert list(optimizer.Ks) == ["1"]


# --- the input term of any layer ----------------------------------------------------------------------


def module_of(layer: ConvLayer, dtype: torch.dtype, bias: bool) -> torch.nn.Module:
    arguments = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups, bias=bias, dtype=dtype)
    channels = (layer.in_channels, layer.out_channels, layer.kernel_size)
    if layer.transposed:  # padding as (left, right) pairs ("valid" is not a transposed conv's padding)
        return tnconv.nn.ConvTransposeNd(layer.dims, *channels, padding=layer.pairs,
                                         output_padding=layer.output_padding, **arguments)
    return tnconv.nn.ConvNd(layer.dims, *channels, padding=layer.padding, padding_mode=layer.padding_mode,
                            **arguments)


def reference_term(K: object, x: torch.Tensor, layer: ConvLayer, expand: bool, bias: bool) -> object:
    """singd's recipe with the unfolded patches: groups averaged, rows of patches (reduce: their location means),
    a column of ones for a bias, scaled by ``1/sqrt(rows)``; ``K.from_inner(X=a.T)``."""
    averaged = x.unflatten(1, (layer.groups, -1)).mean(1)
    hyper = conv_hyper(tuple(averaged.shape), layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, padding_mode=layer.padding_mode, output_padding=layer.output_padding,
                       transposed=layer.transposed)
    u = unfolded_patches(hyper, averaged)  # (N, d, T)
    rows = u.transpose(1, 2).flatten(0, 1) if expand else u.mean(-1)
    if bias:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], 1)
    return K.from_inner(X=rows.T / math.sqrt(rows.shape[0]))  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.booleans().flatmap(lambda transposed: conv_layers(max_dims=3, transposed=transposed, padding_modes=MODES,
                                                            max_groups=2, max_batch=3)),
       st.sampled_from(STRUCTURES), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_the_input_term_is_singds_from_the_unfolded_patches(
    layer: ConvLayer, structure: str, expand: bool, bias: bool, seed: int
) -> None:
    dtype = dtype_of(structure)
    module = module_of(layer, dtype, bias)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(layer.x_shape, generator=generator, dtype=torch.float64).to(dtype)
    dim = layer.in_channels // layer.groups * math.prod(layer.kernel_size) + bias
    cls = SingdSINGD.SUPPORTED_STRUCTURES[structure]
    K = cls.eye(dim, dtype=dtype)
    K.add_(cls.from_dense(torch.randn(dim, dim, generator=generator, dtype=torch.float64).to(dtype)), alpha=0.3)
    routine_x, shape = geometry("layer", module, x, module(x))
    got = singd_inputs.input_term(K, routine_x, shape, expand, bias)
    expected = reference_term(K, x, layer, expand, bias)
    torch.testing.assert_close(got.to_dense(), expected.to_dense(), **tolerance(structure))


@pytest.mark.parametrize("channels, kernel, bias", [(13, (3, 3), True), (10, (3, 3), False), (3, (7, 7), True),
                                                    (31, (1,), True), (2, (3,), False), (30, (1,), False)])
def test_gram_blocks_are_the_blocks_of_the_gram(channels: int, kernel: tuple[int, ...], bias: bool) -> None:
    """Whole chunks of channels, the channels left over and the bias: every diagonal block of the full Gram."""
    dims = len(kernel)
    x = torch.randn(2, channels, *([9] * dims), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    module = tnconv.nn.ConvNd(dims, channels, 2, kernel, padding=1, bias=bias, dtype=torch.float64)
    routine_x, shape = geometry("layer", module, x, module(x))
    full = singd_inputs.expand_gram(routine_x, shape, bias)
    blocks, last = singd_inputs.gram_blocks(routine_x, shape, bias, 30)
    dim = full.shape[0]
    assert blocks.shape == (dim // 30, 30, 30) and last.shape == (dim % 30, dim % 30)
    for number, block in enumerate(blocks):
        torch.testing.assert_close(block, full[30 * number : 30 * number + 30, 30 * number : 30 * number + 30])
    torch.testing.assert_close(last, full[dim - dim % 30 :, dim - dim % 30 :])


@pytest.mark.parametrize("batch, size, route", [(4, 8, "expand_gram"), (1, 2, "patch_chunks_term")])
def test_dense_expand_takes_the_gram_or_chunks_of_patches(
    batch: int, size: int, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``K^T A K`` from the Gram where ``N T >= 2 D``, else the patches in chunks as the factor (fewer products);
    either is singd's term."""
    calls = []
    original = getattr(singd_inputs, route)

    def spied(*args: object) -> object:
        calls.append(route)
        return original(*args)

    monkeypatch.setattr(singd_inputs, route, spied)
    module = torch.nn.Conv2d(3, 2, 3, padding=1, dtype=torch.float64)
    x = torch.randn(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    K = SingdSINGD.SUPPORTED_STRUCTURES["dense"].eye(28, dtype=torch.float64)
    K.add_(K.from_dense(torch.randn(28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))))
    routine_x, shape = geometry("layer", module, x, module(x))
    got = singd_inputs.input_term(K, routine_x, shape, True, True)
    layer = ConvLayer(tuple(x.shape), (2, 3, 3, 3), 1, 1, 1, 1, "zeros", 0, False, ((1, 1), (1, 1)))
    torch.testing.assert_close(got.to_dense(), reference_term(K, x, layer, True, True).to_dense())
    assert calls == [route]


def test_the_backward_hook_holds_the_input_term_not_the_input() -> None:
    """The input term is computed in the forward hook; the output's tensor hook keeps that term alive, not the
    layer input (singd's keeps the input until the output tensor goes: after the backward pass, here)."""
    outputs = {}
    for cls in (SINGD, SingdSINGD):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
        optimizer = cls(model, **options("diagonal", "expand"))
        x = torch.randn(2, 3, 6, 6) * 1.0  # a fresh tensor that only the layer (and its hooks) hold
        probe = weakref.ref(x)
        output = model[0](x)
        del x
        output.sum().backward()
        outputs[cls] = probe() is None
        assert optimizer.H_Ks
    assert outputs == {SINGD: True, SingdSINGD: False}


# --- what runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("approx", ["reduce", "expand"])
def test_nothing_is_unfolded(approx: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither ``F.unfold`` nor singd's input processing runs; a diagonal ``K`` reads neither the patches nor the
    Gram (expand: the squared patches summed; reduce: the patch sums)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unfolded")

    monkeypatch.setattr(torch.nn.functional, "unfold", refuse)
    monkeypatch.setattr("singd.optim.optimizer.process_input", refuse)
    monkeypatch.setattr(tnconv_patches, "patches", refuse)
    monkeypatch.setattr(singd_inputs, "patches", refuse)
    monkeypatch.setattr(singd_inputs, "expand_gram", refuse)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3),
                                torch.nn.Flatten())
    x = torch.randn(2, 3, 8, 8)
    optimizer = SINGD(model, **options("diagonal", approx))
    train(model, optimizer, x, torch.randn(2, 2 * 36))
    assert set(optimizer.Ks) == {"0", "2"}
