"""``Runner``: what a concrete ``Program`` calls - operand checks, dispatch, and the constants per dtype and device.

A runner is made once per program (``tnconv.compile``), with every torch call
of its plan fixed: a call checks the operands with a few tuple comparisons,
then runs the native kernel (floating-point operands) or the einsum plan
(other dtypes, or no kernel). Plain torch calls only, so that
``torch.compile(fullgraph=True)`` traces a call without a graph break.

The backend interprets plans and never imports the program layer
(``tnconv.programs.program``): what a runner needs of the program that owns it is
the ``Owner`` protocol, which ``Program`` satisfies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch
from typing_extensions import assert_never

from tnconv.backends.torch.bind import check_operands, collect
from tnconv.backends.torch.constants import Constants, nested_bytes
from tnconv.backends.torch.cost import kernel_cost
from tnconv.backends.torch.einsum import SlicedConstants, executor
from tnconv.backends.torch.kernels import kernel as kernel_of
from tnconv.backends.torch.pair_gram import pair_gram
from tnconv.limits import check_allocation
from tnconv.lower.kernels import KernelCall, KernelCost, Native
from tnconv.backends.protocol import Bound, Owner
from tnconv.lower.nodes import Einsum, Plan, Sliced
from tnconv.lower.pair_gram import PairGram


@dataclass(frozen=True)
class NativeKernel:
    """A native kernel as a callable on the operands (in ``Program.operands`` order), with no checks.

    Equal kernels are equal calls: ``call`` is plain data that holds no batch size where the
    kernel needs none (``tnconv.lower.native``), so kernels built for two batch sizes compare
    equal exactly when one runs both.
    """

    call: KernelCall
    run: Callable[[Sequence[torch.Tensor]], torch.Tensor] = field(compare=False, repr=False)

    def __call__(self, operands: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.run(operands)


class Runner(Bound):
    """Runs a concrete program's ``plan`` on torch tensors: ``runner(args, kwargs)`` is ``program(*args, **kwargs)``
    (``tnconv.backends.protocol.Runner``)."""

    array_type = torch.Tensor

    def __init__(self, program: Owner, plan: Plan) -> None:
        super().__init__(program)
        self._native: Native | None = None
        self.kernel: NativeKernel | None = None
        self._fast: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = None  # floating-point operands
        self._fast_elements = self._result  # what the native kernel makes that tnconv bounds: its result
        self._einsum: tuple[Callable, Union[Constants, SlicedConstants]] | None = None
        self._einsum_elements = 0  # the einsum plan's largest tensor (result or intermediate), once it is made
        match plan:
            case Native():
                self._native = plan
                self.kernel = NativeKernel(plan.kernel, kernel_of(plan.kernel))
                self._fast = self.kernel.run
            case PairGram():
                self._fast = pair_gram(plan)
                self._fast_elements = 0  # the pair-Gram call checks its own tensors
            case Einsum() | Sliced():
                self._einsum = executor(plan)
                self._einsum_elements = max(plan.largest_intermediate, self._result)
            case _:
                assert_never(plan)
        self._fast_name = self._name_largest(self._fast_elements)  # made once: a call only reads it
        self._einsum_name = self._name_largest(self._einsum_elements)
        self.constants: dict[tuple[torch.dtype, torch.device], tuple] = {}

    def __call__(self, args: tuple, kwargs: dict) -> torch.Tensor:
        names = self._names
        if kwargs and not args and len(kwargs) == len(names) and all(n in kwargs for n in names):
            args, kwargs = tuple(kwargs[name] for name in names), {}
        if kwargs or len(args) != len(names) or not all(isinstance(a, torch.Tensor) for a in args):
            args = tuple(collect(names, args, kwargs))
        if not args:
            return self.run_einsum(args, torch.get_default_dtype(), torch.device("cpu"))
        dtype, device = args[0].dtype, args[0].device
        if dtype == torch.bool:
            raise TypeError(f"operand {names[0]!r} has dtype torch.bool; pass a number dtype (e.g. {names[0]}.float())")
        for operand, shape in zip(args, self._expected):
            if operand.shape != shape or operand.dtype != dtype or operand.device != device:
                check_operands(names, args, self._expected, self._labels)
        if self._fast is not None and dtype.is_floating_point:
            check_allocation(self._fast_elements, dtype.itemsize, self._fast_name)
            return self._fast(args)
        return self.run_einsum(args, dtype, device)

    def run_einsum_plan(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The einsum plan on ``program(*args, **kwargs)``'s operands (checked), even where a native kernel would
        run them: ``Program.run_einsum_plan``."""
        operands = tuple(collect(self._names, args, kwargs))
        check_operands(self._names, operands, self._expected, self._labels)
        if operands:
            return self.run_einsum(operands, operands[0].dtype, operands[0].device)
        return self.run_einsum(operands, torch.get_default_dtype(), torch.device("cpu"))

    def kernel_cost(self) -> KernelCost | None:
        """What a call of the native kernel does (``tnconv.backends.torch.cost``), or None without one."""
        if self._native is None or self.kernel is None:
            return None
        return kernel_cost(self._native, self.kernel, self._expected)

    def run_einsum(self, operands: Sequence[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Run the einsum plan (views, structured preparations, pairwise steps) on checked operands."""
        if self._einsum is None:
            program = self._program()
            assert program is not None  # only a program reaches its runner
            self._einsum = executor(program.einsum_plan)
            self._einsum_elements = max(program.einsum_plan.largest_intermediate, self._result)
            self._einsum_name = self._name_largest(self._einsum_elements)
        check_allocation(self._einsum_elements, dtype.itemsize, self._einsum_name)
        run, constants = self._einsum
        key = (dtype, device)
        made = self.constants.get(key)
        if made is None:
            made = constants.make(dtype, device)
            if not torch.compiler.is_compiling():
                self.constants[key] = made
                program = self._program()
                if program is not None:
                    program.account_constants()
        return run(operands, made)

    def _name_largest(self, elements: int) -> Callable[[], str]:
        """What the allocation limit's message calls the largest tensor of a call (``elements`` elements)."""
        which = "result" if elements == self._result else "largest intermediate"
        return lambda: f"the {which} of this call of the program {self._equation!r}"

    @property
    def constant_bytes(self) -> int:
        """Bytes of the constants held (over the dtypes and devices it ran on)."""
        return nested_bytes(list(self.constants.values()))

    def release_constants(self) -> None:
        """Drop the constants (the program cache does this on eviction); rebuilt on the next call."""
        self.constants = {}
