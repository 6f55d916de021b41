"""``Program``: a compiled network - its plan, and the runner of the backend of its operands.

A program holds a fixed plan made of plain data (``tnconv.lower.plan``) and a
backend's runner of it (``tnconv.backends``: every call fixed once), so that
calling it costs little and ``torch.compile(fullgraph=True)`` traces it without
a graph break. The backend is the one of the operands (``tnconv.backends.choice``,
as opt_einsum's dispatch): torch tensors run on ``tnconv.backends.torch`` (the
default, whose runner is made with the program), numpy arrays on
``tnconv.backends.numpy`` (its runner made on the first such call) and give
numpy arrays. The plan is made for the backend's ``Target`` (``tnconv.lower.target``):

- ``native``: one PyTorch kernel (``tnconv.lower.native``) computes the whole
  network - a convolution, its input or weight VJP, a transposed convolution,
  unfold, fold, a matrix product;
- ``einsum``: otherwise (and on a backend without native kernels), index patterns
  run as taps (strided views), gathers and scatters (``tnconv.lower.einsum``) and
  the rest as pairwise steps along an opt_einsum path (``tnconv.lower.steps``),
  sliced over a leg when a ``memory_limit`` asks for it (``tnconv.lower.slicing``).

``Program.strategy`` says which runs on torch tensors: ``"native:conv2d"``, ``"einsum"``,
``"einsum+sliced(n:4)"``, ``"einsum+dense(Pi1)"`` (a pattern that had to be
built densely), ``"pair_gram"`` (KFAC-expand's pattern pairs as windowed
cross-correlations, ``tnconv.lower.pair_gram``).

This layer sits above the planner and the backends, which never import it: a
runner sees its program through the ``Owner`` protocol
(``tnconv.backends.protocol``). ``compiled`` is the program cache's entry
(``tnconv.compile`` checks its arguments and calls it).

A network with symbolic sizes compiles to one symbolic program: its plan is
chosen with every size symbol set to ``REPRESENTATIVE_SIZE`` (64), and
``flops`` / ``largest_intermediate`` are that plan's cost as sympy expressions
in the symbols (``tnconv.lower.cost``). A call reads the symbols off every
occurrence of every operand (``tnconv.lower.bind.resolve_symbols``), then runs
the concrete program of those sizes (``specialize``: compiled once per shape,
planned at those sizes, so its path may differ from the representative one);
a repeated call finds it by the operands' shapes with one dict lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import sympy
from typing_extensions import assert_never

from tnconv.backends.choice import backend_named, backend_of
from tnconv.backends.protocol import Runner
from tnconv.ir.network import Network
from tnconv.ir.sizes import product
from tnconv.ir.verify import verify
from tnconv.lower.bind import axis_labels, check_patterns, operand_shapes, order, resolve_symbols
from tnconv.lower.kernels import KernelCost, Native
from tnconv.lower.nodes import Einsum, Executor, Plan, Sliced
from tnconv.lower.optimize import Optimize
from tnconv.lower.pair_gram import PairGram
from tnconv.lower.path_info import StepInfo, format_table, path_info
from tnconv.lower.target import Target
from tnconv.programs.cache import PROGRAMS
from tnconv.programs.plans import planned, planned_einsum

if TYPE_CHECKING:
    import torch

    from tnconv.backends.torch.runner import NativeKernel
    from tnconv.backends.torch.runner import Runner as TorchRunner
    from tnconv.ir.sizes import Size

DEFAULT_BACKEND = "torch"
"""The backend a program plans ``plan`` and ``strategy`` for, and whose runner it makes with itself."""
REPRESENTATIVE_SIZE = 64
"""The value every size symbol takes while a symbolic program's plan (path, strategy) is chosen."""
SPECIALISED_SHAPES = 64
"""The most operand shapes a symbolic program keeps a concrete program for (least recently used dropped)."""
Shapes = tuple[tuple[int, ...], ...]
"""The shapes of a call's operands, in order: the key of a symbolic program's specialisations."""


