"""Pattern pairs: two equal index patterns sharing their summed ``o``, ``sum_o Pi[k, o, i] Pi[k', o, i']``
(KFAC-expand). The planner finds them in the network as it is (no rewrite pairs them: ``simplify`` leaves them,
and the einsum stage plans the very network where the pair Gram is not chosen); their lowering
(``tnconv.lower.pair_gram``: strided weight-VJP calls over segments of stride phases, every padding mode)
computes the same as the network and as the Gram of torch's im2col patches, and counts its FLOPs exactly."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from cli_run import run
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layer, conv_layers
from support.networks import two_operand_pair
from support.references import flat_pad, grouped_patches
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import tnconv
from tnconv.backends.torch.pair_gram import pair_gram as pair_gram_call
from tnconv.ir.network import Tensor
from tnconv.ir.tensors import Data, IndexPattern
from tnconv.backends.torch.target import SPEEDS
from tnconv.lower import pair_gram
from tnconv.lower.pair_choice import pair_gram_pays
from tnconv.lower.plan import einsum_plan
from tnconv.lower.optimize import AUTO


def expand_network(layer: ConvLayer) -> tnconv.Network:
    return tnconv.conv_network(
        "kfac_expand", layer.x_shape, layer.weight_shape[2:], stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode, simplify=False,
    )


@settings(max_examples=20, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=("zeros", "reflect", "replicate", "circular"), max_batch=3, max_kernel=4))
def test_simplify_leaves_the_pattern_pairs_to_the_planner(layer: ConvLayer) -> None:
    """``simplify`` pairs nothing: each dim's two patterns that share their summed ``o`` stay index patterns (or
    become views where a taps or padding rule reads them so), so the einsum stage plans the network as it is,
    with no kind of tensor to split back first."""
    simple = tnconv.simplify(expand_network(layer))
    assert {type(entry.kind) for entry in simple.entries} <= {Data, IndexPattern}


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), [((8, 64, 56, 56), 3, 1, "same"),
                                                                   ((8, 64, 56, 56), 7, 1, 3)])
def test_the_pair_gram_is_found_in_the_network_simplified_or_not(shape, kernel, stride, padding) -> None:
    """The same layer's unsimplified and simplified networks get the same pair-Gram plan (as a native kernel is
    matched on both forms alike), and the einsum plan the pair Gram replaces is the network's own: its steps name
    the network's legs (no leg made up to split a pair back)."""
    plain = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=padding, simplify=False)
    simple = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=padding)
    plans = [tnconv.compile(net).plan for net in (plain, simple)]
    assert isinstance(plans[0], pair_gram.PairGram) and plans[0] == plans[1]
    program = tnconv.compile(simple)
    legs = set(program.network.sizes)
    for row in program.path_info:
        assert set(row.equation.replace(",", " ").replace("->", " ").split()) <= legs, row.equation
    assert program.einsum_plan == einsum_plan(simple, AUTO)


def test_no_pair_where_o_is_an_output_leg_or_on_a_third_pattern_or_the_patterns_differ() -> None:
    first, other = IndexPattern(6, 3, 1, 1, 1), IndexPattern(6, 2, 1, 1, 1)  # 6 outputs each
    x = Data()
    tensors = [Tensor("X", ("c", "i"), x), Tensor("Pi", ("k", "o", "i"), first),
               Tensor("Pi", ("l", "o", "j"), first), Tensor("X", ("d", "j"), x)]
    sizes = {"c": 2, "d": 2, "i": 6, "j": 6, "k": 3, "l": 3, "o": 6}

    def lowered(entries: list[Tensor], output: tuple[str, ...], **changed: int) -> pair_gram.PairGram | None:
        return pair_gram.lower(tnconv.Network(entries, output=output, sizes={**sizes, **changed}))

    assert lowered(tensors, ("c", "k", "d", "l")) is not None
    assert lowered(tensors, ("c", "k", "o", "d", "l")) is None
    assert lowered([*tensors[:2], Tensor("Pi", ("l", "o", "j"), other), tensors[3]], ("c", "k", "d", "l"), l=2) is None
    assert lowered([*tensors, Tensor("Pi", ("m", "o", "i"), first)], ("c", "k", "d", "l", "m"), m=3) is None


