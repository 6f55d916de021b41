"""``Program``: a compiled network, called with torch tensors.

A program holds a fixed plan (``tnconv.lower.plan``): which occurrences read
which operand through which views, which structured tensors to build, and a
sequence of small ``torch.einsum`` steps. Calling it binds the operands,
checks them, and runs the plan with plain torch calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tnconv.ir.network import Network
from tnconv.ir.views import apply_views
from tnconv.lower.bind import axis_labels, check_operands, collect, operand_shapes, resolve_symbols
from tnconv.lower.plan import Optimize, Plan

if TYPE_CHECKING:
    from tnconv.ir.sizes import Size


class Program:
    """A network lowered to torch calls.

    Attributes:
        network: the network it computes.
        equation: the network as one einsum equation (one letter per leg).
        operands: names of the tensors to pass, in positional order.
        path: the contraction path (opt_einsum convention: positions in the
            working list; contracted operands are removed, the result appended).
        flops: opt_einsum's estimate of the floating-point operations.
        largest_intermediate: elements of the largest intermediate tensor.
        strategy: how it executes (``"einsum"``: pairwise torch.einsum steps).
    """

    def __init__(self, network: Network, plan: Plan | None, optimize: Optimize) -> None:
        self.network = network
        self.equation = network.to_einsum()
        self.operands = network.operands
        self.optimize = optimize
        self.strategy = "einsum"
        self._plan = plan
        self._positions = {name: n for n, name in enumerate(self.operands)}
        self._expected: tuple[tuple["Size", ...], ...] = tuple(operand_shapes(network)[n] for n in self.operands)
        self._labels = axis_labels(network)
        self._reads = tuple(
            (p, self._positions[e.name], e.kind.views) for p, e in enumerate(network.entries) if not e.structured
        )
        self._built = tuple(
            (p, e.kind, tuple(network.size(leg) for leg in e.legs))
            for p, e in enumerate(network.entries)
            if e.structured
        )
        self._constants: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    # --- cost ---------------------------------------------------------------------------
    @property
    def concrete(self) -> bool:
        """Whether all sizes are known (else the plan is made per call from operand shapes)."""
        return self._plan is not None

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise ValueError(
                f"sizes {sorted(map(str, self.network.symbols))} are symbolic, so there is no plan yet; "
                "use program.specialize(*operands) or Network.substitute(...) first"
            )
        return self._plan

    @property
    def path(self) -> tuple[tuple[int, ...], ...]:
        return self._require_plan().path

    @property
    def flops(self) -> int:
        return self._require_plan().flops

    @property
    def largest_intermediate(self) -> int:
        return self._require_plan().largest_intermediate

    @property
    def steps(self) -> tuple[str, ...]:
        """The per-step torch.einsum equations, in order."""
        return tuple(step.equation for step in self._require_plan().steps)

    # --- running ------------------------------------------------------------------------
    def specialize(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> "Program":
        """The concrete program for these operands' shapes (itself when already concrete)."""
        if self._plan is not None:
            return self
        from tnconv.lower.compile import compile as compile_network

        operands = collect(self.operands, args, kwargs)
        values = resolve_symbols(self.network, self.operands, operands)
        return compile_network(self.network.substitute(values), self.optimize)

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """Contract the network; operands by position (``program.operands`` order) or by name."""
        operands = collect(self.operands, args, kwargs)
        if self._plan is None:
            return self.specialize(*operands)(*operands)
        check_operands(self.operands, operands, self._expected, self._labels)  # type: ignore[arg-type]
        if operands:
            dtype, device = operands[0].dtype, operands[0].device
        else:
            dtype, device = torch.get_default_dtype(), torch.device("cpu")
        working: list[torch.Tensor] = [None] * len(self.network.entries)  # type: ignore[list-item]
        for position, operand, views in self._reads:
            working[position] = apply_views(views, operands[operand]) if views else operands[operand]
        for (position, _, _), constant in zip(self._built, self._structured(dtype, device)):
            working[position] = constant
        for step in self._plan.steps:
            inputs = [working[p] for p in step.positions]
            working = [t for p, t in enumerate(working) if p not in step.positions]
            working.append(torch.einsum(step.equation, *inputs))
        return working[0]

    def _structured(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The structured tensors on this dtype and device, built once per pair."""
        key = (dtype, device)
        if key not in self._constants:
            self._constants[key] = tuple(
                kind.materialize(tuple(int(s) for s in shape), dtype, device) for _, kind, shape in self._built
            )
        return self._constants[key]

    def __repr__(self) -> str:
        cost = f", flops={self.flops}" if self.concrete else ", symbolic"
        return f"Program({self.equation!r}, strategy={self.strategy!r}{cost})"
