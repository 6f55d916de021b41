"""tnconv.nn modules against their torch.nn twins: forward and gradients in float64, the same
initialisation under the same seed, from_torch, state dicts both ways, extra_repr, bad arguments."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv import nn

RTOL, ATOL = 1e-10, 1e-12
DOUBLE = torch.float64
TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_CONV_T = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
TN_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
TN_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


def build_tnconv(cls_fixed: type, cls_nd: type, dims: int, use_nd: bool, seed: int, **kwargs: Any) -> torch.nn.Module:
    """The tnconv module, as the fixed-N class or as the N-d class, created under ``seed``."""
    torch.manual_seed(seed)
    return cls_nd(dims, **kwargs) if use_nd else cls_fixed(**kwargs)


def same_parameters(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name, value in theirs_state.items():
        assert ours_state[name].dtype == value.dtype
        assert torch.equal(ours_state[name], value), name


def compare_gradients(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, **call: Any) -> None:
    """Forward values and gradients w.r.t. input and parameters agree."""
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = ours(x_ours, **call), theirs(x_theirs, **call)
    close(out_ours, out_theirs)
    v = torch.randn_like(out_theirs)
    out_ours.backward(v)
    out_theirs.backward(v)
    close(x_ours.grad, x_theirs.grad)
    for p_ours, p_theirs in zip(ours.parameters(), theirs.parameters()):
        close(p_ours.grad, p_theirs.grad)


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------


@st.composite
def conv_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A torch-valid ``Conv{N}d`` configuration and an input shape it accepts."""
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * dims if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(dims))
    if kind == "int":
        padding: Any = draw(st.integers(0, 2))
        per_side = [padding] * dims
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
        per_side = list(padding)
    else:
        padding = kind
        per_side = [d * (k - 1) - d * (k - 1) // 2 if kind == "same" else 0 for k, d in zip(kernel, dilation)]
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    size = []
    for k, d, p in zip(kernel, dilation, per_side):
        smallest = max(1, d * (k - 1) + 1 - 2 * p, p + 1 if mode == "reflect" else 1, p if mode == "circular" else 1)
        size.append(smallest + draw(st.integers(0, 2)))
    return {
        "dims": dims,
        "module": {
            "in_channels": groups * draw(st.integers(1, 2)),
            "out_channels": groups * draw(st.integers(1, 2)),
            "kernel_size": draw(st.sampled_from([kernel, kernel[0]])) if len(set(kernel)) == 1 else kernel,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "bias": draw(st.booleans()),
            "padding_mode": mode,
        },
        "input": (draw(st.integers(1, 2)), *size),
        "use_nd": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def conv_transpose_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A torch-valid ``ConvTranspose{N}d`` configuration, an input shape and maybe an ``output_size``."""
    dims = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size, smallest_out = [], []
    for k, s, d, p in zip(kernel, stride, dilation, padding):
        # output (i - 1) * s - 2p + d(k - 1) + output_padding + 1 must be >= 1 (with output_padding 0)
        i = max(1, math.ceil((2 * p - d * (k - 1)) / s) + 1) + draw(st.integers(0, 2))
        size.append(i)
        smallest_out.append((i - 1) * s - 2 * p + d * (k - 1) + 1)
    output_size = None
    if draw(st.booleans()):
        output_size = [o + draw(st.integers(0, s - 1)) for o, s in zip(smallest_out, stride)]
    return {
        "dims": dims,
        "module": {
            "in_channels": groups * draw(st.integers(1, 2)),
            "out_channels": groups * draw(st.integers(1, 2)),
            "kernel_size": kernel,
            "stride": stride,
            "padding": draw(st.sampled_from([padding, padding[0]])) if len(set(padding)) == 1 else padding,
            "output_padding": output_padding,
            "groups": groups,
            "bias": draw(st.booleans()),
            "dilation": dilation,
        },
        "input": (draw(st.integers(1, 2)), *size),
        "output_size": output_size,
        "use_nd": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


# ---------------------------------------------------------------------------------------------
# forward, gradients and initialisation vs torch
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # torch's own notice
@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv_equals_torch_with_same_seed(config):
    dims, kwargs, seed = config["dims"], config["module"], config["seed"]
    ours = build_tnconv(TN_CONV[dims], nn.ConvNd, dims, config["use_nd"], seed, **kwargs, dtype=DOUBLE)
    torch.manual_seed(seed)
    theirs = TORCH_CONV[dims](**kwargs, dtype=DOUBLE)
    same_parameters(ours, theirs)
    assert ours.extra_repr() == theirs.extra_repr()
    batch, *size = config["input"]
    x = torch.randn(batch, kwargs["in_channels"], *size, dtype=DOUBLE)
    compare_gradients(ours, theirs, x)


@settings(max_examples=50, deadline=None)
@given(conv_transpose_configs())
def test_conv_transpose_equals_torch_with_same_seed(config):
    dims, kwargs, seed = config["dims"], config["module"], config["seed"]
    ours = build_tnconv(TN_CONV_T[dims], nn.ConvTransposeNd, dims, config["use_nd"], seed, **kwargs, dtype=DOUBLE)
    torch.manual_seed(seed)
    theirs = TORCH_CONV_T[dims](**kwargs, dtype=DOUBLE)
    same_parameters(ours, theirs)
    assert ours.extra_repr() == theirs.extra_repr()
    batch, *size = config["input"]
    x = torch.randn(batch, kwargs["in_channels"], *size, dtype=DOUBLE)
    compare_gradients(ours, theirs, x, output_size=config["output_size"])


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_default_dtype_init_and_reset_parameters_match_torch(dims, transposed):
    tn_cls, torch_cls = (TN_CONV_T, TORCH_CONV_T) if transposed else (TN_CONV, TORCH_CONV)
    kwargs = {"in_channels": 6, "out_channels": 4, "kernel_size": 3, "groups": 2}
    torch.manual_seed(7)
    ours = tn_cls[dims](**kwargs)
    torch.manual_seed(7)
    theirs = torch_cls[dims](**kwargs)
    same_parameters(ours, theirs)
    assert ours.weight.dtype == torch.get_default_dtype() and ours.weight.requires_grad
    torch.manual_seed(8)
    ours.reset_parameters()
    after_ours = torch.rand(3)
    torch.manual_seed(8)
    theirs.reset_parameters()
    after_theirs = torch.rand(3)
    same_parameters(ours, theirs)
    assert torch.equal(after_ours, after_theirs), "the initialisation must draw exactly torch's random numbers"


def test_device_and_dtype_arguments():
    module = nn.ConvNd(2, 2, 4, 3, device="meta", dtype=torch.float16)
    assert module.weight.device.type == "meta" and module.weight.dtype == torch.float16
    assert module.bias is not None and module.bias.shape == (4,)
    module = nn.ConvTranspose3d(4, 6, (1, 2, 3), groups=2, bias=False, dtype=DOUBLE)
    assert module.weight.shape == (4, 3, 1, 2, 3) and module.weight.dtype == DOUBLE and module.bias is None


def test_float32_forward_keeps_dtype():
    theirs = torch.nn.Conv2d(3, 4, 3, padding=1)
    ours = nn.Conv2d.from_torch(theirs)
    x = torch.randn(2, 3, 6, 5)
    out = ours(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, theirs(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_asymmetric_padding_pairs(mode):
    pairs = ((0, 2), (1, 0))
    torch.manual_seed(0)
    ours = nn.ConvNd(2, 2, 3, (3, 2), padding=pairs, dilation=(1, 2), padding_mode=mode, dtype=DOUBLE)
    assert ours.padding == pairs and "padding=((0, 2), (1, 0))" in ours.extra_repr()
    theirs = torch.nn.Conv2d(2, 3, (3, 2), dilation=(1, 2), dtype=DOUBLE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 5, 4, dtype=DOUBLE)
    padded = F.pad(x, (1, 0, 0, 2)) if mode == "zeros" else F.pad(x, (1, 0, 0, 2), mode=mode)
    close(ours(x), theirs(padded))


def test_asymmetric_padding_pairs_transposed():
    torch.manual_seed(0)
    ours = nn.ConvTransposeNd(2, 2, 3, 3, stride=2, padding=((0, 2), (1, 0)), output_padding=1, dtype=DOUBLE)
    theirs = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, output_padding=1, dtype=DOUBLE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 4, 3, dtype=DOUBLE)
    full = theirs(x)
    close(ours(x), full[:, :, 0 : full.shape[2] - 2, 1:])


def test_symmetric_pairs_are_stored_as_ints():
    assert nn.Conv2d(1, 1, 3, padding=((1, 1), (2, 2))).padding == (1, 2)


def test_conv4d_equals_sum_of_conv3d():
    """N = 4 has no torch module: each output slice along dim 4 is a sum of 3-d convolutions."""
    torch.manual_seed(0)
    stride, padding, dilation = (1, 2, 1, 2), (1, 0, 0, 1), (1, 1, 2, 1)
    ours = nn.ConvNd(4, 4, 2, (2, 1, 2, 3), stride, padding, dilation, groups=2, dtype=DOUBLE)
    assert ours.weight.shape == (2, 2, 2, 1, 2, 3)
    x = torch.randn(2, 4, 3, 4, 5, 5, dtype=DOUBLE)
    out = ours(x)
    padded = F.pad(x, (padding[3], padding[3]))
    slices = []
    for o in range(out.shape[-1]):
        terms = [
            F.conv3d(padded[..., stride[3] * o + dilation[3] * k], ours.weight[..., k], None, stride[:3], padding[:3],
                     dilation[:3], groups=2)
            for k in range(3)
        ]  # fmt: skip
        slices.append(sum(terms) + ours.bias[:, None, None, None])
    close(out, torch.stack(slices, dim=-1))


def test_unbatched_input():
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(2, 3, 2, padding=1, padding_mode="circular", dtype=DOUBLE)
    x = torch.randn(2, 4, 5, dtype=DOUBLE)
    close(nn.Conv2d.from_torch(theirs)(x), theirs(x))
    theirs_t = torch.nn.ConvTranspose1d(2, 4, 3, stride=2, dtype=DOUBLE)
    x = torch.randn(2, 5, dtype=DOUBLE)
    ours_t = nn.ConvTransposeNd.from_torch(theirs_t)
    close(ours_t(x, output_size=[12]), theirs_t(x, output_size=[12]))
    close(ours_t(x, output_size=[4, 12]), theirs_t(x, output_size=[4, 12]))


def test_modules_compile_without_graph_breaks():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", dtype=DOUBLE)
    transposed = nn.ConvTranspose2d(4, 2, 3, stride=2, dtype=DOUBLE)
    x = torch.randn(2, 2, 5, 6, dtype=DOUBLE)
    y = torch.compile(conv, fullgraph=True, backend="eager")(x)
    close(y, conv(x))
    compiled = torch.compile(transposed, fullgraph=True, backend="eager")
    close(compiled(y, output_size=(12, 14)), transposed(y, output_size=(12, 14)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_modules_match_torch():
    for torch_cls, cls, kwargs in [
        (torch.nn.Conv2d, nn.Conv2d, {"padding": 1, "groups": 2, "padding_mode": "circular"}),
        (torch.nn.ConvTranspose2d, nn.ConvTranspose2d, {"stride": 2, "output_padding": 1, "groups": 2}),
    ]:
        torch.manual_seed(0)
        theirs = torch_cls(4, 6, 3, **kwargs, device="cuda", dtype=DOUBLE)
        torch.manual_seed(0)
        same_parameters(cls(4, 6, 3, **kwargs, device="cuda", dtype=DOUBLE), theirs)
        ours = cls.from_torch(theirs)
        assert ours.weight.device.type == "cuda"
        x = torch.randn(2, 4, 7, 6, device="cuda", dtype=DOUBLE)
        compare_gradients(ours, theirs, x)


def test_conv_transpose_output_size_forms_and_errors():
    torch.manual_seed(0)
    theirs = torch.nn.ConvTranspose2d(2, 2, 3, stride=(2, 3), padding=1, dtype=DOUBLE)
    ours = nn.ConvTranspose2d.from_torch(theirs)
    x = torch.randn(1, 2, 3, 4, dtype=DOUBLE)
    for size in ([5, 10], (6, 12), torch.Size([1, 2, 6, 11])):
        close(ours(x, output_size=size), theirs(x, output_size=size))
    with pytest.raises(ValueError, match=r"output_size.*\[7, 10\]"):
        ours(x, output_size=[7, 10])
    with pytest.raises(ValueError, match=r"output_size.*\[5\]"):
        ours(x, output_size=[5])
    with pytest.raises(TypeError, match="output_size"):
        ours(x, output_size=5)


# ---------------------------------------------------------------------------------------------
# Unfold and Fold
# ---------------------------------------------------------------------------------------------


def reference_unfold(x: torch.Tensor, kernel, dilation, padding, stride) -> torch.Tensor:
    """im2col in any N-d from ``Tensor.unfold``: ``(n, C, *I) -> (n, C * prod(K), L)``, F.unfold's layout."""
    dims = x.ndim - 2
    y = F.pad(x, [p for p in reversed(padding) for _ in range(2)])
    for d in range(dims):
        y = y.unfold(2 + d, dilation[d] * (kernel[d] - 1) + 1, stride[d])[..., :: dilation[d]]
    y = y.permute(0, 1, *range(2 + dims, 2 + 2 * dims), *range(2, 2 + dims))  # (n, C, *K, *O)
    return y.reshape(x.shape[0], x.shape[1] * math.prod(kernel), -1)


@st.composite
def window_configs(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    size = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 2)) for k, d, p in zip(kernel, dilation, padding)
    )
    as_given = draw(st.booleans())  # ints where all dims agree, as a user would write them

    def given_form(value: tuple[int, ...]) -> int | tuple[int, ...]:
        return value[0] if as_given and dims == 2 and len(set(value)) == 1 else value

    return {
        "args": {k: given_form(v) for k, v in zip(("kernel_size", "dilation", "padding", "stride"),
                                                  (kernel, dilation, padding, stride))},
        "tuples": (kernel, dilation, padding, stride),
        "size": size,
        "channels": draw(st.integers(1, 3)),
        "batch": draw(st.integers(1, 2)),
    }  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(window_configs())
