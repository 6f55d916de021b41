"""tnconv.functional and tnconv.nn under ``torch.compile(fullgraph=True)`` with dynamic shapes and int arguments.

A native kernel keeps the batch size symbolic (no more graphs than the torch twin needs over
many batch sizes); hyper-parameters that dynamo sees as symbolic ints are specialised.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support.layers import conv_layers
from support.networks import assert_close, random_operands

import tnconv
import tnconv.functional as TF
import tnconv.nn as tnn
from tnconv.programs.compile import compile

TOL = dict(rtol=1e-10, atol=1e-10)
MODES = ("zeros", "reflect", "replicate", "circular")
BATCHES = tuple(range(1, 11))  # more than dynamo's 8 recompiles


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


def over_batches(function: Callable, shape: tuple[int, ...], reference: Callable) -> int:
    """Run ``function`` compiled with ``dynamic=True`` on every batch size; check it against ``reference``
    run eagerly; return the number of graphs compiled."""
    compiled, graphs = compiled_with_graph_count(function, dynamic=True)
    for batch in BATCHES:
        x = randn(batch, *shape, seed=batch)
        torch.testing.assert_close(compiled(x), reference(x), **TOL)
    return len(graphs)


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


MODULES = {  # tnconv class, its torch twin, input shape less the batch
    "conv2d": (tnn.Conv2d, lambda: torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 9, 8)),
    "conv1d_reflect": (
        tnn.Conv1d, lambda: torch.nn.Conv1d(3, 5, 3, padding=2, dilation=2, padding_mode="reflect"), (3, 11)
    ),
    "conv_transpose2d": (
        tnn.ConvTranspose2d,
        lambda: torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2),
        (4, 5, 6),
    ),
    "unfold": (tnn.Unfold, lambda: torch.nn.Unfold(3, padding=1, stride=2), (3, 7, 6)),
    "fold": (tnn.Fold, lambda: torch.nn.Fold((5, 6), 2), (12, 20)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_compile_once_for_all_batch_sizes(name):
    """Over 10 batch sizes, as many graphs as the torch twin (2: batch 1, then a symbolic batch), the same values."""
    ours_class, make_twin, shape = MODULES[name]
    torch.manual_seed(0)
    twin = make_twin().double()
    ours = ours_class.from_torch(twin)
    torch_graphs = over_batches(twin, shape, twin)
    assert over_batches(ours, shape, twin) <= torch_graphs


def test_compiled_module_gradients_for_any_batch_size():
    torch.manual_seed(0)
    twin = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    ours = tnn.Conv2d.from_torch(twin)
    compiled, graphs = compiled_with_graph_count(ours, dynamic=True)
    for batch in (2, 5, 7):
        x = randn(batch, 4, 7, 6, seed=batch).requires_grad_(True)
        got = torch.autograd.grad(compiled(x).square().sum(), (x, ours.weight, ours.bias))
        expected = torch.autograd.grad(twin(x).square().sum(), (x, twin.weight, twin.bias))
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, **TOL)
    assert len(graphs) == 1


def test_vjps_compile_once_for_all_batch_sizes():
    w = randn(6, 2, 3, 2, seed=1)
    input_vjp = lambda v: TF.conv_input_vjp(v, w, (8, 6), 2, 1, 1, 2)
    v_reference = lambda v: torch.nn.grad.conv2d_input((v.shape[0], 4, 8, 6), w, v, 2, 1, 1, 2)
    assert over_batches(input_vjp, (6, 4, 4), v_reference) <= 2
    v = randn(max(BATCHES), 6, 4, 4, seed=2)
    weight_vjp = lambda x: TF.conv_weight_vjp(x, v[: x.shape[0]], (3, 2), 2, 1, 1, 2)
    w_reference = lambda x: torch.nn.grad.conv2d_weight(x, w.shape, v[: x.shape[0]], 2, 1, 1, 2)
    assert over_batches(weight_vjp, (4, 8, 6), w_reference) <= 2


def test_transposed_conv_cropped_to_its_pixels_compiles_once_for_all_batch_sizes():
    """Per-side padding: the kernel runs aten.convolution_backward on a batch-sized input and crops."""
    w = randn(4, 3, 3, 2, seed=1)
    transposed = lambda x: TF.conv_transpose(x, w, None, 2, ((2, 0), 1))
    full = lambda x: F.conv_transpose2d(x, w, None, 2)[:, :, 2:, 1:-1]
    assert over_batches(transposed, (4, 5, 6), full) <= 2


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
