"""A conv routine as data: ``Routine`` and the parts it is made of, and ``routine_table`` to collect them.

A routine of a conv layer (the forward pass, a VJP, im2col, a KFAC factor, ...)
is everything tnconv needs to build, run, explain and check it:

- the network its derivation starts from (``start``, one of ``STARTS``, built by
  ``tnconv.conv.networks``), of the transposed layer when ``transposed``;
- its ``derivation``: stages (``Stage``), each a title and a function that makes the
  ``tnconv.passes.Pass`` performing it (fuse into a sketch network,
  differentiate, vmap, ...). Running them with their traces gives the stages
  ``tnconv derive`` prints; ``tnconv.simplify`` is the optional last stage;
- its ``operands`` (names and torch shapes, to draw random ones), its result's
  torch layout (``result_shape``) and ``scaling`` (the network computes an
  unnormalised sum; a KFAC factor is that times ``1/(N*T)``);
- a ``shortcut``: a cheaper way to evaluate it than the whole network, where
  there is one (a part of the network evaluated once and squared);
- its PyTorch/autograd ``reference`` for ``tnconv derive --check`` and ``--bench``.

Everything here is light (no torch, sympy or networkx): the command line answers
``--help`` and every argument error from the table alone. Functions that need the
heavy libraries are given as ``later("module:function")``: imported when called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from tnconv.conv.options import Options

if TYPE_CHECKING:
    import torch

    from tnconv.conv.hyper import ConvHyper
    from tnconv.passes.core import Pass

    Operands = Mapping[str, torch.Tensor]

STARTS: Mapping[str, str] = MappingProxyType({
    "forward": "the forward network Y = X Pi.. W",
    "input_vjp": "the input VJP network dX = V Pi.. W",
    "weight_vjp": "the weight VJP network dW = X Pi.. V",
    "unfold": "the unfold network, patches U[n,g,c_in,k..,o..] = X Pi..",
    "fold": "the fold network (col2im), X[n,g,c_in,k..,o..] Pi.. summed over k.., o..",
})
"""The networks a derivation starts from (``tnconv.conv.networks.build``), each with its description."""

QUANTITIES: Mapping[str, str] = MappingProxyType({
    "N": "samples",
    "T": "output locations",
    "G": "groups",
    "C_in": "input channels",
    "C_out": "output channels",
    "K": "kernel taps",
})
"""The layer quantities a ``Scaling.formula`` may use, with what each counts (values: ``quantities``)."""


@dataclass(frozen=True)
class Later:
    """A function named by ``"module:attribute"``, imported on its first call (so that the table stays light).

    ``keywords`` are passed to it on every call, after the call's own arguments.
    """

    path: str
    keywords: tuple[tuple[str, Any], ...] = ()

    @cached_property
    def function(self) -> Callable[..., Any]:
        module, _, attribute = self.path.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args: Any) -> Any:
        return self.function(*args, **dict(self.keywords))


def later(path: str, **keywords: Any) -> Later:
    """``Later(path, keywords)``: ``later("tnconv.conv.derived:gram")``."""
    if path.count(":") != 1:
        raise ValueError(f"path must be 'module:attribute', got {path!r}")
    return Later(path, tuple(sorted(keywords.items())))


@dataclass(frozen=True)
class Stage:
    """One step of a derivation: ``make_pass(hyper, options)`` returns the ``Pass`` that performs it.

    ``title`` says what it does, as ``tnconv derive`` prints it; ``{columns}`` in
    it stands for M.
    """

    title: str
    make_pass: Callable[[ConvHyper, Options], Pass]


@dataclass(frozen=True)
class Operand:
    """An operand of a routine's network by name (``X``, ``W``, ``V``) and its torch ``shape`` for a layer."""

    name: str
    description: str
    shape: Callable[[ConvHyper, Options], tuple[int, ...]]


@dataclass(frozen=True)
class Scaling:
    """The network computes ``computes``, a sum without normalisation; the routine's value is it times ``formula``.

    ``formula`` is an expression in ``QUANTITIES`` (``1/(N*T^2)``; ``^`` is a
    power); ``title`` names the value (``the KFAC-reduce factor``); ``layout``
    describes ``result_shape`` (``(G, d, d)``) and ``where`` its letters
    (``d = C_in/G * prod(K)``).
    """

    formula: str
    computes: str
    title: str
    layout: str
    where: str = ""