class Program:
    """A network lowered to a plan that a backend runs (torch's by default; numpy's on numpy arrays).

    Attributes:
        network: the network it computes.
        equation: the network as one einsum equation (one letter per leg).
        operands: names of the tensors to pass, in positional order.
        strategy: how it executes (see the module docstring).
        plan: the plan for the torch backend (``tnconv.lower.nodes``: ``Native``, ``PairGram``, ``Einsum`` or
            ``Sliced``), None while sizes are symbolic.
        runner: the torch backend's runner of the plan (``tnconv.backends.torch.Runner``: its torch calls,
            fixed once, and its ``constants`` per dtype and device), None while sizes are symbolic.
            Another backend's runner is made on the first call with its arrays (``runner_for``).
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
        self.result_elements: "Size" = product(network.size(leg) for leg in network.output)
        """Elements of the result (a sympy expression while sizes are symbolic)."""
        self.plan: Plan | None = None
        self.runner: "TorchRunner | None" = None
        self._runners: dict[str, Runner] = {}  # by backend name, the default's included
        self._plans: dict[str, Plan] = {}  # the plan each of them runs, by backend name
        if not network.is_concrete:
            self.strategy = "symbolic"
            self._specialised: OrderedDict[Shapes, Program] = OrderedDict()
            self._concrete: dict[Shapes, Program] = {}  # the same, without the order: the call's fast path
            return
        self.runner = cast("TorchRunner", self.runner_for(DEFAULT_BACKEND))
        self.plan = self._plans[DEFAULT_BACKEND]
        self.strategy = strategy(self.plan)

    def runner_for(self, backend: str) -> Runner:
        """The runner of the backend named ``backend`` (``tnconv.backends.choice.BACKENDS``), made with the plan
        for its target on first use (a concrete program)."""
        runner = self._runners.get(backend)
        if runner is None:
            chosen = backend_named(backend)
            made = self._plans.get(backend)
            if made is None:
                made = self._plans[backend] = planned(self.network, self.optimize, self.memory_limit, chosen.target)
            runner = self._runners[backend] = chosen.runner(self, made)
        return runner

    # --- cost ---------------------------------------------------------------------------
    @property
    def concrete(self) -> bool:
        """Whether all sizes are known (else the plan is made per call from operand shapes)."""
        return self.network.is_concrete

    @cached_property
    def representative(self) -> Network:
        """The network whose plan a symbolic program describes: every size symbol set to ``REPRESENTATIVE_SIZE``
        (the network itself when concrete)."""
        if self.concrete:
            return self.network
        return self.network.substitute({symbol: REPRESENTATIVE_SIZE for symbol in self.network.symbols})

    @cached_property
    def symbolic_plan(self) -> Plan:
        """The plan: ``plan`` when concrete, else the one chosen at ``representative`` sizes."""
        if self.plan is not None:
            return self.plan
        return planned(self.representative, self.optimize, self.memory_limit, backend_named(DEFAULT_BACKEND).target)

    @cached_property
    def einsum_plan(self) -> Executor:
        """The einsum path's plan: the plan itself, or for a native program the one it would run otherwise
        (planned when first asked, for its cost and as a reference); at ``representative`` sizes when symbolic."""
        if isinstance(self.plan, (Native, PairGram, type(None))):
            return planned_einsum(self.representative, self.optimize, self.memory_limit)
        return self.plan

    @cached_property
    def _symbolic_cost(self) -> tuple["Size", "Size"]:
        executor = self.einsum_plan
        if isinstance(executor, Sliced):
            raise ValueError(
                f"memory_limit={self.memory_limit} slices the plan by the sizes, so a symbolic program has no "
                "cost formula; use program.specialize(...) for the cost at given sizes"
            )
        return executor.cost.evaluate(dict(self.network.sizes))

    @property
    def path(self) -> tuple[tuple[int, ...], ...]:
        return _innermost(self.einsum_plan).contraction.path

    @property
    def flops(self) -> "Size":
        """FLOPs of what runs: the pair-Gram plan's exact count, else the einsum plan's (opt_einsum's count;
        gathers and scatters count their size); for a symbolic program a sympy expression in its symbols
        (the cost of the representative einsum plan)."""
        if not self.concrete:
            return self._symbolic_cost[0]
        return self.plan.flops if isinstance(self.plan, PairGram) else self.einsum_plan.flops

    @property
    def largest_intermediate(self) -> "Size":
        """Elements of the largest intermediate of what runs (a sympy expression when symbolic)."""
        if not self.concrete:
            return self._symbolic_cost[1]
        plan = self.plan
        return plan.largest_intermediate if isinstance(plan, PairGram) else self.einsum_plan.largest_intermediate

    def flops_at(self, **sizes: int) -> "Size":
        """``flops`` at the sizes given by symbol name (``program.flops_at(N=2, H=8, W=8)``): an int when every
        symbol is given, else an expression in the rest.

        The symbols stand for positive integers, so ``program.flops.subs({"N": 2})`` (a plain
        ``Symbol("N")``) would replace nothing; this names them as the program does. It evaluates
        the formula of the representative plan; ``specialize(**sizes).flops`` is the cost of the plan
        made at those sizes, which may take another path.
        """
        return self._at(self.flops, sizes)

    def largest_intermediate_at(self, **sizes: int) -> "Size":
        """``largest_intermediate`` at the sizes given by symbol name (see ``flops_at``)."""
        return self._at(self.largest_intermediate, sizes)

    def _at(self, cost: "Size", sizes: dict[str, Any]) -> "Size":
        values = self._symbol_values(sizes, every=False)
        if isinstance(cost, int) or not values:
            return cost
        if len(values) == len(self.network.symbols):
            check_patterns(self.network, values)
        value = cost.subs(values)
        return int(value) if value.is_Integer else value

    @property
    def steps(self) -> tuple[str, ...]:
        """The per-step einsum equations of the einsum path, in order."""
        return tuple(step.equation for step in _innermost(self.einsum_plan).contraction.steps)

    @cached_property
    def path_info(self) -> tuple[StepInfo, ...]:
        """The einsum plan's pairwise steps with leg names, FLOPs and result sizes (``tnconv.lower.path_info``;
        sympy expressions when symbolic)."""
        executor = self.einsum_plan
        sizes = {**dict(_innermost(executor).cost.sizes), **self.network.sizes}
        return path_info(_innermost(executor).contraction, sizes)

    def __str__(self) -> str:
        """``repr`` and the per-step table (``path_info``)."""
        total = f"flops {self.flops}, largest intermediate {self.largest_intermediate}"
        return f"{self!r}\n{format_table(self.path_info)}\n(total with preparations and folds: {total})"

    def kernel_cost(self) -> KernelCost | None:
        """What a call of the native kernel does (FLOPs, the tensors it creates), or None without one.

        The other cost attributes describe the einsum plan, which a native program does not run.
        For a symbolic program: the FLOPs of the kernel its representative plan runs, a sympy
        expression, and no created tensors (their shapes need sizes).
        """
        if not self.concrete:
            native = self.symbolic_plan
            if not isinstance(native, Native):
                return None
            sizes = self.network.sizes
            multiply_adds = sympy.Mul(*(sizes[leg] for leg in native.legs)) if native.legs else 0
            return KernelCost(2 * multiply_adds, ())
        return None if self.runner is None else self.runner.kernel_cost()

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
        first = args[0] if args else next(iter(kwargs.values()), None)
        runner = self.runner if first is None or isinstance(first, self.runner.array_type) else self._foreign(first)
        return runner.run_einsum_plan(args, kwargs)

    def specialize(self, *args: Any, **kwargs: Any) -> "Program":
        """The concrete program for these sizes: ``specialize(N=8, H=32)`` (every symbol by name) or
        ``specialize(*operands)`` / ``specialize(**operands)`` (read off every occurrence of every operand).
        Itself when already concrete; cached per operand shape."""
        if self.concrete:
            return self
        if kwargs and not args and not any(hasattr(value, "shape") for value in kwargs.values()):
            return self._compile(self._symbol_values(kwargs, every=True))
        operands = order(self.operands, args, kwargs)
        for name, operand in zip(self.operands, operands):
            if not hasattr(operand, "shape"):
                raise TypeError(f"operand {name!r} must be a tensor, got {type(operand).__name__}")
        key = tuple(tuple(operand.shape) for operand in operands)
        program = self._specialised.get(key)
        if program is None:
            program = self._compile(resolve_symbols(self.network, self.operands, operands))
            self._remember(key, program)
        return program

    def _symbol_values(self, sizes: dict[str, Any], every: bool) -> dict[sympy.Symbol, int]:
        """``sizes`` (by symbol name) as values of the network's symbols, checked: known names, positive ints, and
        with ``every`` a value for every symbol."""
        symbols = {symbol.name: symbol for symbol in self.network.symbols}
        unknown = sorted(set(sizes) - set(symbols))
        if unknown:
            raise ValueError(f"size(s) {unknown} name no symbol of the network; its symbols: {sorted(symbols)}")
        missing = sorted(set(symbols) - set(sizes))
        if every and missing:
            raise ValueError(f"specialize needs a value for every symbol; missing {missing}")
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"size {name} must be a positive int, got {value!r}")
        return {symbols[name]: value for name, value in sizes.items()}

    def _compile(self, values: dict[sympy.Symbol, int]) -> "Program":
        check_patterns(self.network, values)
        return compiled(self.network.substitute(values), self.optimize, self.memory_limit)

    def _remember(self, key: Shapes, program: "Program") -> None:
        self._specialised[key] = program
        self._concrete[key] = program
        if len(self._specialised) > SPECIALISED_SHAPES:
            del self._concrete[self._specialised.popitem(last=False)[0]]

    def __call__(self, *args: "torch.Tensor", **kwargs: "torch.Tensor") -> "torch.Tensor":
        """Contract the network; operands by position (``program.operands`` order) or by name.

        A symbolic program runs the concrete program of the operands' shapes (``specialize``);
        when it has run on these shapes before, finding it is one dict lookup.
        """
        runner = self.runner
        if runner is not None:
            if args:
                if isinstance(args[0], runner.array_type):
                    return runner(args, kwargs)
                return self._foreign(args[0])(args, kwargs)
            if not kwargs or isinstance(next(iter(kwargs.values())), runner.array_type):
                return runner(args, kwargs)
            return self._foreign(next(iter(kwargs.values())))(args, kwargs)
        if not kwargs:
            try:
                fast = self._concrete.get(tuple([arg.shape for arg in args]))
            except AttributeError:  # not arrays: specialize says which
                fast = None
            if fast is not None:
                return fast(*args)
        return self.specialize(*args, **kwargs)(*args, **kwargs)

    def _foreign(self, operand: object) -> Runner:
        """The runner of ``operand``'s backend (TypeError naming the first operand where it has none)."""
        name = self.operands[0] if self.operands else "operand"
        return self.runner_for(backend_of(name, operand).target.name)

    # --- constants ----------------------------------------------------------------------
    def account_constants(self) -> None:
        """The runner built constants for a new dtype or device: the program cache counts them."""
        PROGRAMS.account((self.network, self.optimize, self.memory_limit), self)

    @property
    def constant_bytes(self) -> int:
        """Bytes of the structured constants this program holds (over the dtypes and devices it ran on)."""
        return sum(runner.constant_bytes for runner in self._runners.values())

    def release_constants(self) -> None:
        """Drop the structured constants (the program cache does this on eviction); rebuilt on the next call."""
        for runner in self._runners.values():
            runner.release_constants()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and ``torch.save``) as ``(network, optimize, memory_limit)``, rebuilt through ``tnconv.compile``."""
        return (compiled, (self.network, self.optimize, self.memory_limit))

    def __repr__(self) -> str:
        cost = f", flops={self.flops}" if self.concrete else ", symbolic"
        return f"Program({self.equation!r}, strategy={self.strategy!r}{cost})"


def default_target() -> Target:
    """What the planner plans programs for by default: the default backend's ``Target`` (its capabilities, speeds
    and measured thresholds; ``tnconv.lower.target``)."""
    return backend_named(DEFAULT_BACKEND).target


def compiled(network: Network, optimize: Optimize, memory_limit: int | None = None) -> Program:
    """The cached program of ``network`` (``optimize`` normalised, ``memory_limit`` checked: ``tnconv.compile``
    does both), built when not cached; the network is verified (``tnconv.verify``) when it is first built.

    ``tnconv.compile``, a symbolic program's specialisations, the terms of a ``SumProgram`` and
    unpickling all come here, so one network, optimizer and limit have one program.
    """
    key = (network, optimize, memory_limit)
    program: Program | None = PROGRAMS.get(key)
    if program is not None:
        return program
    verify(network)  # once per structure: a cached program was verified when it was built
    added: Program = PROGRAMS.add(key, Program(*key))  # this one, or the one another thread added first
    return added


def _innermost(executor: Executor) -> Einsum:
    while isinstance(executor, Sliced):
        executor = executor.parts[0]
    return executor


def strategy(plan: Plan) -> str:
    """How ``plan`` runs, in words (``Program.strategy``): ``"native:conv2d"``, ``"pair_gram"``, ``"einsum"``,
    ``"einsum+sliced(n:4)"``, ``"einsum+dense(Pi1)"``."""
    match plan:
        case Native():
            return f"native:{plan.name}"
        case PairGram():
            return plan.name
        case Einsum() | Sliced():
            parts = ["einsum"]
            if isinstance(plan, Sliced):
                parts.append(f"sliced({plan.describe()})")
            if plan.dense:
                parts.append(f"dense({','.join(plan.dense)})")
            return "+".join(parts)
        case _:
            assert_never(plan)
