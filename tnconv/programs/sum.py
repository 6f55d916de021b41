"""``SumProgram``: a compiled ``NetworkSum`` (one program per term, results added).

The product rule (``tnconv.differentiate`` of an operand used twice) gives a
sum of networks with one output; each term is compiled on its own (its own
contraction order) and the results are added. Operands are shared by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnconv.caches import cached
from tnconv.lower.bind import order
from tnconv.lower.optimize import AUTO, Optimize
from tnconv.programs.program import Program, compiled

if TYPE_CHECKING:
    import torch

    from tnconv.ir.networksum import NetworkSum


class SumProgram:
    """Programs of the terms of a ``NetworkSum``; calling it adds their results.

    Attributes:
        network: the ``NetworkSum``.
        terms: one ``Program`` per term.
        optimize, memory_limit: as given to ``tnconv.compile`` (shared by the terms).
        operands: names of the operands over all terms, in positional order.
        equation: the terms' equations joined by ``" + "``.
    """

    def __init__(
        self, network: "NetworkSum", terms: Sequence[Program], optimize: Optimize = AUTO,
        memory_limit: int | None = None,
    ) -> None:
        self.network = network
        self.terms = tuple(terms)
        self.optimize = optimize
        self.memory_limit = memory_limit
        self.operands = network.operands
        self.equation = " + ".join(term.equation for term in self.terms)
        self.strategy = "sum"

    @property
    def concrete(self) -> bool:
        return all(term.concrete for term in self.terms)

    @property
    def path(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """One contraction path per term."""
        return tuple(term.path for term in self.terms)

    @property
    def flops(self) -> int:
        """The terms' FLOPs plus one addition per output element for each term after the first."""
        output = 1
        for leg in self.network.output:
            output *= int(self.network.size(leg))
        return sum(term.flops for term in self.terms) + (len(self.terms) - 1) * output

    @property
    def largest_intermediate(self) -> int:
        return max(term.largest_intermediate for term in self.terms)

    @property
    def steps(self) -> tuple[tuple[str, ...], ...]:
        """Each term's per-step einsum equations."""
        return tuple(term.steps for term in self.terms)

    def __call__(self, *args: "torch.Tensor", **kwargs: "torch.Tensor") -> "torch.Tensor":
        """Contract every term and add them; operands by position (``operands`` order) or by name."""
        given = dict(zip(self.operands, order(self.operands, args, kwargs)))
        result = None
        for term in self.terms:
            value = term(**{name: given[name] for name in term.operands})
            result = value if result is None else result + value
        assert result is not None  # a NetworkSum has at least one term
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as ``(network, optimize, memory_limit)``, rebuilt through the cached ``compile_sum``."""
        return (compile_sum, (self.network, self.optimize, self.memory_limit))

    def __repr__(self) -> str:
        cost = f", flops={self.flops}" if self.concrete else ", symbolic"
        return f"SumProgram({self.equation!r}{cost})"


@cached(maxsize=256)
def compile_sum(net: "NetworkSum", optimize: Optimize, memory_limit: int | None = None) -> SumProgram:
    """The cached ``SumProgram`` of ``net`` (each term's cached program, as ``tnconv.compile`` gives it)."""
    terms = [compiled(term, optimize, memory_limit) for term in net.terms]
    return SumProgram(net, terms, optimize, memory_limit)
