"""Symbolic conv networks: sizes given as symbol names or sympy expressions in ``conv_network``.

Every routine of the table, built once with symbols for the batch, channels and
spatial sizes, equals the concretely built network in float64 on several
shapes (the symbols substituted, and where the operands fix every symbol, the
symbolic program called on them directly). Validation refuses what fails for
every value of the symbols and leaves the rest to the call that binds them.
"""

from __future__ import annotations

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers

import tnconv
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.ir.sizes import leg_symbol
from tnconv.passes import simplify_traced
from tnconv.routines import TABLE, Options, Routine
from tnconv.routines.run import finish

TOL = dict(rtol=1e-10, atol=1e-12)
N, C, D, M = (leg_symbol(name) for name in ("N", "C", "D", "m"))


def spatial_symbols(dims: int) -> tuple[sympy.Symbol, ...]:
    return tuple(leg_symbol(f"I{d + 1}") for d in range(dims))


def channels(symbol: sympy.Symbol, groups: int) -> object:
    """``"C"`` for one group (a name), else ``groups * C`` (divisible by ``groups`` for every ``C``)."""
    return symbol.name if groups == 1 else groups * symbol


def symbolic_network(routine: Routine, layer: ConvLayer) -> tnconv.Network:
    """``conv_network`` of ``routine`` with ``(N, C, I1..)`` (and ``D`` output channels) all symbolic."""
    shape = ("N", channels(C, layer.groups), *(s.name for s in spatial_symbols(layer.dims)))
    return tnconv.conv_network(
        routine.name, shape, layer.kernel_size, channels(D, layer.groups) if routine.needs_out_channels else None,
        stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        padding_mode=layer.padding_mode, output_padding=layer.output_padding,
        transposed=layer.transposed and not routine.transposed,
    )


def concrete_hyper(routine: Routine, layer: ConvLayer, sizes: tuple[int, ...]) -> ConvHyper:
    return conv_hyper(
        (layer.x_shape[0], layer.in_channels, *sizes), layer.kernel_size,
        layer.out_channels if routine.needs_out_channels else None, stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode,
        output_padding=layer.output_padding, transposed=layer.transposed or routine.transposed,
    )