def test_unfold_and_fold(config):
    args, size = config["args"], config["size"]
    x = torch.randn(config["batch"], config["channels"], *size, dtype=DOUBLE, requires_grad=True)
    unfold = nn.Unfold(**args)
    expected = reference_unfold(x, *config["tuples"])
    close(unfold(x), expected)
    fold = nn.Fold(size, **args)
    cols = torch.randn_like(expected)
    # Fold is the adjoint of Unfold
    (adjoint,) = torch.autograd.grad(expected, x, cols)
    close(fold(cols), adjoint)
    if len(size) == 2:
        theirs_unfold, theirs_fold = torch.nn.Unfold(**args), torch.nn.Fold(size, **args)
        close(unfold(x), theirs_unfold(x))
        close(fold(cols), theirs_fold(cols))
        assert unfold.extra_repr() == theirs_unfold.extra_repr() and fold.extra_repr() == theirs_fold.extra_repr()
        close(nn.Unfold.from_torch(theirs_unfold)(x), expected)
        close(nn.Fold.from_torch(theirs_fold)(cols), adjoint)


def test_fold_and_unfold_unbatched_like_torch():
    x = torch.randn(3, 5, 6, dtype=DOUBLE)
    close(nn.Unfold((2, 3), padding=1)(x), torch.nn.Unfold((2, 3), padding=1)(x))
    cols = torch.randn(12, 20, dtype=DOUBLE)
    close(nn.Fold((5, 6), 2, stride=1)(cols), torch.nn.Fold((5, 6), 2, stride=1)(cols))


