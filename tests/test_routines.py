"""The routine table: every routine equals its reference, a routine added to a copy of the table alone shows up in
``conv_network``, the command line and ``--check``, and the table's data types refuse bad entries."""

from __future__ import annotations

import math
from dataclasses import replace
from types import MappingProxyType

import pytest
import torch
from cli_run import python, run
from hypothesis import given, settings
from hypothesis import strategies as st
from support.layers import ConvLayer, conv_layers

import tnconv
from tnconv.cli import main
from tnconv.conv import derived
from tnconv.conv.hyper import ConvHyper, conv_hyper
from tnconv.curvature import kfac_expand_factor
from tnconv.passes import Pass
from tnconv.routines import (
    TABLE, Options, Reference, Routine, Scaling, Shortcut, Stage, derive, later, resolve, routine_network,
    routine_table, run_routine,
)
from tnconv.routines.references import patches
from tnconv.routines.run import finish

TOL = dict(rtol=1e-10, atol=1e-12)
MODES = ("zeros", "reflect", "replicate", "circular")
# routines whose networks take a padding mode (X is read through the patterns; gradients are not)
PADDING_MODES = ("forward", "unfold", "patch_sums", "kfac_expand", "kfac_expand_diag", "kfac_reduce",
                 "per_sample_grad_norm", "sum_grad_squared")


def hyper_of(routine: Routine, layer: ConvLayer) -> ConvHyper:
    return conv_hyper(
        layer.x_shape, layer.kernel_size, layer.out_channels if routine.needs_out_channels else None,
        stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
        padding_mode=layer.padding_mode, output_padding=layer.output_padding, transposed=layer.transposed,
    )


def draw_operands(routine: Routine, hyper: ConvHyper, options: Options, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        operand.name: torch.randn(operand.shape(hyper, options), generator=generator, dtype=torch.float64)
        for operand in routine.operands
    }


@st.composite
def routine_cases(draw: st.DrawFn) -> tuple[Routine, ConvLayer]:
    """A routine of the table and a small layer it takes (transposed where it implies or allows it)."""
    routine = draw(st.sampled_from(list(TABLE.values())))
    transposed = routine.transposed or (routine.start != "fold" and draw(st.booleans()))
    modes = MODES if routine.name in PADDING_MODES else ("zeros",)
    layer = draw(conv_layers(max_dims=2, transposed=transposed, padding_modes=modes, max_groups=2))
    return routine, layer


@settings(max_examples=60, deadline=None)
@given(routine_cases(), st.integers(0, 2**16))
def test_every_routine_equals_its_reference(case: tuple[Routine, ConvLayer], seed: int) -> None:
    """run_routine (network or shortcut, scaling, layout) equals the routine's PyTorch reference in float64."""
    routine, layer = case
    hyper = hyper_of(routine, layer)
    options = Options(2 if routine.takes_columns else None)
    operands = draw_operands(routine, hyper, options, seed)
    got = run_routine(routine, hyper, operands, options)
    assert got.shape == routine.result_shape(hyper, options) and got.dtype == torch.float64
    expected = routine.reference.build(hyper)(operands)
    torch.testing.assert_close(got, expected.reshape(got.shape), **TOL)


@pytest.mark.parametrize("name", [name for name, routine in TABLE.items() if routine.shortcut is not None])
def test_a_shortcut_gives_the_whole_network(name: str) -> None:
    """The part of a shortcut, combined with itself, equals the whole derived network (unscaled)."""
    routine = TABLE[name]
    hyper = conv_hyper((2, 4, 7, 6), (3, 2), 4, stride=(2, 1), padding=1, groups=2)
    options = Options(3 if routine.takes_columns else None)
    operands = draw_operands(routine, hyper, options, 0)
    whole = tnconv.compile(routine_network(routine, hyper, options))
    part = tnconv.compile(routine_network(routine, hyper, options, stages=routine.shortcut.stages))
    combined = routine.shortcut.combine(part(**{n: operands[n] for n in part.operands}), hyper)
    expected = whole(**{n: operands[n] for n in whole.operands})
    torch.testing.assert_close(combined.reshape(-1), expected.reshape(-1), **TOL)


