"""tnconv.functional under ``torch.compile(fullgraph=True)`` with dynamic shapes and int arguments.

Native kernels hold no batch size; hyper-parameters that dynamo sees as symbolic ints are specialised.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lower_reference import assert_close, random_operands
from strategies import conv_layers

import tnconv
import tnconv.functional as TF
from tnconv.lower.compile import compile

TOL = dict(rtol=1e-10, atol=1e-10)
MODES = ("zeros", "reflect", "replicate", "circular")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def compiled_with_graph_count(function: Callable, **options) -> tuple[Callable, list]:
    """``function`` compiled with ``fullgraph=True`` by a backend that records each graph it is given."""
    torch._dynamo.reset()
    graphs: list = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    return torch.compile(function, backend=backend, fullgraph=True, **options), graphs


ROUTINES = (("forward", False), ("forward", True), ("input_vjp", False), ("weight_vjp", False), ("unfold", False),
            ("unfold", True), ("fold", False))  # (op, transposed)


def routines() -> st.SearchStrategy:
    """``(op, layer)``: a routine and a layer it takes (transposed ones with zero padding only, as torch)."""
    return st.sampled_from(ROUTINES).flatmap(
        lambda routine: st.tuples(
            st.just(routine[0]),
            conv_layers(max_dims=3, transposed=routine[1], padding_modes=("zeros",) if routine[1] else MODES),
        )
    )


@settings(max_examples=40, deadline=None)
@given(routines())
def test_native_kernels_hold_no_batch_size(routine):
    """The kernels of a routine for batch sizes 2 and 5 are equal; the first computes the second's network
    (transposed layers too: a transposed convolution, cropped or not, and its unfold)."""
    op, layer = routine
    out_channels = None if op in ("unfold", "fold") else layer.out_channels
    nets = [
        tnconv.conv_network(
            op, (batch, *layer.x_shape[1:]), layer.kernel_size, out_channels, layer.stride, layer.padding,
            layer.dilation, layer.groups, layer.padding_mode, layer.output_padding, layer.transposed,
        )
        for batch in (2, 5)
    ]
    two, five = (compile(net) for net in nets)
    assert two.strategy == five.strategy
    assume(two.kernel is not None and two.strategy != "native:matmul")  # a matmul recipe holds its sizes
    assert two.kernel == five.kernel
    operands = random_operands(nets[1])
    assert_close(two.kernel(operands), five(*operands))


@pytest.mark.parametrize("dynamic", [None, True])
def test_hyper_parameters_passed_as_arguments(dynamic):
    """Ints that dynamo makes symbolic (dynamic=True, or after seeing them change) are specialised."""
    x = randn(2, 4, 9, 8)
    weights = {1: randn(6, 4, 3, 2, seed=1), 2: randn(6, 2, 3, 2, seed=2)}
    conv = lambda x, w, s, p, d, g: TF.conv(x, w, None, s, p, d, g)
    compiled, _ = compiled_with_graph_count(conv, dynamic=dynamic)
    for stride, padding, dilation, groups in [(1, 0, 1, 1), (2, 1, 2, 2), ((3, 1), (1, 2), (1, 2), 1)]:
        w = weights[groups]
        expected = F.conv2d(x, w, None, stride, padding, dilation, groups)
        torch.testing.assert_close(compiled(x, w, stride, padding, dilation, groups), expected, **TOL)
    pairs = compiled(x, weights[1], 1, ((1, 0), 2), 1, 1)
    torch.testing.assert_close(pairs, F.conv2d(F.pad(x, (2, 2, 1, 0)), weights[1]), **TOL)
    w = randn(4, 3, 3, 2, seed=3)
    transposed = lambda x, s, op, d: TF.conv_transpose(x, w, None, s, 1, op, 1, d)
    compiled, _ = compiled_with_graph_count(transposed, dynamic=dynamic)
    for stride, output_padding, dilation in [(2, 1, 1), (3, 1, 2)]:
        expected = F.conv_transpose2d(x, w, None, stride, 1, output_padding, 1, dilation)
        torch.testing.assert_close(compiled(x, stride, output_padding, dilation), expected, **TOL)
