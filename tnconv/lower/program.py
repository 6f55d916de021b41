"""``Program``: a compiled network - its plan, and the backend runner that calls it with torch tensors.

A program holds a fixed plan made of plain data (``tnconv.lower.plan``) and the
torch backend's runner of it (``tnconv.backends.torch``: every torch call fixed
once), so that calling it costs little and ``torch.compile(fullgraph=True)``
traces it without a graph break:

- ``native``: one PyTorch kernel (``tnconv.lower.native``) computes the whole
  network - a convolution, its input or weight VJP, a transposed convolution,
  unfold, fold, a matrix product;
- ``einsum``: otherwise, index patterns run as taps (strided views), gathers
  and scatters (``tnconv.lower.einsum``) and the rest as pairwise steps along
  an opt_einsum path, each a fixed permute / reshape / ``matmul`` recipe
  (``tnconv.lower.steps``), sliced over a leg when a ``memory_limit`` asks for
  it (``tnconv.lower.slicing``).

``Program.strategy`` says which: ``"native:conv2d"``, ``"einsum"``,
``"einsum+sliced(n:4)"``, ``"einsum+dense(Pi1)"`` (a pattern that had to be
built densely), ``"pair_gram"`` (KFAC-expand's pattern pairs as windowed
cross-correlations, ``tnconv.lower.pair_gram``). Importing this module needs no torch; making a concrete
program imports the torch backend.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from tnconv.ir.network import Network
from tnconv.lower.bind import axis_labels, operand_shapes, resolve_symbols
from tnconv.lower.cache import PROGRAMS
from tnconv.lower.kernels import KernelCost, Native
from tnconv.lower.nodes import Executor, Plan, Sliced
from tnconv.lower.pair_gram import PairGram
from tnconv.lower.path import Optimize
from tnconv.lower.plan import einsum_plan, plan

if TYPE_CHECKING:
    import torch

    from tnconv.backends.torch.runner import NativeKernel, Runner
    from tnconv.ir.sizes import Size


class Program:
    """A network lowered to a plan that the torch backend runs.

    Attributes:
        network: the network it computes.
        equation: the network as one einsum equation (one letter per leg).
        operands: names of the tensors to pass, in positional order.
        strategy: how it executes (see the module docstring).
        plan: the plan (``tnconv.lower.nodes``: ``Native``, ``Einsum`` or ``Sliced``), None while sizes are symbolic.
        runner: the torch backend's runner of the plan (``tnconv.backends.torch.Runner``: its torch calls,
            fixed once, and its ``constants`` per dtype and device), None while sizes are symbolic.
        memory_limit: the budget (elements) for intermediates of the einsum path, or None.
        path: the contraction path of the einsum path (opt_einsum convention, over the
            working tensors: data tensors and densely built ones, index patterns already
            applied; with an explicit ``optimize`` path, over ``network.entries``).
        flops: the einsum path's cost estimate (gathers and scatters count their size); for a
            ``pair_gram`` plan, its exact count (weight-VJP calls and assembly).
        largest_intermediate: elements of its largest intermediate tensor.
        steps: its per-step einsum equations (each runs as fixed permute / reshape / matmul
            calls, ``tnconv.lower.steps``; ``torch.einsum`` only for a diagonal).
    """

    def __init__(self, network: Network, optimize: Optimize, memory_limit: int | None = None) -> None:
        self.network = network
        self.equation = network.to_einsum()
        self.operands = network.operands
        self.optimize = optimize
        self.memory_limit = memory_limit
        shapes = operand_shapes(network)
        self.expected_shapes: tuple[tuple["Size", ...], ...] = tuple(shapes[name] for name in self.operands)
        """The shape each operand must have (in ``operands`` order; symbolic sizes where the network has them)."""
        self.axis_labels = axis_labels(network)
        """For each operand, what each axis is in terms of legs (for error messages)."""
        self.plan: Plan | None = None
        self.runner: "Runner | None" = None
        if not network.is_concrete:
            self.strategy = "symbolic"
            return
        self.plan = plan(network, optimize, memory_limit)
        if isinstance(self.plan, (Native, PairGram)):
            self.strategy = "native:" + self.plan.name if isinstance(self.plan, Native) else self.plan.name
        else:
            self.strategy = _describe(self.plan)
        from tnconv.backends.torch.runner import Runner

        self.runner = Runner(self)

    # --- cost ---------------------------------------------------------------------------
    @property
    def concrete(self) -> bool:
        """Whether all sizes are known (else the plan is made per call from operand shapes)."""
        return self.network.is_concrete

    @cached_property
    def einsum_plan(self) -> Executor:
        """The einsum path's plan: the plan itself, or for a native program the one it would run otherwise
        (planned when first asked, for its cost and as a reference)."""
        if isinstance(self.plan, (Native, PairGram, type(None))):
            return einsum_plan(self.network, self.optimize, self.memory_limit)
        return self.plan

    @property
    def path(self) -> tuple[tuple[int, ...], ...]:
        return _innermost(self.einsum_plan).contraction.path

    @property
    def flops(self) -> int:
        return self.plan.flops if isinstance(self.plan, PairGram) else self.einsum_plan.flops

    @property
    def largest_intermediate(self) -> int:
        plan = self.plan
        return plan.largest_intermediate if isinstance(plan, PairGram) else self.einsum_plan.largest_intermediate

    @property
    def steps(self) -> tuple[str, ...]:
        """The per-step einsum equations of the einsum path, in order."""
        return tuple(step.equation for step in _innermost(self.einsum_plan).contraction.steps)

    def kernel_cost(self) -> KernelCost | None:
        """What a call of the native kernel does (FLOPs, the tensors it creates), or None without one.

        The other cost attributes describe the einsum plan, which a native program does not run.
        """
        kernel = self.kernel
        if kernel is None:
            return None
        from tnconv.backends.torch.cost import kernel_cost

        return kernel_cost(self.plan, kernel, self.expected_shapes)  # type: ignore[arg-type]

    @property
    def kernel(self) -> "NativeKernel | None":
        """The PyTorch kernel that runs the whole network (``strategy`` ``"native:..."``), else None.

        A callable on the operands in ``operands`` order, with none of the checks of a
        call, used for floating-point operands only (a call runs other dtypes on the
        einsum path). It holds no batch size where it needs none (``tnconv.lower.native``),
        and kernels compare equal when they are the same call.
        """
        return None if self.runner is None else self.runner.kernel

    # --- running ------------------------------------------------------------------------
    def run_einsum_plan(self, *args: "torch.Tensor", **kwargs: "torch.Tensor") -> "torch.Tensor":
        """Contract a concrete network along its einsum plan, even where a native kernel would run it.

        An independent reference for the kernel (``tnconv derive --check``).
        """
        if self.runner is None:
            raise ValueError("run_einsum_plan needs a concrete program; use program.specialize(*operands) first")
        from tnconv.backends.torch.bind import check_operands, collect

        operands = tuple(collect(self.operands, args, kwargs))
        check_operands(self.operands, operands, self.expected_shapes, self.axis_labels)
        if operands:
            return self.runner.run_einsum(operands, operands[0].dtype, operands[0].device)
        import torch

        return self.runner.run_einsum(operands, torch.get_default_dtype(), torch.device("cpu"))

    def specialize(self, *args: "torch.Tensor", **kwargs: "torch.Tensor") -> "Program":
        """The concrete program for these operands' shapes (itself when already concrete)."""
        if self.network.is_concrete:
            return self
        from tnconv.backends.torch.bind import collect
        from tnconv.lower.compile import compile as compile_network

        operands = collect(self.operands, args, kwargs)
        values = resolve_symbols(self.network, self.operands, operands)
        return compile_network(self.network.substitute(values), self.optimize, memory_limit=self.memory_limit)

    def __call__(self, *args: "torch.Tensor", **kwargs: "torch.Tensor") -> "torch.Tensor":
        """Contract the network; operands by position (``program.operands`` order) or by name."""
        runner = self.runner
        if runner is None:
            return self.specialize(*args, **kwargs)(*args, **kwargs)
        return runner(args, kwargs)

    # --- constants ----------------------------------------------------------------------
    def account_constants(self) -> None:
        """The runner built constants for a new dtype or device: the program cache counts them."""
        PROGRAMS.account((self.network, self.optimize, self.memory_limit), self)

    @property
    def constant_bytes(self) -> int:
        """Bytes of the structured constants this program holds (over the dtypes and devices it ran on)."""
        return 0 if self.runner is None else self.runner.constant_bytes

    def release_constants(self) -> None:
        """Drop the structured constants (the program cache does this on eviction); rebuilt on the next call."""
        if self.runner is not None:
            self.runner.constants = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and ``torch.save``) as ``(network, optimize, memory_limit)``, rebuilt through ``tnconv.compile``."""
        return (_rebuild, (self.network, self.optimize, self.memory_limit))

    def __repr__(self) -> str:
        cost = f", flops={self.flops}" if self.concrete else ", symbolic"
        return f"Program({self.equation!r}, strategy={self.strategy!r}{cost})"


def _rebuild(network: Network, optimize: Optimize, memory_limit: int | None) -> "Program":
    """The compiled (cached) program of an unpickled ``(network, optimize, memory_limit)``."""
    from tnconv.lower.compile import compile as compile_network

    return compile_network(network, optimize, memory_limit=memory_limit)


def _innermost(executor: Executor) -> Any:
    while isinstance(executor, Sliced):
        executor = executor.parts[0]
    return executor


def _describe(executor: Executor) -> str:
    parts = ["einsum"]
    if isinstance(executor, Sliced):
        parts.append(f"sliced({executor.describe()})")
    if executor.dense:
        parts.append(f"dense({','.join(executor.dense)})")
    return "+".join(parts)