@pytest.mark.parametrize("name", list(TABLE))
def test_the_stages_end_in_the_network_conv_network_builds(name: str) -> None:
    """derive's stages: the start network, one per derivation stage with its rewrites, simplify; the last two
    are conv_network's networks without and with simplify."""
    routine = TABLE[name]
    kwargs = dict(input_shape=(2, 4, 6, 5), kernel_size=3, out_channels=4, padding=1, groups=2,
                  transposed=routine.transposed)
    hyper = conv_hyper(**kwargs)
    stages = derive(routine, hyper, Options(), simplify=True)
    assert len(stages) == 1 + len(routine.derivation) + 1
    assert stages[0].rewrites is None and stages[0].title.startswith("built: the ")
    assert all(stage.rewrites for stage in stages[1:-1])  # every pass of a derivation rewrites something
    assert stages[-1].title == "pass: simplify"
    assert stages[-1].network == tnconv.conv_network(name, **kwargs)
    assert stages[-2].network == tnconv.conv_network(name, **kwargs, simplify=False)


# --- a routine added to a copy of the table -------------------------------------------------------


def tie_patches(hyper: ConvHyper, options: Options) -> Pass:
    """The new routine's derivation stage: the Gram matrix of the patches (the existing pass, called directly)."""
    return derived.gram(hyper, options)


def location_summed_factor(hyper: ConvHyper):
    """``1/N sum_{n,t} u u^T`` per group from the patches ``u`` of the (transposed) layer: ``(G, d, d)``."""

    def factor(operands):
        u = patches(hyper, operands["X"])
        u = u.reshape(u.shape[0], hyper.groups, -1, u.shape[-1])
        return torch.einsum("ngat,ngbt->gab", u, u) / hyper.batch

    return factor


NEW = Routine(
    "kfac_expand_transpose_sum",
    "KFAC-expand factor of a transposed layer, summed over locations and averaged over samples: 1/N sum u u^T",
    "unfold",
    TABLE["kfac_expand"].operands,
    TABLE["kfac_expand"].result_shape,
    Reference(location_summed_factor),
    derivation=(Stage("fuse: P[n,g,c_in,k..,i..] P[n,g,c_in_2,k_2..,i..] summed over n and i.. (the new one)",
                      tie_patches),),
    transposed=True,
    scaling=Scaling("1/N", "sum_{n,t} u u^T over the patches u", "the location-summed factor", "(G, d, d)",
                    "d = C_in/G * prod(K)"),
    widen_half=True,
)
WITH_NEW = routine_table((*TABLE.values(), NEW))
CLI_LAYER = ("--input", "2,4,5,4", "--kernel", "3,2", "--stride", "2", "--padding", "1", "--output-padding", "1,0",
             "--groups", "2", "--out-channels", "6")


def test_a_routine_added_to_a_copy_of_the_table_is_in_conv_network() -> None:
    shape, kernel = (2, 4, 5, 4), (3, 2)
    layer = dict(stride=2, padding=1, output_padding=(1, 0), groups=2)
    net = tnconv.conv_network("kfac-expand-transpose-sum", shape, kernel, **layer, routines=WITH_NEW)
    tnconv.verify(net)
    assert net.output == ("g", "c_in", "k1", "k2", "c_in_2", "k1_2", "k2_2") and net.operands == ("X",)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hyper = conv_hyper(shape, kernel, **layer, transposed=True)
    locations = math.prod(hyper.output_size)
    expected = kfac_expand_factor(x, kernel, **layer, transposed=True) * locations  # 1/(N*T) -> 1/N
    torch.testing.assert_close(run_routine(NEW, hyper, {"X": x}), expected, **TOL)
    torch.testing.assert_close(tnconv.compile(net)(X=x).reshape(expected.shape) / 2, expected, **TOL)
    half = run_routine(NEW, hyper, {"X": x.half()})
    assert half.dtype == torch.float16 and torch.allclose(half.double(), expected, rtol=2e-3, atol=1e-3)
    with pytest.raises(ValueError, match="unknown routine 'kfac-expand-transpose-sum'"):
        tnconv.conv_network("kfac-expand-transpose-sum", shape, kernel, **layer)  # TABLE itself is unchanged


