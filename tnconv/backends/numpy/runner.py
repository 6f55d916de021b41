"""``Runner``: a concrete program's plan run on numpy arrays (``tnconv.backends.protocol.Runner``).

numpy has no native convolution kernels, so every plan runs its einsum plan
(``Owner.einsum_plan``): a network that a torch kernel computes gives the same
values here through its taps and pairwise steps. A call checks the operands
(numpy arrays of the legs' shapes and one dtype, not bool), the allocation limit
(``tnconv.limits``) on the plan's largest tensor, and builds the constants once
per dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tnconv.backends.numpy.einsum import Run, constants, executor
from tnconv.backends.protocol import Bound, Owner
from tnconv.limits import check_allocation
from tnconv.lower.bind import order, shape_mismatch
from tnconv.lower.nodes import Executor


class Runner(Bound):
    """Runs a concrete program's einsum plan on numpy arrays: ``runner(args, kwargs)`` is ``program(*args,
    **kwargs)``."""

    array_type = np.ndarray

    def __init__(self, program: Owner, plan: Executor) -> None:
        super().__init__(program)
        self._plan = plan
        self._run: Run | None = None
        self.constants: dict[np.dtype, Any] = {}

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> np.ndarray:
        return self.run_einsum_plan(args, kwargs)

    def run_einsum_plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> np.ndarray:
        operands = self._checked(order(self._names, args, kwargs))
        dtype = operands[0].dtype if operands else np.dtype(np.float64)
        largest = max(self._plan.largest_intermediate, self._result)
        which = "result" if largest == self._result else "largest intermediate"
        check_allocation(largest, dtype.itemsize, f"the {which} of this call of the program {self._equation!r}")
        if self._run is None:
            self._run = executor(self._plan)
        made = self.constants.get(dtype)
        if made is None:
            made = self.constants[dtype] = constants(self._plan, dtype)
            program = self._program()
            if program is not None:
                program.account_constants()
        return np.asarray(self._run(operands, made))

    def _checked(self, operands: list[Any]) -> list[np.ndarray]:
        """``operands`` as they are, after checking types, shapes and one dtype (ValueError/TypeError naming them)."""
        for name, operand, shape in zip(self._names, operands, self._expected):
            if not isinstance(operand, np.ndarray):
                raise TypeError(f"operand {name!r} must be a numpy.ndarray like the others, got {type(operand).__name__}")
            if operand.shape != shape:
                raise ValueError(shape_mismatch(name, operand.shape, shape, self._labels[name]))
        if operands:
            dtype = operands[0].dtype
            if dtype == np.bool_ or dtype.kind not in "biufc":
                first = self._names[0]
                raise TypeError(f"operand {first!r} has dtype {dtype}; pass a number dtype (e.g. {first}.astype(float))")
            for name, operand in zip(self._names, operands):
                if operand.dtype != dtype:
                    raise ValueError(
                        f"operands must share one dtype: {self._names[0]!r} is {dtype} but {name!r} is {operand.dtype}"
                    )
        return operands

    @property
    def constant_bytes(self) -> int:
        """Bytes of the constants held (over the dtypes it ran on)."""
        return _nested_bytes(list(self.constants.values()))

    def release_constants(self) -> None:
        """Drop the constants; rebuilt on the next call."""
        self.constants = {}


def _nested_bytes(value: object) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nested_bytes(item) for item in value)
    return 0


