"""Batch sizes under ``torch.compile``: native kernels hold none."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lower_reference import assert_close, random_operands
from strategies import conv_layers

import tnconv
from tnconv.lower.compile import compile

MODES = ("zeros", "reflect", "replicate", "circular")

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
