"""The time-aware choice between a pattern-pair Gram and the patches with their Gram (``tnconv.lower.pair_choice``).

The counts each estimate reads are checked by hand on small plans; the decisions of the calibrated
torch backend's speeds (``tnconv.backends.torch.target.SPEEDS``) on fixed layers, one per regime, through the planner (``Program.strategy``) and the
function the model path calls. No timing here: the speeds are constants.
"""

from __future__ import annotations

import pytest
from support.networks import two_operand_pair

import tnconv
from tnconv.backends.torch.target import SPEEDS
from tnconv.lower import pair_gram
from tnconv.lower.pair_choice import (
    PairWork,
    PatchWork,
    Speeds,
    pair_gram_pays,
    pair_work,
    patch_work,
)


def expand_plan(shape: tuple[int, ...], kernel: int) -> pair_gram.PairGram:
    plan = pair_gram.match(tnconv.conv_network("kfac_expand", shape, kernel, padding="same"))
    assert plan is not None
    return plan


def test_counts_of_a_small_expand_plan() -> None:
    """3x3 'same' at 6x6, N=2, C=4: 5 segments per dim (25 calls), held by the taps {0}, {0,1}, {0,1,2}, {1,2}, {2}:
    3, 4, 5, 4, 3 shifts (19 per dim), over 1, 1, 4, 1, 1 pixels (34 shift-pixels per dim, each reading 4 + 4
    channels); 1+2+3+2+1 holders per dim (9 * 9 adds of 4x4 channels by 3x3 taps); patches d = 36 rows by 36
    locations, one panel."""
    plan = expand_plan((2, 4, 6, 6), 3)
    assert plan.sizes == (2, 1, 4, 4)
    assert pair_work(plan) == PairWork(25, 2 * 16 * 19 * 19, 2 * 8 * 34 * 34, 2 * 2 * 16 * 34 * 34, 81, 81 * 16 * 9)
    assert patch_work(plan) == PatchWork(2 * 36 * 36, 2 * 2 * 36 * 36 * 36, 36 * 36)


def test_panels_and_two_operands_in_the_patch_counts() -> None:
    """Two operands (2 and 3 channels, kernel 3, 5 outputs): both sides' patches are formed; 64 channels of a 3x3
    kernel give d = 576 rows, 4.5 panels of 128: each panel times the rows from its start on."""
    plan = pair_gram.lower(two_operand_pair())  # built whether or not it pays (``match`` offers it only below the im2col FLOPs)
    assert plan is not None
    assert patch_work(plan) == PatchWork(5 * (6 + 9), 2 * 5 * 6 * 9, 6 * 9)
    wide = expand_plan((1, 64, 4, 4), 3)
    assert patch_work(wide).flops == 2 * 16 * (128 * (576 + 448 + 320 + 192) + 64 * 64)


@pytest.mark.parametrize(
    "shape, kernel, pays",
    [
        ((2, 4, 6, 6), 3, False),  # tiny: the per-call overhead of 25 calls
        ((32, 256, 8, 8), 3, False),  # deep: thin border calls of 256 x 256 channels
        ((8, 512, 4, 4), 3, False),  # deeper: every call a border call
        ((8, 64, 28, 28), 5, True),  # 5x5 28x28: border calls narrowed to their shifts, 0.84x the time
        ((32, 64, 32, 32), 3, True),  # ResNet-18 CIFAR's first stage: the core call dominates
        ((8, 64, 56, 56), 3, True),  # a large image
        ((8, 32, 56, 56), 7, True),  # 7x7: 0.09x the FLOPs outweigh 169 calls and their assembly (0.48x the time)
    ],
)
def test_decisions_per_regime(shape: tuple[int, ...], kernel: int, pays: bool) -> None:
    plan = expand_plan(shape, kernel)
    assert pair_gram_pays(plan, SPEEDS) is pays
    program = tnconv.compile(tnconv.conv_network("kfac_expand", shape, kernel, padding="same"))
    assert program.strategy == ("pair_gram" if pays else "einsum")


def test_flops_alone_would_choose_the_pair_on_a_deep_layer() -> None:
    """Priced by FLOPs only (the planner's old rule), the pair Gram of a 3x3 layer at 8x8 with 256 channels wins;
    the measured speeds say not (it took 1.9x the patches' time)."""
    plan = expand_plan((32, 256, 8, 8), 3)
    flops_only = Speeds(call=0.0, call_output=0.0, call_input=0.0, call_flop=1.0, add=0.0, added=0.0, layer=0.0,
                        patch_element=0.0, gram_flop=1.0, factor_element=0.0)
    assert pair_gram_pays(plan, flops_only)
    assert not pair_gram_pays(plan, SPEEDS)


def test_the_panels_are_the_grams() -> None:
    """The estimate prices the panels ``tnconv.routines.gram`` multiplies (the constant is copied: lower/ is
    torch-free)."""
    from tnconv.lower import pair_choice
    from tnconv.routines import gram

    assert pair_choice.PANEL == gram.PANEL
    for channels in (8, 16, 20, 28, 29, 64):  # d = 9 * C: 72, 144, 180, 252 (symmetrized), 261, 576 (panels)
        plan = expand_plan((1, channels, 48, 48), 3)  # deep enough (d * T >= gram.DENSE_BELOW) for panels
        assert patch_work(plan).flops == gram.flops((1, 1, 9 * channels, 48 * 48)), channels


@pytest.mark.parametrize("shape, kernel", [((32, 64, 32, 32), 3), ((8, 64, 56, 56), 5), ((2, 64, 56, 56), 7)])
def test_strided_pairs_do_not_pay_on_the_cpu(shape: tuple[int, ...], kernel: int) -> None:
    """At stride 2 the phases make thin calls: measured 1.05-2.8x the patches' time (ResNet-18 CIFAR's
    layer2.0.conv1 first), so the planner and ``KFAC.update`` keep the patches although ``match`` offers a plan
    with fewer FLOPs than the im2col Gram."""
    net = tnconv.conv_network("kfac_expand", shape, kernel, stride=2, padding=kernel // 2)
    plan = pair_gram.match(net)
    assert plan is not None and plan.flops < plan.gram_flops
    assert not pair_gram_pays(plan, SPEEDS)
    assert tnconv.compile(net).strategy == "einsum"


@pytest.mark.parametrize("shape, kernel, stride", [((8, 128, 56, 56), 7, 1), ((8, 64, 56, 56), 3, 1),
                                                   ((8, 96, 112, 112), 3, 2)])
def test_depthwise_layers_keep_the_patches(shape: tuple[int, ...], kernel: int, stride: int) -> None:
    """Depthwise weight-VJP kernels run far below the fitted speeds (1.1-3.6x the patches' time measured), so a
    depthwise layer's pair plan never pays, while 8 channels per group do (0.44x measured at 3x3 56x56)."""
    net = tnconv.conv_network("kfac_expand", shape, kernel, stride=stride, padding=kernel // 2, groups=shape[1])
    plan = pair_gram.match(net)
    assert plan is not None and plan.sizes[1:] == (shape[1], 1, 1)
    assert not pair_gram_pays(plan, SPEEDS)
    assert tnconv.compile(net).strategy == "einsum"
    grouped = pair_gram.match(tnconv.conv_network("kfac_expand", (8, 64, 56, 56), 3, padding=1, groups=8))
    assert grouped is not None and pair_gram_pays(grouped, SPEEDS)
