"""What computing KFAC's input factor ``A`` costs, said without running it (``tnconv curvature`` prints it).

``input_factor_cost`` (beside ``accumulate_input_factor``, in ``tnconv.curvature.patches``) and
``tnconv.curvature.factors.input_factor_cost`` (adds ``Linear``) count what the shortcut runs:
the part programs that form the Gram's rows (the patch sums, or the patches of each chunk of
samples) and the symmetric Gram's products. Checked against the products that run
(``support.flops``) and the part programs that are called.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.flops import counted_products
from support.gram_plans import planned
from support.layers import curvature_layers
from support.references import kwargs

import tnconv
from tnconv.conv.hyper import conv_hyper
from tnconv.curvature import patches as patches_module
from tnconv.conv.checks import layer as checked_layer
from tnconv.curvature.factors import Geometry, input_factor, input_factor_cost
from tnconv.backends.torch.target import SPEEDS
from tnconv.lower.pair_choice import pair_gram_pays
from tnconv.lower.pair_gram import PairGram
from tnconv.lower.patch_gram import NetworkGram, patch_chunks
from tnconv.programs.program import default_target
from tnconv.routines.run import finish, setup
from tnconv.routines.table import TABLE


def part_flops(calls: mock.Mock, routine: str) -> int:
    """The FLOPs of what ran in the part programs called for the layers of ``calls`` (a native kernel's, else the
    plan's; the einsum plan's for patches formed as views: from the target's ``views_from`` patch elements on)."""
    total = 0
    views_from = patches_module.default_target().views_from
    for call in calls.call_args_list:
        program = tnconv.compile(setup(TABLE[routine], call.args[1]).network)
        layer = call.args[1]
        views = routine == "kfac_expand" and layer.batch * patches_module.patch_elements(layer) >= views_from
        kernel = None if views else program.kernel_cost()
        total += kernel.flops if kernel is not None else program.flops
    return total


@settings(max_examples=40, deadline=None)
@given(curvature_layers(max_dims=2), st.booleans(), st.sampled_from([1, 200, 10**9]))
def test_the_cost_is_that_of_the_products_and_parts_that_run(layer, reduce, chunk):
    x = torch.randn(layer.x_shape, dtype=torch.float64)
    hyper = checked_layer(x, {"kernel_size": layer.kernel_size, **kwargs(layer)})
    routine = "kfac_reduce" if reduce else "kfac_expand"
    spied = "run_part" if reduce else "part_operands"  # the patch sums run their program, the patches its plan
    calls = mock.Mock(wraps=getattr(patches_module, spied))
    with planned(chunk=chunk, whole=False):
        cost = patches_module.input_factor_cost(hyper, reduce)
        with counted_products() as products, mock.patch.object(patches_module, spied, calls):
            patches_module.accumulate_input_factor(x, hyper, reduce)
    assert cost.gram_flops == products.flops
    assert cost.part_flops == part_flops(calls, routine)
    assert cost.flops == cost.part_flops + cost.gram_flops
    chunks = len(calls.call_args_list)
    assert cost.strategy.startswith("patch sums (" if reduce else "patches (")
    assert (f" in {chunks} chunks +" in cost.strategy) == (chunks > 1)


@pytest.mark.parametrize("reduce", [False, True])
def test_a_linear_layer_costs_the_gram_of_its_inputs_or_of_their_sums(reduce):
    """A Linear on ``(N, T, d)`` = ``(3, 5, 7)``: the Gram of 15 (expand) or 3 (reduce) rows, one panel; reduce
    first adds ``3 * 4 * 7`` numbers."""
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    geometry = Geometry("linear", 1, 2)
    cost = input_factor_cost(x, geometry, reduce)
    with counted_products() as products:
        input_factor(x, geometry, reduce)
    assert cost.gram_flops == products.flops == 2 * 7 * 7 * (3 if reduce else 15)
    assert (cost.part_flops, cost.strategy) == ((84, "location sums + gram symmetrized") if reduce
                                                else (0, "gram symmetrized"))  # fmt: skip


def test_a_layer_whose_expand_runs_as_a_pair_gram_is_costed_as_one() -> None:
    """ResNet-18 CIFAR's first-stage 3x3 layer (batch 32, 64 channels at 32x32): ``KFAC.update`` runs its
    KFAC-expand A as a pattern-pair Gram, so the cost is the pair plan's (no patches, no panels), and a run
    takes that path (the patches are never formed)."""
    hyper = conv_hyper((32, 64, 32, 32), 3, padding=1)
    pair = patches_module.expand_network(hyper).plan
    assert isinstance(pair, PairGram) and pair_gram_pays(pair, SPEEDS)
    assert patches_module.input_gram_plan(hyper, default_target()) == NetworkGram(pair=True, calls=pair.calls)
    cost = patches_module.input_factor_cost(hyper, reduce=False)
    assert cost.strategy == f"pattern-pair Gram ({pair.calls} weight-VJP calls)" and cost.part_flops == 0
    assert cost.gram_flops == pair.flops and cost.largest_intermediate == pair.largest_intermediate
    small = conv_hyper((4, 64, 56, 56), 3, padding=1)  # a larger image on 4 samples: run it, patches untouched
    assert isinstance(patches_module.expand_network(small).plan, PairGram)
    x = torch.randn(small.input_shape, dtype=torch.float64)
    with mock.patch.object(patches_module, "_patches", side_effect=AssertionError("patches formed")):
        result = patches_module.accumulate_input_factor(x, small, reduce=False)
    scale = finish(TABLE["kfac_expand"], small).factor
    chunks = patch_chunks(small.batch, *2 * [patches_module.patch_elements(small)], default_target())
    expected = patches_module.accumulate_patch_gram(x, small, chunks, torch.empty_like(result), scale, 0.0)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)