# ---------------------------------------------------------------------------------------------
# from_torch and state dicts
# ---------------------------------------------------------------------------------------------

CONV_CASES = [
    (1, {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "bias": False}),
    (2, {"in_channels": 4, "out_channels": 2, "kernel_size": (3, 2), "padding": "same", "dilation": (1, 2),
         "groups": 2, "padding_mode": "reflect"}),
    (3, {"in_channels": 3, "out_channels": 3, "kernel_size": (1, 2, 3), "padding": "valid", "groups": 3,
         "padding_mode": "replicate"}),
]  # fmt: skip
CONV_T_CASES = [
    (1, {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2, "output_padding": 1}),
    (2, {"in_channels": 4, "out_channels": 2, "kernel_size": (3, 2), "padding": (1, 0), "dilation": (1, 2),
         "groups": 2, "bias": False}),
    (3, {"in_channels": 3, "out_channels": 6, "kernel_size": 2, "stride": (1, 2, 3), "output_padding": (0, 1, 2),
         "groups": 3}),
]  # fmt: skip
FROM_TORCH_CASES = [
    (TORCH_CONV[d], cls, kwargs) for d, kwargs in CONV_CASES for cls in (TN_CONV[d], nn.ConvNd)
] + [(TORCH_CONV_T[d], cls, kwargs) for d, kwargs in CONV_T_CASES for cls in (TN_CONV_T[d], nn.ConvTransposeNd)]
ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "output_padding",
              "groups", "padding_mode", "transposed")  # fmt: skip


