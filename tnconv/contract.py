"""``tnconv.einsum``: ``torch.einsum`` in one call, with a plan compiled once per equation and shapes.

(The module is ``contract``, as opt_einsum's: a submodule named ``einsum`` would
shadow the function ``tnconv.einsum`` once imported.)

``tnconv.einsum("n c_in i, c_out c_in -> n c_out i", x, w)`` reads the
equation (letters or space-separated leg names, ``...``, an implicit output,
or numpy's sublist form: ``tnconv.ir.equation``), builds the ``Network`` of
the operands' shapes (``einsum_network``), compiles it (``tnconv.compile``)
and runs it. The program is cached in the program cache
(``tnconv.programs.cache.PROGRAMS``, bounded, emptied by ``tnconv.clear_caches()``)
under the equation, the shapes and ``optimize`` (normalised once,
``tnconv.lower.optimize``), so that a repeated call is one lookup and the
plan's fixed torch calls, not a new path search as in ``torch.einsum``.

Broadcasting follows ``torch.einsum``: the ``...`` dims of the operands are
aligned from the right, and a dim of size 1 takes the size of the same leg
elsewhere (such a dim is squeezed from its operand, a ``Squeeze`` view, so
the leg is not on that tensor). Legs are not limited to 52: a named equation
may hold any number of them.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch

from tnconv.backends.choice import BACKENDS, array_package
from tnconv.ir.equation import ELLIPSIS, parse_equation, sublist_equation
from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data
from tnconv.ir.views import Squeeze
from tnconv.programs.cache import PROGRAMS
from tnconv.programs.compile import compile as compile_network
from tnconv.lower.optimize import Optimize, normalize_optimize
from tnconv.programs.program import Program

_KEY = "tnconv.einsum"
"""The first part of this module's keys in the program cache (beside ``tnconv.compile``'s network keys)."""


def einsum(equation: object, *operands: object, optimize: object = "auto") -> Any:
    """Contract ``operands`` as ``equation`` says, as ``torch.einsum`` does, with a cached plan.

    The operands are torch tensors (the result is one) or numpy arrays (the result is a numpy
    array, computed by the numpy backend, ``tnconv.backends.numpy``).

    Takes what ``torch.einsum`` and ``opt_einsum.contract`` take: ``einsum(equation, *operands)``,
    ``einsum(equation, [a, b])`` (one list of operands), or numpy's sublist form
    ``einsum(a, [0, 1], b, [1, 2], [0, 2])`` (labels: ints, or hashable objects that sort
    together, and ``Ellipsis``; the output sublist is optional).

    Args:
        equation: ``"ij,jk->ik"`` (one letter per leg) or space-separated leg names
            (``"n c_in i1, c_out c_in k1 -> n c_out i1"``); ``...`` for broadcast dims;
            without ``->`` the output is ``...`` then the legs that occur once, sorted.
        operands: the tensors, one per term of the equation (one device, one array package); mixed
            dtypes are promoted to one (``torch.promote_types``, ``numpy.result_type``), as numpy and
            opt_einsum do.
        optimize: how to order the contraction (``tnconv.lower.optimize``): ``True``/``None``
            (``"auto"``), ``False`` (the operands' order, left to right), an opt_einsum path name
            (``"auto"``, ``"greedy"``, ``"optimal"``, ``"dp"``, ``"eager"``, ``"branch-2"``, ...,
            or one registered with ``opt_einsum.paths.register_path_fn``), an explicit path
            (opt_einsum's convention, over the operands), or an optimizer object: an opt_einsum
            ``PathOptimizer`` (``opt_einsum.DynamicProgramming()``) or a cotengra optimizer
            (``cotengra.HyperOptimizer()``), asked once per equation and shapes.

    Returns:
        The contraction, in the operands' (promoted) dtype and on their device.

    Raises:
        ValueError: naming the operand, leg and sizes where a shape does not fit the
            equation (or where broadcasting cannot reconcile two sizes of a leg).
        TypeError: for an operand that is not a tensor, or a bad ``optimize``.
    """
    text, tensors = _arguments(equation, operands)
    chosen = normalize_optimize(optimize)
    shapes = tuple(tuple(operand.shape) if _is_array(operand) else None for operand in tensors)  # type: ignore[attr-defined]
    key = (_KEY, text, shapes, chosen)
    program = PROGRAMS.get(key)
    if program is None:
        program = PROGRAMS.add(key, _compile(text, tensors, chosen))
    return program(*_promoted(tensors))


def _arguments(equation: object, operands: tuple[object, ...]) -> tuple[str, tuple[object, ...]]:
    """The equation and the operands of a call in any of ``einsum``'s forms (not yet checked to be tensors)."""
    if isinstance(equation, str):
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):  # torch.einsum's einsum(eq, [a, b])
            return equation, tuple(operands[0])
        return equation, operands
    if _is_array(equation):  # the sublist form: operand, labels, operand, labels, ..., [output]
        arguments = (equation, *operands)
        pairs = len(arguments) // 2
        output = arguments[-1] if len(arguments) % 2 else None
        return sublist_equation(arguments[1 : 2 * pairs : 2], output), arguments[0 : 2 * pairs : 2]
    raise TypeError(f"equation must be a str (or the first operand of the sublist form), got {equation!r}")


def _is_array(value: object) -> bool:
    """Whether ``value`` is an array of a backend's kind (a torch tensor, a numpy array)."""
    return array_package(value) in BACKENDS and hasattr(value, "shape")


def _promoted(operands: tuple[object, ...]) -> tuple[object, ...]:
    """``operands`` in one dtype, the promotion of theirs (``torch.promote_types``, ``numpy.result_type``), as
    they are when they share one."""
    try:
        dtypes = [operand.dtype for operand in operands]  # type: ignore[attr-defined]
    except AttributeError:  # not arrays: the program's checks name them
        return operands
    if all(dtype == dtypes[0] for dtype in dtypes):
        return operands
    if all(isinstance(operand, np.ndarray) for operand in operands):
        common = np.result_type(*dtypes)
        return tuple(operand.astype(common) for operand in operands)  # type: ignore[attr-defined]
    if not all(isinstance(operand, torch.Tensor) for operand in operands):  # mixed: the program's checks name them
        return operands
    dtype = functools.reduce(torch.promote_types, dtypes)
    return tuple(operand.to(dtype) for operand in operands)  # type: ignore[attr-defined]


def einsum_network(equation: str, shapes: Sequence[Sequence[int]]) -> Network:
    """The network of ``equation`` on operands of ``shapes``: operands ``op0``, ``op1``, ...; ``...`` expanded.

    The broadcast dims are legs ``...0``, ``...1``, ... (the last ones of the longest
    ellipsis), aligned from the right; an operand's size-1 dim whose leg has another
    size elsewhere is squeezed (a ``Squeeze`` view), as ``torch.einsum`` broadcasts it.
    """
    parsed = parse_equation(equation)
    if len(parsed.inputs) != len(shapes):
        raise ValueError(
            f"equation {equation!r} has {len(parsed.inputs)} operand(s) but {len(shapes)} were given"
        )
    ranks = [_ellipsis_rank(equation, n, legs, shape) for n, (legs, shape) in enumerate(zip(parsed.inputs, shapes))]
    broadcast = tuple(f"{ELLIPSIS}{d}" for d in range(max(ranks, default=0)))
    inputs = [_expand(legs, broadcast[len(broadcast) - rank :]) for legs, rank in zip(parsed.inputs, ranks)]
    output = _expand(parsed.output, broadcast)
    sizes = _leg_sizes(equation, inputs, shapes)
    tensors = []
    for n, (legs, shape) in enumerate(zip(inputs, shapes)):
        squeezed = [axis for axis, (leg, size) in enumerate(zip(legs, shape)) if size == 1 and sizes[leg] != 1]
        kept = tuple(leg for axis, leg in enumerate(legs) if axis not in squeezed)
        tensors.append(Tensor(f"op{n}", kept, Data(tuple(Squeeze(axis) for axis in reversed(squeezed)))))
    used = {leg for tensor in tensors for leg in tensor.legs}
    return Network(tensors, output, {leg: size for leg, size in sizes.items() if leg in used})


def _compile(equation: str, operands: Sequence[object], optimize: Optimize) -> Program:
    """Build and compile the network of ``equation`` for ``operands`` (checked here, once per shapes)."""
    for n, operand in enumerate(operands):
        if not _is_array(operand):
            raise TypeError(f"operand {n} must be a torch.Tensor or a numpy.ndarray, got {type(operand).__name__}")
    if not operands:
        raise ValueError(f"einsum needs at least one operand, got none for equation {equation!r}")
    # each operand was checked to be an array above (mypy does not narrow the sequence)
    net = einsum_network(equation, [tuple(operand.shape) for operand in operands])  # type: ignore[attr-defined]
    return compile_network(net, optimize)


def _ellipsis_rank(equation: str, n: int, legs: tuple[str, ...], shape: Sequence[int]) -> int:
    """How many dims operand ``n``'s ``...`` stands for (0 without one); ValueError when its rank does not fit."""
    named = len(legs) - (ELLIPSIS in legs)
    if ELLIPSIS in legs and len(shape) >= named:
        return len(shape) - named
    if ELLIPSIS not in legs and len(shape) == named:
        return 0
    need = f"at least {named}" if ELLIPSIS in legs else str(named)
    raise ValueError(
        f"operand {n} has {len(shape)} dim(s) (shape {tuple(shape)}) but its term in {equation!r} has {need} "
        f"leg(s): {' '.join(legs) or '(none)'}"
    )


def _expand(legs: tuple[str, ...], broadcast: tuple[str, ...]) -> tuple[str, ...]:
    """``legs`` with ``...`` replaced by the legs ``broadcast``."""
    if ELLIPSIS not in legs:
        return legs
    at = legs.index(ELLIPSIS)
    return legs[:at] + broadcast + legs[at + 1 :]


def _leg_sizes(equation: str, inputs: Sequence[tuple[str, ...]], shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """Each leg's size: the size of its dims, where those of size 1 broadcast (ValueError when two sizes clash)."""
    seen: dict[str, tuple[int, int, int]] = {}  # leg -> (size, operand, axis) of a dim that is not size 1
    sizes: dict[str, int] = {}
    for n, (legs, shape) in enumerate(zip(inputs, shapes)):
        own: dict[str, int] = {}
        for axis, (leg, size) in enumerate(zip(legs, shape)):
            if own.setdefault(leg, size) != size:
                raise ValueError(
                    f"operand {n} of {equation!r} carries leg {_name(leg)} twice with sizes {own[leg]} and {size} "
                    f"(shape {tuple(shape)}); a diagonal needs equal sizes"
                )
            sizes.setdefault(leg, size)
            if size == 1:
                continue
            first = seen.setdefault(leg, (size, n, axis))
            if first[0] != size:
                raise ValueError(
                    f"leg {_name(leg)} of {equation!r} has size {first[0]} on operand {first[1]} (axis {first[2]}) "
                    f"but {size} on operand {n} (axis {axis}); sizes must agree or be 1 (broadcast)"
                )
            sizes[leg] = size
    return sizes


def _name(leg: str) -> str:
    """A leg for a message: ``'i'``, or ``broadcast dim 0 of '...'``."""
    if leg.startswith(ELLIPSIS):
        return f"(broadcast dim {leg[len(ELLIPSIS):]} of '...')"
    return repr(leg)
