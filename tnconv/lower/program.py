"""``Program``: a compiled network, called with torch tensors.

A program holds a fixed plan made of plain data and plain torch calls, so
that calling it costs little and ``torch.compile(fullgraph=True)`` traces it
without a graph break:

- ``native``: one PyTorch kernel (``tnconv.lower.native``) computes the whole
  network - a convolution, its input or weight VJP, a transposed convolution,
  unfold, fold, a matrix product;
- ``einsum``: otherwise, index patterns run as strided views / gathers /
  scatters (``tnconv.lower.structured``) and the rest as pairwise steps along
  an opt_einsum path, each a fixed permute / reshape / ``matmul`` recipe
  (``tnconv.lower.steps``), sliced over a leg when a ``memory_limit`` asks for
  it (``tnconv.lower.slicing``).

``Program.strategy`` says which: ``"native:conv2d"``, ``"einsum"``,
``"einsum+sliced(n:4)"``, ``"einsum+dense(Pi1)"`` (a pattern that had to be
built densely).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import torch

from tnconv.ir.network import Network
from tnconv.ir.views import apply_views
from tnconv.lower import native
from tnconv.lower.cache import PROGRAMS, nested_bytes
from tnconv.lower.bind import axis_labels, check_operands, collect, operand_shapes, resolve_symbols
from tnconv.lower.plan import Optimize
from tnconv.lower.slicing import Executor, Sliced, plan_memory
from tnconv.lower.lowering import lower

if TYPE_CHECKING:
    from tnconv.ir.sizes import Size


class Program:
    """A network lowered to torch calls.

    Attributes:
        network: the network it computes.
        equation: the network as one einsum equation (one letter per leg).
        operands: names of the tensors to pass, in positional order.
        strategy: how it executes (see the module docstring).
        memory_limit: the budget (elements) for intermediates of the einsum path, or None.
        path: the contraction path of the einsum path (opt_einsum convention, over the
            working tensors: data tensors and densely built ones, index patterns already
            applied; with an explicit ``optimize`` path, over ``network.entries``).
        flops: the einsum path's cost estimate (gathers and scatters count their size).
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
        self._expected: tuple[tuple["Size", ...], ...] = tuple(operand_shapes(network)[n] for n in self.operands)
        self._labels = axis_labels(network)
        positions = {name: n for n, name in enumerate(self.operands)}
        self._reads = tuple(
            (positions[e.name], e.kind.views) for e in network.entries if not e.structured  # type: ignore[attr-defined]
        )
        self._constants: dict[tuple[torch.dtype, torch.device], tuple] = {}
        self._kernel = None
        self._concrete = network.is_concrete
        if not network.is_concrete:
            self.strategy = "symbolic"
            return
        if memory_limit is None and not isinstance(optimize, tuple):
            found = native.match(network)
            if found is not None:
                self.strategy = "native:" + found[0]
                self._kernel = found[1]
                return
        self.strategy = _describe(self._executor)

    # --- cost ---------------------------------------------------------------------------
    @property
    def concrete(self) -> bool:
        """Whether all sizes are known (else the plan is made per call from operand shapes)."""
        return self.network.is_concrete

    @cached_property
    def _executor(self) -> Executor:
        """The einsum path (also computed for native programs when asked, for its cost and as fallback)."""
        if not self.network.is_concrete:
            raise ValueError(
                f"sizes {sorted(map(str, self.network.symbols))} are symbolic, so there is no plan yet; "
                "use program.specialize(*operands) or Network.substitute(...) first"
            )
        if self.memory_limit is None:
            return lower(self.network, self.optimize)
        return plan_memory(self.network, self.optimize, self.memory_limit)

    @property
    def path(self) -> tuple[tuple[int, ...], ...]:
        return _innermost(self._executor).plan.path

    @property
    def flops(self) -> int:
        return self._executor.flops

    @property
    def largest_intermediate(self) -> int:
        return self._executor.largest_intermediate

    @property
    def steps(self) -> tuple[str, ...]:
        """The per-step einsum equations of the einsum path, in order."""
        return tuple(step.equation for step in _innermost(self._executor).plan.steps)

    def kernel_cost(self) -> native.KernelCost | None:
        """What a call of the native kernel does (FLOPs, the tensors it creates), or None without one.

        The other cost attributes describe the einsum plan, which a native program does not run.
        """
        if self._kernel is None:
            return None
        return native.kernel_cost(self.network, self._kernel, self._expected)  # type: ignore[arg-type]

    @property
    def kernel(self) -> native.Kernel | None:
        """The PyTorch kernel that runs the whole network (``strategy`` ``"native:..."``), else None.

        A callable on the operands in ``operands`` order, with none of the checks of a
        call, used for floating-point operands only (a call runs other dtypes on the
        einsum path). It holds no batch size where it needs none (``tnconv.lower.native``).
        """
        return self._kernel

    # --- running ------------------------------------------------------------------------
    def run_einsum_plan(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """Contract a concrete network along its einsum plan, even where a native kernel would run it.

        An independent reference for the kernel (``tnconv derive --check``).
        """
        if not self._concrete:
            raise ValueError("run_einsum_plan needs a concrete program; use program.specialize(*operands) first")
        operands = tuple(collect(self.operands, args, kwargs))
        check_operands(self.operands, operands, self._expected, self._labels)  # type: ignore[arg-type]
        device = operands[0].device if operands else torch.device("cpu")
        return self._execute(operands, operands[0].dtype if operands else torch.get_default_dtype(), device)

    def specialize(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> "Program":
        """The concrete program for these operands' shapes (itself when already concrete)."""
        if self.network.is_concrete:
            return self
        from tnconv.lower.compile import compile as compile_network

        operands = collect(self.operands, args, kwargs)
        values = resolve_symbols(self.network, self.operands, operands)
        return compile_network(self.network.substitute(values), self.optimize, memory_limit=self.memory_limit)

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """Contract the network; operands by position (``program.operands`` order) or by name."""
        names = self.operands
        if kwargs and not args and len(kwargs) == len(names) and all(n in kwargs for n in names):
            args, kwargs = tuple(kwargs[name] for name in names), {}
        if kwargs or len(args) != len(names) or not all(isinstance(a, torch.Tensor) for a in args):
            args = tuple(collect(names, args, kwargs))
        if not self._concrete:
            return self.specialize(*args)(*args)
        if not args:
            return self._execute(args, torch.get_default_dtype(), torch.device("cpu"))
        dtype, device = args[0].dtype, args[0].device
        if dtype == torch.bool:
            raise TypeError(f"operand {names[0]!r} has dtype torch.bool; pass a number dtype (e.g. {names[0]}.float())")
        for operand, shape in zip(args, self._expected):
            if operand.shape != shape or operand.dtype != dtype or operand.device != device:
                check_operands(names, args, self._expected, self._labels)  # type: ignore[arg-type]
        if self._kernel is not None and dtype.is_floating_point:
            return self._kernel(args)
        return self._execute(args, dtype, device)

    def _execute(self, operands: tuple[torch.Tensor, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Run the einsum path (views, structured lowering, pairwise steps)."""
        executor = self._executor
        data = [apply_views(views, operands[n]) if views else operands[n] for n, views in self._reads]
        return executor.execute(data, self._made(executor, dtype, device))

    def _made(self, executor: Executor, dtype: torch.dtype, device: torch.device) -> tuple:
        """The structured tensors and index maps on this dtype and device, built once per pair."""
        key = (dtype, device)
        made = self._constants.get(key)
        if made is None:
            made = executor.make_constants(dtype, device)
            if not torch.compiler.is_compiling():
                self._constants[key] = made
                PROGRAMS.account((self.network, self.optimize, self.memory_limit), self)
        return made

    @property
    def constant_bytes(self) -> int:
        """Bytes of the structured constants this program holds (over the dtypes and devices it ran on)."""
        return nested_bytes(list(self._constants.values()))

    def release_constants(self) -> None:
        """Drop the structured constants (the program cache does this on eviction); rebuilt on the next call."""
        self._constants = {}

    def __reduce__(self) -> tuple:
        """Pickle (and ``torch.save``) as ``(network, optimize, memory_limit)``, rebuilt through ``tnconv.compile``."""
        return (_rebuild, (self.network, self.optimize, self.memory_limit))

    def __repr__(self) -> str:
        cost = f", flops={self.flops}" if self.concrete else ", symbolic"
        return f"Program({self.equation!r}, strategy={self.strategy!r}{cost})"


def _rebuild(network: Network, optimize: Optimize, memory_limit: int | None) -> "Program":
    """The compiled (cached) program of an unpickled ``(network, optimize, memory_limit)``."""
    from tnconv.lower.compile import compile as compile_network

    return compile_network(network, optimize, memory_limit=memory_limit)


def _innermost(executor: Executor):
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