@pytest.mark.parametrize(("torch_cls", "cls", "kwargs"), FROM_TORCH_CASES)
def test_from_torch_and_state_dicts_both_ways(torch_cls, cls, kwargs):
    torch.manual_seed(1)
    theirs = torch_cls(**kwargs, dtype=DOUBLE)
    theirs.eval()
    theirs.weight.requires_grad_(False)
    state = torch.random.get_rng_state()
    ours = cls.from_torch(theirs)
    assert torch.equal(torch.random.get_rng_state(), state), "from_torch must not draw random numbers"
    assert type(ours) is cls and not ours.training and not ours.weight.requires_grad
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.extra_repr() == theirs.extra_repr()
    if cls in (nn.ConvNd, nn.ConvTransposeNd):
        assert repr(ours) == repr(theirs).replace(torch_cls.__name__, cls.__name__)
    else:
        assert repr(ours) == repr(theirs)
    same_parameters(ours, theirs)
    assert ours.weight.data_ptr() != theirs.weight.data_ptr()
    dims = len(theirs.kernel_size)
    x = torch.randn(2, kwargs["in_channels"], *range(4, 4 + dims), dtype=DOUBLE)
    close(ours(x), theirs(x))

    # torch -> tnconv through a state dict into a differently initialised module
    positional = (dims,) if cls in (nn.ConvNd, nn.ConvTransposeNd) else ()
    torch.manual_seed(2)
    fresh = cls(*positional, **kwargs, dtype=DOUBLE)
    assert not torch.equal(fresh.weight, theirs.weight)
    fresh.load_state_dict(theirs.state_dict(), strict=True)
    close(fresh(x), theirs(x))
    # tnconv -> torch
    torch.manual_seed(3)
    ours.reset_parameters()
    back = torch_cls(**kwargs, dtype=DOUBLE)
    back.load_state_dict(ours.state_dict(), strict=True)
    close(ours(x), back(x))


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="Conv1d"):
        nn.Conv2d.from_torch(torch.nn.Conv1d(1, 1, 1))
    with pytest.raises(TypeError, match="ConvTranspose2d"):
        nn.ConvNd.from_torch(torch.nn.ConvTranspose2d(1, 1, 1))
    with pytest.raises(TypeError, match="Conv2d"):
        nn.ConvTransposeNd.from_torch(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="Linear"):
        nn.Conv3d.from_torch(torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="Fold"):
        nn.Unfold.from_torch(torch.nn.Fold(3, 2))
    with pytest.raises(TypeError, match="Unfold"):
        nn.Fold.from_torch(torch.nn.Unfold(2))
    with pytest.raises(ValueError, match="uninitialized"):
        nn.Conv2d.from_torch(torch.nn.LazyConv2d(3, 2))