def values_of(layer: ConvLayer, sizes: tuple[int, ...], net: tnconv.Network) -> dict[sympy.Symbol, int]:
    """The symbols' values for ``layer`` with spatial ``sizes`` (those of ``net``'s symbols)."""
    values = {N: layer.x_shape[0], C: layer.in_channels // layer.groups, D: layer.out_channels // layer.groups, M: 2}
    values.update(zip(spatial_symbols(layer.dims), sizes))
    return {symbol: value for symbol, value in values.items() if symbol in net.symbols}


@st.composite
def routine_layers(draw: st.DrawFn) -> tuple[Routine, ConvLayer]:
    routine = draw(st.sampled_from(list(TABLE.values())))
    transposed = routine.transposed or (routine.start != "fold" and draw(st.booleans()))
    layer = draw(conv_layers(max_dims=2, transposed=transposed, max_groups=2, padding_modes=("zeros", "reflect")))
    return routine, layer


@settings(max_examples=40, deadline=None)
@given(routine_layers(), st.integers(0, 3), st.integers(0, 2**16))
def test_symbolic_routine_equals_the_concrete_one_on_several_shapes(
    case: tuple[Routine, ConvLayer], grow: int, seed: int
) -> None:
    """One symbolic derivation, substituted for the drawn shape and a larger one, equals the concrete network."""
    routine, layer = case
    symbolic = symbolic_network(routine, layer)
    assert symbolic.symbols  # batch and spatial sizes at least are symbols
    for sizes in (layer.x_shape[2:], tuple(i + grow for i in layer.x_shape[2:])):
        hyper = concrete_hyper(routine, layer, sizes)
        concrete = tnconv.compile(tnconv.conv_network(
            routine.name, hyper.input_shape, hyper.kernel_size, hyper.out_channels, hyper.stride, hyper.padding,
            hyper.dilation, hyper.groups, hyper.padding_mode, hyper.output_padding, hyper.transposed,
        ))
        specialised = symbolic.substitute(values_of(layer, sizes, symbolic))
        assert specialised.is_concrete
        options = Options(2 if routine.takes_columns else None)
        generator = torch.Generator().manual_seed(seed)
        operands = {
            op.name: torch.randn(op.shape(hyper, options), generator=generator, dtype=torch.float64)
            for op in routine.operands
        }
        expected = concrete(**{name: operands[name] for name in concrete.operands})
        got = tnconv.compile(specialised)(**{name: operands[name] for name in specialised.operands})
        torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("op", ["forward", "weight_vjp", "unfold", "kfac_reduce", "kfac_expand", "per_sample_grad"])
def test_a_symbolic_program_binds_its_symbols_from_the_operands(op: str) -> None:
    """``("N", "C", "H", "W")`` with stride 2 and padding 1: called on operands of two shapes, it equals PyTorch."""
    routine = TABLE[op]
    symbolic = tnconv.conv_network(op, ("N", "C", "H", "W"), 3, "D" if routine.needs_out_channels else None,
                                   stride=2, padding=1)
    program = tnconv.compile(symbolic)
    for shape in ((2, 3, 7, 6), (1, 2, 5, 9)):
        hyper = conv_hyper(shape, 3, 4 if routine.needs_out_channels else None, stride=2, padding=1)
        generator = torch.Generator().manual_seed(sum(shape))
        operands = {o.name: torch.randn(o.shape(hyper, Options()), generator=generator, dtype=torch.float64)
                    for o in routine.operands}
        expected = routine.reference.build(hyper)(operands)
        got = finish(routine, hyper)(program(**operands))
        torch.testing.assert_close(got, expected.reshape(got.shape), **TOL)


def test_output_sizes_are_sympy_expressions() -> None:
    H, W = leg_symbol("H"), leg_symbol("W")
    net = tnconv.conv_network("forward", ("N", 8, "H", "W"), (3, 2), "D", stride=(2, 1), padding=((1, 0), 0),
                              dilation=(1, 2), simplify=False)
    assert net.size("o1") == sympy.floor((H + 1 - 2 - 1) / 2) + 1 and net.size("o2") == W - 2
    assert net.size("n") == N and net.size("c_in") == 8 and net.size("c_out") == D
    same = tnconv.conv_network("forward", (1, 1, "H"), 4, 1, padding="same", dilation=2, simplify=False)
    assert same.size("o1") == H  # "same" pads D*(K-1) whatever H is
    transposed = tnconv.conv_network("transpose_forward", (1, 1, "H"), 3, 1, stride=2, padding=1, output_padding=1,
                                     simplify=False)
    assert transposed.size("i1") == 2 * H
    grouped = tnconv.conv_network("forward", ("N", 2 * C, "H"), 3, 4 * D, groups=2, simplify=False)
    assert grouped.size("g") == 2 and grouped.size("c_in") == C and grouped.size("c_out") == 2 * D


@pytest.mark.parametrize("arguments, error, words", [
    (dict(input_shape=("N", "C", "H"), groups=2), ValueError, ["in_channels=C", "groups=2", "not proven", "2*C"]),
    (dict(out_channels="D", groups=2, input_shape=("N", 4, "H")), ValueError, ["out_channels=D", "groups=2"]),
    (dict(input_shape=("N", 4, 0)), ValueError, ["input_shape", "0"]),
    (dict(input_shape=("N", "4x", "H")), TypeError, ["input_shape", "'4x'"]),
    (dict(input_shape=("N", 4, 2.5)), TypeError, ["input_shape", "2.5"]),
    (dict(input_shape=("N", 4, sympy.Symbol("H") / 2)), ValueError, ["input_shape", "H/2"]),
    (dict(input_shape=("N", 4, "H"), padding=10**12), ValueError, ["padding=1000000000000", "MAX_ELEMENTS"]),
])
def test_symbolic_layers_refuse_what_fails_for_every_value(arguments: dict, error: type, words: list[str]) -> None:
    arguments = {"kernel_size": 3, **arguments}
    with pytest.raises(error) as info:
        tnconv.conv_network("forward" if "out_channels" in arguments else "unfold", **arguments)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_what_holds_for_some_values_is_left_to_the_call() -> None:
    """A 5-tap kernel on ``H`` pixels, reflect padding 2: fine for H >= 3, so not an error until bound."""
    net = tnconv.conv_network("unfold", (1, 1, "H"), 5, padding=2, padding_mode="reflect")
    assert net.symbols == {leg_symbol("H")}
    with pytest.raises(ValueError, match="reflect"):
        tnconv.conv_network("unfold", (1, 1, 2), 5, padding=2, padding_mode="reflect")


def test_functional_routines_keep_int_sizes() -> None:
    """Only ``conv_network`` takes symbols: the layer of a call is made of its tensors' ints."""
    with pytest.raises(TypeError, match="input_shape"):
        conv_hyper(("N", 1, 5), 3)


def test_dense_does_not_fire_unless_divisibility_is_proven() -> None:
    """K = S = 2 on ``H`` pixels: ``H % 2 == 0`` is not proven, so no dense rule (the trace says why); on ``2*M``
    pixels it is, and dense fires. Both equal the concrete networks on even and odd sizes."""
    open_size = tnconv.conv_network("forward", (1, 3, "H"), 2, 4, stride=2, simplify=False)
    simple, trace = simplify_traced(open_size)
    assert "dense" not in trace.rules()
    assert [str(r) for r in trace.unproven()] == ["dense: Pi1 not applied [not proven for all sizes: H % 2 == 0]"]
    assert "-  dense: Pi1 not applied" in str(trace)
    even = tnconv.conv_network("forward", (1, 3, 2 * M), 2, 4, stride=2, simplify=False)
    simple_even, trace_even = simplify_traced(even)
    assert trace_even.rules() == ("dense",) and not trace_even.unproven()
    assert "I=2*m=S*O" in str(trace_even)
    w = torch.randn(4, 3, 2, dtype=torch.float64)
    for net, values, size in ((simple, {"H": 9}, 9), (simple, {"H": 8}, 8), (simple_even, {"m": 4}, 8)):
        x = torch.randn(1, 3, size, dtype=torch.float64)
        got = tnconv.compile(net.substitute(values))(X=x, W=w)
        torch.testing.assert_close(got, torch.nn.functional.conv1d(x, w, stride=2)[:, None], **TOL)


def test_a_symbolic_index_pattern_is_built_when_bound() -> None:
    from tnconv.conv.index_pattern import pattern

    symbolic = pattern("H", 3, stride=2, padding=1)
    assert symbolic.output_size == sympy.floor((leg_symbol("H") - 1) / 2) + 1
    for size in (4, 7):
        assert symbolic.substitute({leg_symbol("H"): size}) == pattern(size, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match="needs an int I"):
        tnconv.index_pattern("H", 3)
