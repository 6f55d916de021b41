"""``optimize``: how a contraction order is chosen, normalised once from what a user passes.

``tnconv.compile`` and ``tnconv.einsum`` take what ``opt_einsum.contract`` takes
(and what ``torch.einsum``'s opt_einsum backend does):

- ``True`` or ``None``: ``"auto"``, as in opt_einsum;
- ``False``: no search: the tensors are contracted in their order, left to right
  (as ``torch.einsum`` does without opt_einsum);
- the name of an opt_einsum path function, in any case (opt_einsum lowers it):
  ``OPTIMIZERS`` (``"auto"``, ``"greedy"``, ``"eager"``, ``"dynamic-programming"``,
  ``"branch-2"``, ...) or one registered with ``opt_einsum.paths.register_path_fn``;
- an explicit path: a sequence of position tuples (opt_einsum's linear format), over
  ``net.entries`` (which also builds index patterns densely);
- an optimizer object: an opt_einsum ``PathOptimizer`` (``opt_einsum.DynamicProgramming()``),
  which cotengra's optimizers are; compared by identity (``Optimizer``).

``normalize_optimize`` turns each into one ``Optimize`` value (frozen, hashable: part of
the program cache's key) at the public entry points; the planner below them takes only that.
"""

from __future__ import annotations

from dataclasses import dataclass

import opt_einsum
from opt_einsum.paths import PathOptimizer

from tnconv.caches import cached

OPTIMIZERS = (
    "auto", "auto-hq", "greedy", "optimal", "dp", "branch-1", "branch-2", "branch-all",
    "random-greedy", "random-greedy-128",
)
"""The path functions the command line offers (``tnconv derive --optimize``); any name opt_einsum knows works
in Python (``eager``, ``opportunistic``, ``dynamic-programming`` and registered ones too)."""


class Optimizer:
    """A path optimizer object (an opt_einsum ``PathOptimizer``, such as ``DynamicProgramming()``, or a cotengra
    optimizer, such as ``HyperOptimizer()``), compared and hashed by identity.

    Such objects hold settings and search state, not a value: two of them are the same
    optimizer only when they are one object, so programs compiled with them are cached by
    the object (``tnconv.compile``), and a program keeps its object alive.
    """

    __slots__ = ("optimizer",)

    def __init__(self, optimizer: PathOptimizer) -> None:
        self.optimizer = optimizer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Optimizer) and other.optimizer is self.optimizer

    def __hash__(self) -> int:
        return id(self.optimizer)

    def __repr__(self) -> str:
        return f"{type(self.optimizer).__name__}()"

    def __reduce__(self) -> tuple[object, ...]:
        return (Optimizer, (self.optimizer,))


@dataclass(frozen=True)
class Optimize:
    """``optimize`` normalised: at most one field is set.

    ``search``: an opt_einsum path function's name (lower case); ``path``: an explicit path;
    ``optimizer``: an optimizer object; none of them: contract in order (``optimize=False``).
    """

    search: str | None = None
    path: tuple[tuple[int, ...], ...] | None = None
    optimizer: Optimizer | None = None

    @property
    def explicit(self) -> bool:
        """Whether the path is given (over ``net.entries``: no native kernel, no structured lowering)."""
        return self.path is not None

    def argument(self, count: int) -> object:
        """What ``opt_einsum.contract_path`` takes as ``optimize`` for ``count`` tensors: the name, the path as a
        list, the optimizer object, or the in-order path (the first two, then each next one with the result)."""
        if self.search is not None:
            return self.search
        if self.path is not None:
            return list(self.path)
        if self.optimizer is not None:
            return self.optimizer.optimizer
        if count < 2:
            return [tuple(range(count))]
        return [(0, 1)] + [(0, rest - 1) for rest in range(count - 1, 1, -1)]

    def __repr__(self) -> str:
        if self.search is not None:
            return repr(self.search)
        if self.path is not None:
            return repr(self.path)
        return repr(self.optimizer) if self.optimizer is not None else "False"


AUTO = Optimize(search="auto")


def normalize_optimize(optimize: object) -> Optimize:
    """``optimize`` (see the module docstring) as an ``Optimize``; TypeError for a wrong type, ValueError for an
    unknown name."""
    if isinstance(optimize, Optimize):
        return optimize
    if optimize is True or optimize is None:
        return AUTO
    if optimize is False:
        return Optimize()
    if isinstance(optimize, str):
        return _search(optimize)
    if isinstance(optimize, Optimizer):
        return Optimize(optimizer=optimize)
    if isinstance(optimize, PathOptimizer):
        return Optimize(optimizer=Optimizer(optimize))
    if isinstance(optimize, (list, tuple)) and all(
        isinstance(step, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in step)
        for step in optimize
    ):
        return Optimize(path=tuple(tuple(step) for step in optimize))
    raise TypeError(
        "optimize must be True, False, None, an optimizer name, a path (sequence of int tuples) or an opt_einsum "
        f"PathOptimizer (cotengra's optimizers are), got {optimize!r}"
    )


@cached(maxsize=64)
def _search(name: str) -> Optimize:
    """The ``Optimize`` of an opt_einsum path name (cached: ``tnconv.einsum`` normalises on every call; an unknown
    name raises, so it is not cached and may be registered later)."""
    try:
        opt_einsum.paths.get_path_fn(name.lower())
    except KeyError:
        raise ValueError(
            f"optimize must be True, False, None, an opt_einsum path name ({', '.join(OPTIMIZERS)}, eager, "
            "opportunistic, dynamic-programming, or one registered with opt_einsum.paths.register_path_fn), "
            f"an explicit path or an optimizer object, got {name!r}"
        ) from None
    return Optimize(search=name.lower())
