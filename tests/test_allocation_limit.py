"""The allocation limit (``tnconv.limits``): a result or intermediate above it is refused by name before anything is
allocated, at every entry point, through one check.

Each case runs under an explicit limit (``tnconv.set_allocation_limit``), so that it refuses on every machine;
the tensors that would be made are far larger than the memory the test has, so a missing check fails the
test in the allocator (or with a different error), not silently.
"""

from __future__ import annotations

import pytest
import torch
from cli_run import one_line_error, run

import tnconv
from tnconv import limits
from tnconv.cli import measure
from tnconv.cli.derive import derive
from tnconv.cli.layers import builtin_layer

GIB = 2**30
X = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def huge(size: int) -> torch.Tensor:
    """A float32 vector of ``size`` ones that takes no memory (an expanded scalar)."""
    return torch.ones(1).expand(size)


def test_set_allocation_limit_sets_it_and_as_a_context_restores_it() -> None:
    default = tnconv.allocation_limit()
    memory = limits.machine_memory()
    assert default == (int(memory * limits.DEFAULT_FRACTION) if memory else limits.UNKNOWN_MEMORY_LIMIT)
    with tnconv.set_allocation_limit(GIB) as setting:
        assert tnconv.allocation_limit() == GIB and setting.previous == default
        with tnconv.set_allocation_limit(2 * GIB):
            assert tnconv.allocation_limit() == 2 * GIB
        assert tnconv.allocation_limit() == GIB
    assert tnconv.allocation_limit() == default
    tnconv.set_allocation_limit(3 * GIB)  # a plain call: from now on
    try:
        assert tnconv.allocation_limit() == 3 * GIB
    finally:
        tnconv.set_allocation_limit(None)
    assert tnconv.allocation_limit() == default
    with pytest.raises(ValueError, match="limit must be at least 1 byte, got 0"):
        tnconv.set_allocation_limit(0)
    with pytest.raises(TypeError, match="limit must be an int.*2.5"):
        tnconv.set_allocation_limit(2.5)  # type: ignore[arg-type]
    assert tnconv.allocation_limit() == default


def test_a_lazily_named_check_names_the_tensor_only_when_it_refuses() -> None:
    def unused() -> str:
        raise AssertionError("the name of a tensor within the limit was made")

    with tnconv.set_allocation_limit(1000):
        limits.check_allocation(250, 4, unused)  # exactly the limit: allowed, nothing formatted
        with pytest.raises(ValueError, match=r"^the padded input would hold 251 elements \(1.0 kB"):
            limits.check_allocation(251, 4, lambda: "the padded input")


def test_an_outer_product_too_large_for_the_limit_is_refused_before_allocating() -> None:
    """``"i,j->ij"`` on two 1e5 vectors asks for 40 GB: refused under 1 GiB, naming the size."""
    with tnconv.set_allocation_limit(GIB), pytest.raises(ValueError) as refused:
        tnconv.einsum("i,j->ij", huge(10**5), huge(10**5))
    message = str(refused.value)
    for words in ("the result", "10,000,000,000 elements", "40.0 GB", "4 bytes each", "1.1 GB (1.0 GiB)",
                  "tnconv.set_allocation_limit"):
        assert words in message, (words, message)
    with pytest.raises(ValueError, match="the result .* 100,000,000,000,000 elements"):
        tnconv.einsum("i,j->ij", huge(10**7), huge(10**7))  # 400 TB: refused by the default limit anywhere
    torch.testing.assert_close(tnconv.einsum("i,j->ij", huge(3), huge(2)), torch.ones(3, 2))