def test_exported_from_top_level():
    assert tnconv.nn is nn and nn.Conv2d.__module__ == "tnconv.nn.conv"


# ---------------------------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (lambda: nn.Conv2d(5, 4, 3, groups=2), ValueError, ["in_channels", "5", "groups"]),
    (lambda: nn.Conv2d(4, 5, 3, groups=2), ValueError, ["out_channels", "5", "groups"]),
    (lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, ["groups", "0"]),
    (lambda: nn.Conv2d(0, 4, 3), ValueError, ["in_channels", "0"]),
    (lambda: nn.Conv2d(4.0, 4, 3), TypeError, ["in_channels", "4.0"]),
    (lambda: nn.Conv2d(4, 4, 3.5), TypeError, ["kernel_size", "3.5"]),
    (lambda: nn.Conv2d(4, 4, 0), ValueError, ["kernel_size", "0"]),
    (lambda: nn.Conv2d(4, 4, (3, 3, 3)), ValueError, ["kernel_size", "(3, 3, 3)"]),
    (lambda: nn.Conv2d(4, 4, 3, stride=0), ValueError, ["stride", "0"]),
    (lambda: nn.Conv2d(4, 4, 3, dilation=(1, 0)), ValueError, ["dilation", "(1, 0)"]),
    (lambda: nn.Conv2d(4, 4, 3, stride=2, padding="same"), ValueError, ["same", "stride"]),
    (lambda: nn.Conv2d(4, 4, 3, padding="full"), ValueError, ["padding", "full"]),
    (lambda: nn.Conv2d(4, 4, 3, padding=-1), ValueError, ["padding", "-1"]),
    (lambda: nn.Conv2d(4, 4, 3, padding=(1, 1, 1)), ValueError, ["padding", "(1, 1, 1)"]),
    (lambda: nn.Conv2d(4, 4, 3, padding_mode="mirror"), ValueError, ["padding_mode", "mirror"]),
    (lambda: nn.Conv2d(4, 4, 3, bias="yes"), TypeError, ["bias", "yes"]),
    (lambda: nn.Conv1d(4, 4, True), TypeError, ["kernel_size", "True"]),
    (lambda: nn.ConvNd(0, 4, 4, 3), ValueError, ["N", "0"]),
    (lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), ValueError, ["output_padding", "2"]),
    (lambda: nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), ValueError, ["padding_mode", "reflect"]),
    (lambda: nn.ConvTranspose2d(4, 4, 3, padding="same"), ValueError, ["padding", "same"]),
    (lambda: nn.ConvTransposeNd(3, 4, 6, 3, groups=4), ValueError, ["out_channels", "6"]),
    (lambda: nn.Unfold(0), ValueError, ["kernel_size", "0"]),
    (lambda: nn.Unfold((2, 2), stride=(1, 1, 1)), ValueError, ["stride", "(1, 1, 1)"]),
    (lambda: nn.Unfold(2, padding="full"), ValueError, ["padding", "full"]),
    (lambda: nn.Fold((4, 4), 2, stride=0), ValueError, ["stride", "0"]),
    (lambda: nn.Fold((4, 4.0), 2), TypeError, ["output_size", "4.0"]),
]


@pytest.mark.parametrize(("make", "error", "words"), BAD_ARGUMENTS)
def test_bad_constructor_arguments(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_forward_input():
    module = nn.Conv2d(2, 2, 3)
    with pytest.raises(ValueError, match=r"input.*\(2, 2, 5, 5, 5\)"):
        module(torch.randn(2, 2, 5, 5, 5))
    with pytest.raises(TypeError, match="input"):
        module([[1.0]])