def test_a_routine_added_to_a_copy_of_the_table_derives_and_checks_on_the_command_line(capsys) -> None:
    status, out, err = run("derive", "kfac-expand-transpose-sum", *CLI_LAYER, "--check", "--no-diagram",
                           routines=WITH_NEW)
    assert status == 0, err
    assert out.startswith("tnconv derive kfac-expand-transpose-sum   (conv_network op 'kfac_expand_transpose_sum')")
    assert "ConvTranspose2d" in out  # the routine implies a transposed layer
    for title in ("== 1. built: the unfold network, patches U[n,g,c_in,k..,o..] = X Pi.. of the transposed layer ==",
                  "== 2. fuse: P[n,g,c_in,k..,i..] P[n,g,c_in_2,k_2..,i..] summed over n and i.. (the new one) ==",
                  "== 3. pass: simplify ==", "== compiled ==", "== the location-summed factor =="):
        assert title in out
    assert "1. fuse: P [inner output binds" in out  # the stage's rewrites, from its pass's trace
    assert "the location-summed factor is it times 1/N = 1/2 = 1/2 (N = 2 samples)," in out
    assert "PASSED" in out and "passed  vs PyTorch" in out
    assert main(["derive", "--help"], routines=WITH_NEW) == 0  # argparse prints help to sys.stdout
    assert "kfac-expand-transpose-sum" in "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens
    status, _, err = run("derive", "kfac-expand-transpose-sum", *CLI_LAYER, "--no-diagram")
    assert status == 2 and "unknown routine 'kfac-expand-transpose-sum'" in err


def test_check_of_an_added_routine_fails_against_a_wrong_reference() -> None:
    """--check of the new routine compares with its own reference: a wrong one fails."""
    wrong = replace(NEW, reference=Reference(lambda hyper: lambda operands: location_summed_factor(hyper)(operands) * 2))
    routines = routine_table((*TABLE.values(), wrong))
    status, out, _ = run("derive", "kfac-expand-transpose-sum", *CLI_LAYER, "--check", "--no-diagram",
                         routines=routines)
    assert status == 1 and "FAILED" in out


# --- the data types -----------------------------------------------------------------------------


def test_the_table_is_immutable_and_names_are_unique() -> None:
    assert isinstance(TABLE, MappingProxyType)
    with pytest.raises(TypeError):
        TABLE["new"] = NEW  # type: ignore[index]
    with pytest.raises(ValueError, match="two routines are named 'forward'"):
        routine_table((*TABLE.values(), replace(TABLE["forward"])))
    with pytest.raises(TypeError, match="routine_table takes Routine objects, got str"):
        routine_table(("forward",))  # type: ignore[arg-type]
    assert all(name == routine.name for name, routine in TABLE.items())


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(name="Kfac-New"), "Routine name must be a lower-case identifier (kfac_reduce), got 'Kfac-New'"),
        (dict(start="patches"), "start must be one of ('forward', 'input_vjp', 'weight_vjp', 'unfold', 'fold'), got"),
        (dict(shortcut=Shortcut(2, lambda part, hyper: part, "")), "shortcut.stages must be in 0..1"),
    ],
)
def test_a_routine_refuses_bad_entries(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        replace(NEW, **change)
    assert message in str(raised.value)


def test_names_resolve_in_either_spelling_with_the_closest_name() -> None:
    assert resolve("kfac-reduce", TABLE) is resolve("kfac_reduce", TABLE) is TABLE["kfac_reduce"]
    with pytest.raises(ValueError, match=r"^ROUTINE: unknown routine 'kfac_reduse'; did you mean 'kfac-reduce'\?"):
        resolve("kfac_reduse", TABLE, "ROUTINE", hyphens=True)
    with pytest.raises(TypeError, match="op must be a routine name"):
        resolve(3, TABLE)


def test_scaling_formulas_use_layer_quantities_only() -> None:
    hyper = conv_hyper((2, 4, 6, 6), 3, 4)
    bad = replace(NEW, scaling=replace(NEW.scaling, formula="1/(N*M)"))
    with pytest.raises(ValueError, match=r"scaling formula '1/\(N\*M\)' uses \['M'\]; it may use N, T, G"):
        finish(bad, hyper)
    exact = replace(NEW, scaling=replace(NEW.scaling, formula="C_out/(G*T^2)"))
    done = finish(exact, hyper)
    assert (done.numerator, done.denominator, done.shape) == (1, 64, (1, 36, 36))  # 4 / (1 * 16^2)


def test_later_imports_its_function_when_called() -> None:
    assert later("math:prod")((2, 3)) == 6 and later("math:prod", start=2)((3,)) == 6
    with pytest.raises(ValueError, match="path must be 'module:attribute', got 'math.prod'"):
        later("math.prod")


def test_importing_the_table_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from tnconv.routines import TABLE, resolve\n"
        "print(len(TABLE), resolve('diag-ggn', TABLE).takes_columns,\n"
        "      sorted(m for m in ('torch', 'sympy', 'networkx', 'opt_einsum') if m in sys.modules))\n"
    )
    assert python(code).split() == [str(len(TABLE)), "True", "[]"]
