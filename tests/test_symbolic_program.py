"""Symbolic programs: one plan for all sizes, its cost as a formula, calls specialised per shape.

Every routine of the table, compiled once with symbolic batch, channels and
spatial sizes, is called on operands of several shapes and equals the
concretely compiled routine (float64). The cost formulas evaluated at concrete
sizes equal the specialised program's costs wherever it took the same path.
"""

from __future__ import annotations

import pytest
import sympy
import torch

import tnconv
import tnconv.programs.program as program_module
from tnconv.conv.hyper import conv_hyper
from tnconv.ir.sizes import leg_symbol
from tnconv.programs.program import REPRESENTATIVE_SIZE
from tnconv.routines import TABLE, Options

TOL = dict(rtol=1e-10, atol=1e-12)
LAYERS = [dict(stride=1, padding=1), dict(stride=2, padding=0), dict(stride=2, padding=1, dilation=2)]
SHAPES = [(2, 3, 7, 6), (1, 2, 5, 9), (3, 1, 8, 8)]
OUT_CHANNELS = 4


def symbolic_program(op: str, layer: dict) -> tnconv.Program:
    routine = TABLE[op]
    shape = ("N", "C", "H", "W")
    out = "D" if routine.needs_out_channels else None
    return tnconv.compile(tnconv.conv_network(op, shape, 3, out, transposed=False, **layer))


def operands_for(op: str, shape: tuple[int, ...], layer: dict) -> tuple[dict[str, torch.Tensor], object]:
    routine = TABLE[op]
    hyper = conv_hyper(shape, 3, OUT_CHANNELS if routine.needs_out_channels else None, transposed=routine.transposed,
                       **layer)
    options = Options(2 if routine.takes_columns else None)
    generator = torch.Generator().manual_seed(sum(shape))
    return {o.name: torch.randn(o.shape(hyper, options), generator=generator, dtype=torch.float64)
            for o in routine.operands}, hyper


def concrete_program(op: str, shape: tuple[int, ...], layer: dict) -> tnconv.Program:
    routine = TABLE[op]
    out = OUT_CHANNELS if routine.needs_out_channels else None
    net = tnconv.conv_network(op, shape, 3, out, transposed=False, **layer)
    return tnconv.compile(net.substitute({leg_symbol("m"): 2}) if net.symbols else net)  # m: the columns


def symbol_values(op: str, shape: tuple[int, ...], layer: dict, symbolic: tnconv.Network) -> dict[str, int]:
    """The symbols' values for ``shape``, read off the unsimplified concrete network (the builder names legs alike)."""
    out = OUT_CHANNELS if TABLE[op].needs_out_channels else None
    unsimplified = tnconv.conv_network(op, shape, 3, out, transposed=False, simplify=False, **layer)
    raw = tnconv.conv_network(op, ("N", "C", "H", "W"), 3, "D" if out else None, transposed=False, simplify=False,
                              **layer)
    values = {size.name: unsimplified.size(leg) for leg, size in raw.sizes.items() if isinstance(size, sympy.Symbol)}
    values = {name: 2 if name == "m" else int(value) for name, value in values.items()}  # m: the columns
    return {name: value for name, value in values.items() if leg_symbol(name) in symbolic.symbols}


@pytest.mark.parametrize("op", sorted(TABLE))
def test_every_routine_runs_symbolically_on_several_shapes(op: str) -> None:
    """One symbolic program per layer, called on operands of three shapes, equals the concrete program."""
    for layer in LAYERS:
        program = symbolic_program(op, layer)
        assert not program.concrete
        for shape in SHAPES:
            operands, _ = operands_for(op, shape, layer)
            concrete = concrete_program(op, shape, layer)
            expected = concrete(**{name: operands[name] for name in concrete.operands})
            args = [operands[name] for name in program.operands]
            values = symbol_values(op, shape, layer, program.network)
            specialised = program.specialize(**values)
            torch.testing.assert_close(specialised(*args), expected, **TOL)
            readable = {size for want in program.expected_shapes for size in want if isinstance(size, sympy.Symbol)}
            if readable == program.network.symbols:  # else: H from a VJP's (N, D, O1, O2) is not read back
                torch.testing.assert_close(program(*args), expected, **TOL)
                torch.testing.assert_close(program(*args), expected, **TOL)  # the cached specialisation