# --- the lowering: one strided weight-VJP call per product of segments of stride phases ---------------

MODES = ("zeros", "reflect", "replicate", "circular")


def unfold_gram(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """``sum_{n,t} u u^T`` per group from torch's im2col (``F.pad`` in the layer's mode, then a one-hot conv)."""
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    padded = F.pad(x, flat_pad(layer.pairs), mode=mode)
    unpadded = dataclasses.replace(layer, x_shape=tuple(padded.shape), pairs=((0, 0),) * layer.dims)
    u = grouped_patches(unpadded, padded)  # (N, G, C/G * K.., T)
    return torch.einsum("ngat,ngbt->gab", u, u)


@settings(max_examples=50, deadline=None)
@given(conv_layers(max_dims=3, padding_modes=MODES, max_batch=3, max_kernel=4), st.integers(0, 2**31 - 1))
def test_pair_gram_equals_the_network_and_the_unfold_gram(layer: ConvLayer, seed: int) -> None:
    """Lowered whatever its FLOPs, the pair Gram computes the KFAC-expand network exactly (any stride,
    dilation, padding and mode), and equals the Gram of torch's im2col patches."""
    reference = expand_network(layer)
    plan = pair_gram.lower(reference)
    assert plan is not None
    x = torch.randn(layer.x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    result = pair_gram_call(plan)([x])
    torch.testing.assert_close(result, tnconv.compile(reference).run_einsum_plan(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(result.reshape(layer.groups, *unfold_gram(layer, x).shape[1:]), unfold_gram(layer, x),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_asymmetric_padding_in_every_mode(mode: str) -> None:
    """``(left, right)`` padding pairs in a mode (``F.pad`` pads so; ``nn.Conv`` never does), strides 2 and 3."""
    layer = dataclasses.replace(conv_layer((2, 3, 7, 6), 1, (3, 2), (2, 3), ((2, 1), (0, 1)), (1, 2)), padding_mode=mode)
    plan = pair_gram.lower(expand_network(layer))
    assert plan is not None
    x = torch.randn(layer.x_shape, dtype=torch.float64)
    torch.testing.assert_close(pair_gram_call(plan)([x]).reshape(1, 18, 18), unfold_gram(layer, x), rtol=1e-10,
                               atol=1e-10)


LAYERS_WITHOUT_SHARED_PIXELS = (  # (x shape, kernel, stride, dilation, padding): every stride phase holds one tap
    ((4, 8, 12, 12), 1, 2, 1, 0),
    ((4, 8, 12, 12), 2, 2, 1, 0),
    ((4, 8, 13, 11), 2, 2, 1, 1),
    ((4, 8, 12, 12), 3, 3, 1, 1),
    ((4, 8, 12, 12), 2, 3, 2, 1),  # taps at 0 and 2: phases 0 and 2 of 3
    ((2, 8, 9, 9, 9), (2, 1, 3), (2, 3, 3), 1, 1),
)


@pytest.mark.parametrize(("shape", "kernel", "stride", "dilation", "padding"), LAYERS_WITHOUT_SHARED_PIXELS)
def test_planner_leaves_taps_that_share_no_pixels_to_the_gram_path(shape, kernel, stride, dilation, padding) -> None:
    """``K <= S / gcd(D, S)`` in every dim: the calls would make the im2col Gram's products plus the assembly,
    so the FLOP comparison leaves the pairs to the gather/Gram path (which still computes the same)."""
    net = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=padding, dilation=dilation,
                              simplify=False)
    lowered = pair_gram.lower(net)
    assert lowered is not None and lowered.flops > lowered.gram_flops
    assert pair_gram.match(net) is None
    assert tnconv.compile(net).strategy.startswith("einsum")


@pytest.mark.parametrize(("kernel", "stride", "dilation", "padding"), [
    ((3, 3), (2, 2), (1, 1), 1), ((5, 5), (2, 2), (1, 1), 2), ((7, 7), (2, 2), (1, 1), 3), ((7, 7), (4, 4), (1, 1), 3),
    ((3, 3), (2, 2), (2, 2), 2), ((7, 3), (2, 1), (1, 1), (3, 1)),
])
def test_strided_pairs_are_offered_where_they_pay(kernel, stride, dilation, padding) -> None:
    """Overlapping strided taps (``K > s = S / gcd(D, S)``) share pixels within a phase: per dim about
    ``(2sK - s^2) / K^2`` of the im2col Gram's FLOPs (0.79x for 3x3 stride 2 in 2D), so ``match`` offers the
    pair Gram, and the planner runs it exactly when the time estimate (``pair_gram_pays``) says so. At 56x56
    input the borders add under 10%."""
    net = tnconv.simplify(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), kernel, stride=stride,
                                              padding=padding, dilation=dilation))
    plan = pair_gram.match(net)
    assert plan is not None
    program = tnconv.compile(net)
    assert program.strategy == ("pair_gram" if pair_gram_pays(plan, SPEEDS) else "einsum")
    assert plan.flops < min(plan.gram_flops, program.einsum_plan.flops)
    steps = [s // math.gcd(d, s) for s, d in zip(stride, dilation)]
    interior = math.prod((2 * s * k - s * s) / k**2 for s, k in zip(steps, kernel))
    assert interior < plan.flops / plan.gram_flops <= 1.1 * interior


class _Counted(TorchDispatchMode):
    """Counts the weight-VJP calls and the elements added in place (the Gram's assembly) of what it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = self.added = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.convolution_backward.default:
            self.calls += 1
        elif func is torch.ops.aten.add_.Tensor:
            self.added += args[0].numel()
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("shape", "kernel", "stride", "dilation", "padding", "mode"), [
    ((2, 4, 6, 6), 3, 1, 1, "same", "zeros"),
    ((2, 3, 9, 7), (3, 4), (2, 1), 1, 1, "zeros"),
    ((1, 4, 10, 9), (4, 3), (3, 2), (1, 2), (2, 1), "reflect"),
    ((3, 2, 5, 6, 7), (2, 3, 3), (1, 2, 3), (2, 1, 1), 1, "circular"),
    ((2, 6, 11), 5, 2, 1, 2, "replicate"),
])
def test_program_flops_count_the_calls_and_the_assembly(shape, kernel, stride, dilation, padding, mode) -> None:
    """A pair plan's ``flops`` (what ``Program.flops`` reports when the planner runs it) is torch's own count of
    the weight-VJP calls (``FlopCounterMode``: 2 per multiply-add) plus the elements added into the Gram, both
    observed while the plan runs. One group: torch's counter multiplies a grouped weight VJP's products by the
    groups."""
    net = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=padding, dilation=dilation,
                              padding_mode=mode)
    plan = pair_gram.match(net)
    assert plan is not None
    x = torch.randn(shape, dtype=torch.float64)
    counted = _Counted()
    with FlopCounterMode(display=False) as flops, counted:
        pair_gram_call(plan)([x])
    assert counted.calls == plan.calls
    assert plan.flops == flops.get_total_flops() + counted.added


def test_two_different_operands_and_no_batch_leg() -> None:
    """``sum_o A[c, i] Pi Pi' B[d, i']``: two operands, nothing summed but the pixels."""
    net = two_operand_pair()
    plan = pair_gram.lower(net)
    assert plan is not None and plan.groups == 1
    a, b = torch.randn(2, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    taps = torch.zeros(3, 5, 7, dtype=torch.float64)  # Pi[k, o, i] = [i == o + 2k - 2]
    for k in range(3):
        for o in range(5):
            if 0 <= o + 2 * k - 2 < 7:
                taps[k, o, o + 2 * k - 2] = 1
    dense = torch.einsum("koi,loj->klij", taps, taps)
    expected = torch.einsum("ci,klij,dj->ldkc", a, dense, b)
    torch.testing.assert_close(pair_gram_call(plan)([a, b]), expected, rtol=1e-12, atol=1e-12)


def im2col_gram_flops(kernel: int) -> tuple[int, int]:
    """The compiled KFAC-expand network's FLOPs, and the im2col Gram's ``2 N T (C K^2)^2``, 56x56 'same'."""
    program = tnconv.compile(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), kernel, padding="same"))
    assert program.strategy == "pair_gram"
    return program.flops, 2 * 8 * 56 * 56 * (64 * kernel * kernel) ** 2


def test_flops_below_the_im2col_gram() -> None:
    """The issue's targets: 3x3 stride 1 at 56x56 <= 0.45x the im2col Gram, 7x7 <= 0.15x."""
    for kernel, target in ((3, 0.45), (7, 0.15)):
        flops, gram = im2col_gram_flops(kernel)
        assert flops <= target * gram, (kernel, flops / gram)


def test_program_counts_the_pair_gram_exactly() -> None:
    """3x3 'same' at 6x6, N=2, C=4: per dim the segments [0,1), [1,2), [2,6), [6,7), [7,8) of the padded
    pixels lie in the windows of taps {0}, {0,1}, {0,1,2}, {1,2}, {2}, so their calls compute 3, 4, 5, 4, 3
    shifts (K + k_hi - k_lo): 3 + 4 + 4*5 + 4 + 3 = 34 shift-pixels per dim; (1+2+3+2+1)^2 = 9 * 9 adds of
    C^2 * 3x3 elements."""
    plan = pair_gram.match(tnconv.conv_network("kfac_expand", (2, 4, 6, 6), 3, padding="same"))
    calls = 2 * 2 * 16 * 34 * 34
    adds = 9 * 9 * 16 * 9
    assert plan is not None and plan.flops == calls + adds  # a plan too small to pay (see test_pair_choice.py)
    assert plan.largest_intermediate == 16 * 81


def test_cli_prints_the_pair_gram_and_the_path_it_replaces() -> None:
    status, out, err = run("derive", "kfac-expand", "--input", "8,64,56,56", "--padding", "same", "--no-diagram")
    assert status == 0, err
    flops, gram = im2col_gram_flops(3)
    assert "strategy  pair_gram: windowed cross-correlations" in out
    assert f"flops     {flops:,} ({flops:.3g}; 2 per multiply-add, exact)" in out
    assert "einsum plan (not run; the gather/Gram path it replaces):" in out
    replaced = tnconv.compile(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), 3, padding="same")).einsum_plan.flops
    assert replaced >= gram and f"  flops     {replaced:,}" in out


def test_cli_prints_the_gather_gram_path_a_strided_layer_runs() -> None:
    """3x3 stride 2: ``match`` offers a pair Gram with 0.79x the im2col Gram's FLOPs (4 parts per dim: 3 of
    phase 0, 1 of phase 1), but the time estimate keeps the gather/Gram path, and the CLI prints what runs."""
    status, out, err = run("derive", "kfac-expand", "--input", "8,64,56,56", "--stride", "2", "--padding", "1",
                           "--no-diagram")
    assert status == 0, err
    net = tnconv.conv_network("kfac_expand", (8, 64, 56, 56), 3, stride=2, padding=1)
    plan = pair_gram.match(net)
    assert plan is not None and plan.calls == 16 and 0.79 < plan.flops / plan.gram_flops < 0.8
    program = tnconv.compile(net)
    assert "strategy  einsum: pairwise steps" in out and "pair_gram" not in out
    assert f"flops     {program.flops:,} ({program.flops:.3g})" in out