def test_a_large_intermediate_and_a_program_call_are_refused() -> None:
    """An explicit path through a (1000, 1000) intermediate with a scalar result: the intermediate is named."""
    net = tnconv.Network.from_einsum("i,j,ij->", "A", "B", "C", sizes={"i": 1000, "j": 1000})
    program = tnconv.compile(net, optimize=[(0, 1), (0, 1)])
    a, b, c = torch.ones(1000, dtype=torch.float64), torch.ones(1000, dtype=torch.float64), torch.ones(1000, 1000)
    with tnconv.set_allocation_limit(10**6), pytest.raises(ValueError, match="largest intermediate .* 1,000,000 "
                                                                          "elements .*8.0 MB"):
        program(a, b, c.double())
    assert program(a, b, c.double()).item() == 10**6
    symbolic = tnconv.compile(tnconv.Network.from_einsum("i,j->ij", "A", "B"))
    with tnconv.set_allocation_limit(GIB), pytest.raises(ValueError, match="the result .* 10,000,000,000 elements"):
        symbolic(huge(10**5), huge(10**5))


def test_a_layer_padded_beyond_the_limit_is_refused_by_the_per_layer_routines() -> None:
    """KFAC-expand with padding 1e5 on a 4x4 input: its pattern-pair Gram pads the input to 160 GB (a 9x9
    result); the results of unfold and of a convolution so padded are refused as well."""
    with tnconv.set_allocation_limit(GIB):
        with pytest.raises(ValueError, match=r"padded operand.* 40,001,600,016 elements \(160.0 GB"):
            tnconv.curvature.kfac_expand_factor(X, 3, padding=10**5)
        with pytest.raises(ValueError, match="the result .* 360,007,200,036 elements"):
            tnconv.functional.unfold(X, 3, padding=10**5)
        with pytest.raises(ValueError, match="the result .* 20,000,000,000 elements"):
            tnconv.functional.conv(X, torch.ones(2, 1, 3, 3), padding=(10**5 - 2) // 2)
    factor = tnconv.curvature.kfac_expand_factor(X, 3, padding=1)  # a layer that fits runs as before
    assert factor.shape == (1, 9, 9)


def test_a_native_kernel_refuses_its_padded_input_beyond_the_limit() -> None:
    """A one-sided padding of 7e5 with an equal stride: the result (and the operands) are a few numbers, but the
    native kernel pads the 4x4 input to 700004x700004 (1.96 TB) before it runs; refused by the limit, naming the
    size (before, the allocator failed - or, on a machine that large, it ran)."""
    far = 7 * 10**5
    padding = ((0, far), (0, far))
    refused = r"the input \(1, 1, 4, 4\) padded to \(1, 1, 700004, 700004\) .* 490,005,600,016 elements \(1960.0 GB"
    with tnconv.set_allocation_limit(GIB):
        with pytest.raises(ValueError, match=refused):
            tnconv.functional.conv(X, torch.ones(2, 1, 3, 3), padding=padding, stride=far)
        with pytest.raises(ValueError, match=refused):
            tnconv.functional.conv_weight_vjp(X, torch.ones(1, 2, 2, 2), 3, stride=far, padding=padding)
        with pytest.raises(ValueError, match=refused):
            tnconv.functional.unfold(X, 3, stride=far, padding=padding)
        near = ((0, 3), (0, 3))  # a padding that fits runs as before
        torch.testing.assert_close(
            tnconv.functional.conv(X, torch.ones(2, 1, 3, 3), padding=near, stride=3),
            torch.nn.functional.conv2d(torch.nn.functional.pad(X, [0, 3, 0, 3]), torch.ones(2, 1, 3, 3), stride=3),
        )


def test_the_command_line_check_and_bench_use_the_allocation_limit() -> None:
    """``derive --check`` / ``--bench`` refuse a layer by the library's limit (no separate bound of their own):
    under a 10 kB limit ``tiny_2d``'s check and bench (tensors of a few thousand numbers) are refused, naming the
    size; under the default they run. The einsum plan that ``--check`` compares a native kernel with is skipped, with the reason, when its
    largest intermediate exceeds the same limit."""
    with tnconv.set_allocation_limit(10**4):
        for flag in ("--check", "--bench"):
            status, _, err = run("derive", "forward", "--layer", "tiny_2d", flag, "--no-diagram")
            assert status == 2
            line = one_line_error(err)
            assert f"{flag}: this layer's largest tensor (use a smaller --batch or layer) would hold" in line, line
            assert "more than the allocation limit of 10.0 kB" in line, line
    status, out, _ = run("derive", "forward", "--layer", "tiny_2d", "--check", "--no-diagram")
    assert status == 0, out
    derivation = derive("forward", builtin_layer("tiny_2d"))
    with tnconv.set_allocation_limit(derivation.program.largest_intermediate * 8 - 1):
        assert "more than the allocation limit" in (measure._plan_too_large(derivation) or "")
    assert measure._plan_too_large(derivation) is None


def test_kfac_refuses_monte_carlo_columns_beyond_the_limit_at_update() -> None:
    """``mc_samples=10**9``: the columns ``(M, N, C)`` are refused when N and C are known (update); columns that
    fit but whose pullback to a layer output does not are refused too."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    inputs, targets = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    kfac = tnconv.curvature.KFAC(model, torch.nn.CrossEntropyLoss(), fisher="mc", mc_samples=10**9)
    with tnconv.set_allocation_limit(GIB), pytest.raises(ValueError, match=r"GGN columns \(M, N, C\) = "
                                                                          r"\(1000000000, 4, 10\).*160.0 GB"):
        kfac.update(inputs, targets)
    assert kfac.factors == {}
    kfac = tnconv.curvature.KFAC(model, torch.nn.CrossEntropyLoss(), fisher="mc", mc_samples=10**4)
    with tnconv.set_allocation_limit(10**7), pytest.raises(ValueError, match="10000 columns pulled back to layer "
                                                                              "'0'.*11,520,000 elements"):
        kfac.update(inputs, targets)


def test_the_command_line_bounds_its_batch_and_its_repeats() -> None:
    """The batch itself, then its largest layer output (one sample's, times N: before the batch is made), then
    ``--repeats`` (a count of runs: 10**12 would run for ever)."""
    with tnconv.set_allocation_limit(GIB):
        status, _, err = run("curvature", "resnet18-cifar", "--input", "1000000,3,32,32", "--no-timing")
        assert status == 2
        assert ("argument --input: a batch 1000000,3,32,32 of float32 inputs would hold 3,072,000,000 elements "
                "(12.3 GB") in one_line_error(err)
        status, _, err = run("curvature", "resnet18-cifar", "--input", "10000,3,32,32", "--no-timing")
    assert status == 2
    line = one_line_error(err)
    assert "--input 10000,3,32,32: the largest layer output of the batch would hold 655,360,000 elements" in line
    for command in (("curvature", "resnet18-cifar"), ("derive", "forward", "--bench")):
        status, _, err = run(*command, "--repeats", str(10**12))
        assert status == 2
        assert "--repeats: at most 1,000 timed runs, got 1,000,000,000,000" in one_line_error(err)


def test_a_call_under_torch_compile_reads_the_limit() -> None:
    """The check is a plain attribute read in the call: ``torch.compile(fullgraph=True)`` traces it without a break
    and guards on the limit, so that a lower one retraces and refuses (with ``fullgraph=True`` dynamo reports the
    ValueError it met while tracing as its own error, with the message)."""
    program = tnconv.compile(tnconv.Network.from_einsum("i,j->ij", "A", "B", sizes={"i": 100, "j": 100}))
    a, b = torch.ones(100), torch.ones(100)
    for fullgraph, error in ((True, torch._dynamo.exc.Unsupported), (False, ValueError)):
        torch._dynamo.reset()
        compiled = torch.compile(lambda a, b: program(a, b), fullgraph=fullgraph, backend="eager")
        torch.testing.assert_close(compiled(a, b), torch.ones(100, 100))
        with tnconv.set_allocation_limit(1000), pytest.raises(error, match="the result .* 10,000 elements"):
            compiled(a, b)