@pytest.mark.parametrize("op", sorted(TABLE))
def test_cost_formulas_equal_the_specialised_costs_on_the_same_path(op: str) -> None:
    """``flops`` / ``largest_intermediate`` at concrete sizes are the specialised program's wherever its plan
    took the representative path (always at the representative sizes themselves), and so is the native
    kernel's FLOPs formula wherever the same kernel runs."""
    layer = LAYERS[0]
    program = symbolic_program(op, layer)
    assert isinstance(program.flops, sympy.Expr) and program.flops.free_symbols
    symbols = {symbol.name: symbol for symbol in program.network.symbols}
    compared = 0
    for values in ({name: REPRESENTATIVE_SIZE for name in symbols}, {name: 60 + 2 * n for n, name in
                                                                      enumerate(sorted(symbols))}):
        specialised = program.specialize(**values)
        assert specialised.concrete
        at = {symbols[name]: value for name, value in values.items()}
        if specialised.path == program.path:
            # the formula is the einsum plan's cost (a pair-Gram program's own exact count has no formula yet)
            assert program.flops.subs(at) == specialised.einsum_plan.flops == program.flops_at(**values)
            assert program.largest_intermediate.subs(at) == specialised.einsum_plan.largest_intermediate
            assert program.largest_intermediate_at(**values) == specialised.einsum_plan.largest_intermediate
            compared += 1
        native = program.kernel_cost()
        if native is not None and specialised.kernel is not None:
            assert sympy.sympify(native.flops).subs(at) == specialised.kernel_cost().flops
    assert compared >= 1


def test_costs_at_sizes_given_by_name() -> None:
    """``flops.subs({"N": 2})`` replaces nothing (the program's ``N`` is a positive integer symbol, not
    ``Symbol("N")``); ``flops_at(N=2)`` evaluates the formula, to an int once every symbol is given."""
    program = symbolic_program("kfac_reduce", LAYERS[0])
    assert program.flops.subs({"N": 2}) == program.flops  # what users tried: silently nothing
    partial = program.flops_at(N=2)
    assert isinstance(partial, sympy.Expr) and {s.name for s in partial.free_symbols} == {"C", "H", "W"}
    full = program.flops_at(N=2, C=3, H=8, W=8)
    assert isinstance(full, int) and full == partial.subs({leg_symbol(n): v for n, v in dict(C=3, H=8, W=8).items()})
    assert program.largest_intermediate_at(N=2, C=3, H=8, W=8) == int(program.largest_intermediate.subs(
        {leg_symbol(n): v for n, v in dict(N=2, C=3, H=8, W=8).items()}))
    with pytest.raises(ValueError, match=r"\['Q'\] name no symbol.*'C', 'H', 'N', 'W'"):
        program.flops_at(Q=2)
    with pytest.raises(ValueError, match="size N must be a positive int, got -2"):
        program.largest_intermediate_at(N=-2)
    concrete = concrete_program("kfac_reduce", SHAPES[0], LAYERS[0])
    assert concrete.flops_at() == concrete.flops


@pytest.mark.parametrize("op", sorted(name for name, routine in TABLE.items() if not routine.transposed))
def test_sizes_the_concrete_layer_refuses_are_refused_when_bound(op: str) -> None:
    """A 3x3 kernel on a 2x2 input: ``conv_hyper`` refuses the concrete layer, and the symbolic program refuses
    those sizes in the same words when they are bound (before: an empty result, or zeros for KFAC-reduce).
    (The transposed routines' layers have an output there: the next test.)"""
    routine = TABLE[op]
    out = OUT_CHANNELS if routine.needs_out_channels else None
    words = r"kernel_size=\(?3.*spans 3 pixels.*larger than the padded input size 2 \+ 0 \+ 0"
    with pytest.raises(ValueError, match=words):
        tnconv.conv_network(op, (2, 3, 2, 2), 3, out, transposed=False)
    program = symbolic_program(op, dict(stride=1, padding=0))
    values = {symbol.name: 2 for symbol in program.network.symbols}
    with pytest.raises(ValueError, match=words):
        program.specialize(**values)
    with pytest.raises(ValueError, match=words):
        program.flops_at(**values)
    if op in ("forward", "unfold", "kfac_expand", "kfac_reduce"):  # operands that hold every symbol
        operands = {"X": torch.ones(2, 3, 2, 2, dtype=torch.float64), "W": torch.ones(4, 3, 3, 3, dtype=torch.float64)}
        with pytest.raises(ValueError, match=words):
            program(**{name: operands[name] for name in program.operands})


def test_a_transposed_output_that_is_not_positive_is_refused_when_bound() -> None:
    """A transposed 3x3 layer with padding 2 on a 1x1 input has output size -1 (on a 2x2 input, 0)."""
    words = r"transposed convolution output size.* is not positive"
    with pytest.raises(ValueError, match=words):
        tnconv.conv_network("forward", (2, 3, 1, 1), 3, 4, transposed=True, padding=2)
    program = tnconv.compile(tnconv.conv_network("forward", ("N", "C", "H", "W"), 3, "D", transposed=True, padding=2))
    x, w = torch.ones(2, 3, 1, 1, dtype=torch.float64), torch.ones(3, 4, 3, 3, dtype=torch.float64)
    for size in (1, 2):
        with pytest.raises(ValueError, match=words.replace(".*", f".* {size - 2}")):
            program(x.expand(2, 3, size, size), w)
    torch.testing.assert_close(program(x.expand(2, 3, 3, 3), w).flatten(1, 2), torch.nn.functional.conv_transpose2d(
        x.expand(2, 3, 3, 3), w, padding=2), **TOL)  # (n, g, c_out, o..): one group