@dataclass(frozen=True)
class Costs:
    """Where a shortcut pays: it runs where ``shortcut`` is at most ``network``, else the whole network runs.

    Both are formulas in ``QUANTITIES`` (multiply-adds; ``^`` a power): ``shortcut`` the
    cost of the shortcut (its part and ``combine``), ``network`` the cost of the whole
    network contracted as ``network_form`` says (the form its contraction path takes
    where it is the cheaper one: for a squared norm, by pairs of output locations).
    """

    shortcut: str
    network: str
    network_form: str


@dataclass(frozen=True)
class Shortcut:
    """A cheaper evaluation than the whole network, which holds one part twice.

    The network after the first ``stages`` stages of the derivation (simplified;
    ``0``: the start network) is that part; it is evaluated once and
    ``combine(part, hyper)`` gives the whole network's value (unscaled, any layout
    of the same elements in the same order, a new tensor). ``why`` says what it saves.
    ``costs`` (None: always cheaper) says for which layers it is.
    """

    stages: int
    combine: Callable[[torch.Tensor, ConvHyper], torch.Tensor]
    why: str
    costs: Costs | None = None


@dataclass(frozen=True)
class Reference:
    """The PyTorch/autograd implementation of a routine: ``build(hyper)`` returns a function of the operands.

    It returns the routine's value (scaled; any layout of the elements of
    ``result_shape``, in that order). ``largest(hyper, options)``: the numbers in
    the largest tensor it creates besides its operands and result (None: no
    larger one), so that ``--check`` and ``--bench`` refuse a layer it cannot hold.
    """

    build: Callable[[ConvHyper], Callable[[Operands], torch.Tensor]]
    largest: Callable[[ConvHyper, Options], int] | None = None


@dataclass(frozen=True, eq=False)
class Routine:
    """One routine: how to derive it, run it, explain it and check it (see the module docstring).

    ``name`` is the canonical spelling (``kfac_reduce``; ``kfac-reduce`` is
    accepted too); ``summary`` one line for help texts and docs; ``function``
    the public function that returns its value, if one does. ``widen_half``:
    float16/bfloat16 operands run in float32 and the value returns in their dtype
    (a KFAC sum overflows float16). Routines compare by identity: a cache key
    that costs nothing to hash.
    """

    name: str
    summary: str
    start: str
    operands: tuple[Operand, ...]
    result_shape: Callable[[ConvHyper, Options], tuple[int, ...]]
    reference: Reference
    derivation: tuple[Stage, ...] = ()
    transposed: bool = False
    takes_columns: bool = False
    scaling: Scaling | None = None
    shortcut: Shortcut | None = None
    widen_half: bool = False
    function: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"Routine name must be a lower-case identifier (kfac_reduce), got {self.name!r}")
        if self.start not in STARTS:
            raise ValueError(f"Routine {self.name!r}: start must be one of {tuple(STARTS)}, got {self.start!r}")
        if self.shortcut is not None and not 0 <= self.shortcut.stages <= len(self.derivation):
            raise ValueError(
                f"Routine {self.name!r}: shortcut.stages must be in 0..{len(self.derivation)} (its derivation's "
                f"stages; 0: the start network), got {self.shortcut.stages}"
            )

    @property
    def hyphen_name(self) -> str:
        """The command-line spelling: ``kfac-reduce``."""
        return self.name.replace("_", "-")

    @property
    def needs_out_channels(self) -> bool:
        """Whether the layer's ``out_channels`` is needed: a weight ``W`` or an output gradient ``V`` is an operand."""
        return any(operand.name in ("W", "V") for operand in self.operands)


def routine_table(routines: Iterable[Routine]) -> Mapping[str, Routine]:
    """An immutable table name -> routine (a ``MappingProxyType``), refusing two routines of one name.

    A copy of ``TABLE`` with one more routine: ``routine_table((*TABLE.values(), new))``.
    """
    table: dict[str, Routine] = {}
    for routine in routines:
        if not isinstance(routine, Routine):
            raise TypeError(f"routine_table takes Routine objects, got {type(routine).__name__}")
        if routine.name in table:
            raise ValueError(f"two routines are named {routine.name!r}")
        table[routine.name] = routine
    return MappingProxyType(table)