def test_a_repeated_operand_binds_from_every_occurrence() -> None:
    gram = tnconv.compile(tnconv.Network.from_einsum("ij,kj->ik", "X", "X"))
    for shape in ((3, 4), (5, 2)):
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(gram(x), x @ x.T, **TOL)
    square = tnconv.compile(tnconv.Network.from_einsum("ij,jk->ik", "X", "X"))
    x = torch.randn(3, 3, dtype=torch.float64)
    torch.testing.assert_close(square(x), x @ x, **TOL)
    with pytest.raises(ValueError, match=r"operand 'X'.*j = 4|operand 'X'.*i = 3"):
        square(torch.randn(3, 4, dtype=torch.float64))


def test_inconsistent_sizes_name_the_operand_and_the_symbol() -> None:
    program = tnconv.compile(tnconv.Network.from_einsum("ij,jk->ik", "A", "B"))
    with pytest.raises(ValueError, match=r"operand 'B' axis 0 .*j = 3"):
        program(torch.randn(2, 3), torch.randn(4, 5))


def test_a_repeated_call_only_looks_up_its_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first call on some shapes, a call on the same shapes reads no symbols (no sympy)."""
    program = tnconv.compile(tnconv.Network.from_einsum("ij,jk,kl->il", "A", "B", "C"))
    a, b, c = (torch.randn(shape, dtype=torch.float64) for shape in ((2, 3), (3, 4), (4, 5)))
    first = program(a, b, c)

    def unexpected(*args: object) -> None:
        raise AssertionError("symbols resolved again on a repeated shape")

    monkeypatch.setattr(program_module, "resolve_symbols", unexpected)
    torch.testing.assert_close(program(a, b, c), first)
    torch.testing.assert_close(program(A=a, B=b, C=c), first)
    with pytest.raises(AssertionError, match="resolved again"):
        program(torch.randn(3, 3), torch.randn(3, 4), torch.randn(4, 5))


def test_specialize_by_sizes_or_operands_gives_the_concrete_program() -> None:
    program = tnconv.compile(tnconv.Network.from_einsum("ij,jk->ik", "A", "B"))
    by_sizes = program.specialize(i=2, j=3, k=5)
    assert by_sizes.concrete and by_sizes is program.specialize(torch.ones(2, 3), torch.ones(3, 5))
    assert by_sizes.specialize() is by_sizes
    with pytest.raises(ValueError, match=r"missing \['k'\]"):
        program.specialize(i=2, j=3)
    with pytest.raises(ValueError, match=r"\['q'\]"):
        program.specialize(i=2, j=3, k=5, q=1)
    with pytest.raises(ValueError, match="size k must be a positive int, got 0"):
        program.specialize(i=2, j=3, k=0)


def test_the_plan_is_chosen_at_the_representative_size() -> None:
    program = symbolic_program("kfac_reduce", LAYERS[0])
    n, h, w = (leg_symbol(name) for name in "NHW")
    assert program.flops.free_symbols == {n, leg_symbol("C"), h, w}
    assert program.representative.is_concrete
    assert all(program.representative.size(leg) == REPRESENTATIVE_SIZE for leg in ("n", "c_in"))


def test_the_step_table_names_legs_and_costs_each_step() -> None:
    """``path_info``: one row per pairwise step, in the network's leg names, whose FLOPs add up to the path's
    (ints when concrete; formulas in the symbols that agree with them when symbolic)."""
    net = tnconv.Network.from_einsum("batch row, row col, col out -> batch out", "A", "B", "C")
    sizes = {"batch": 2, "row": 3, "col": 4, "out": 5}
    concrete = tnconv.compile(net.substitute({leg_symbol(leg): size for leg, size in sizes.items()}))
    rows = concrete.path_info
    assert len(rows) == 2 and all(isinstance(row.flops, int) for row in rows)
    assert sum(row.flops for row in rows) == concrete.flops
    assert rows[0].equation in ("batch row, row col -> batch col", "row col, col out -> row out")
    assert rows[0].equation in str(concrete) and f"{rows[0].flops}" in str(concrete)
    symbolic = tnconv.compile(net)
    at = {leg_symbol(leg): size for leg, size in sizes.items()}
    formulas = symbolic.path_info
    assert [row.equation for row in formulas] == [row.equation for row in rows]  # this path at 64 and here
    assert [row.flops.subs(at) for row in formulas] == [row.flops for row in rows]
    assert [row.size.subs(at) for row in formulas] == [row.size for row in rows]


@pytest.mark.parametrize("op", sorted(TABLE))
def test_cost_terms_count_what_the_planner_counts(op: str) -> None:
    """The cost terms over leg names (what the formulas come from), at a concrete network's sizes, are the plan's
    integer FLOPs and largest intermediate: gathers, window sums, folds and steps alike."""
    from tnconv.lower.optimize import AUTO
    from tnconv.lower.plan import einsum_plan

    for layer in LAYERS:
        for shape in ((2, 4, 9, 8), (1, 3, 7, 7)):
            net = concrete_program(op, shape, layer).network
            plan = einsum_plan(net, AUTO)
            assert plan.cost.evaluate({leg: int(size) for leg, size in net.sizes.items()}) == (
                plan.flops, plan.largest_intermediate)
