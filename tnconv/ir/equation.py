"""Einsum equations, in letters (``"ij,jk->ik"``) or leg names (``"n c_in i1, c_out c_in k1 -> n c_out o1"``).

One parser for ``Network.from_einsum``, ``Network.to_einsum(named=True)`` and
``tnconv.einsum``:

- the *named* form has whitespace-separated legs: an equation is named when a
  term (an operand's or the output's legs) holds whitespace inside it, or a
  character that is not a letter (``_``, a digit, ``*``, ``'``). Otherwise each
  character is a leg, as in ``torch.einsum`` (which ignores whitespace: with
  one-letter legs both readings agree, so ``"i j, j k -> i k"`` means
  ``"ij,jk->ik"``). A term of one multi-letter leg alone (``"batch"``) reads as
  letters, as ``torch.einsum`` reads it, and so does a term whose ellipsis sits
  between letters (``"a...ab"``: legs ``a``, ``...``, ``a``, ``b``);
- ``...`` (``"...ij"``, ``"... i j"``) stands for the broadcast dims, at most
  once per term (``ELLIPSIS`` among the parsed legs);
- without ``->`` the output is, as in numpy and ``torch.einsum``, the
  broadcast dims followed by the legs that occur exactly once, sorted
  (``implicit_output``);
- numpy's sublist form (labels per operand, ``[0, 1], [1, 2]``) is written in the
  named form by ``sublist_equation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

ELLIPSIS = "..."
NAME_SYMBOLS = "_*'"
"""Characters a named leg may hold besides letters and digits (``c_in``, the merged leg ``a*b``, ``i'``)."""


@dataclass(frozen=True)
class Equation:
    """A parsed equation: each operand's legs, the output legs (``implicit``: none were written), the form."""

    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    implicit: bool
    named: bool

    @property
    def has_ellipsis(self) -> bool:
        return any(ELLIPSIS in legs for legs in (*self.inputs, self.output))


def parse_equation(equation: str) -> Equation:
    """Parse an einsum equation (see the module docstring); ValueError names the equation and the bad part.

    The output legs are not checked against the operands here: ``Network`` does that.
    """
    if not isinstance(equation, str):
        raise TypeError(f"equation must be a str, got {equation!r}")
    if equation.count("->") > 1:
        raise ValueError(f"equation {equation!r} has more than one '->'")
    left, arrow, right = equation.partition("->")
    terms = [term.strip() for term in left.split(",")]
    written = [*terms, right.strip()] if arrow else terms
    named = any(_is_named(term) for term in written)
    inputs = tuple(_legs(equation, term, named) for term in terms)
    output = _legs(equation, right.strip(), named) if arrow else implicit_output(inputs)
    return Equation(inputs, output, not arrow, named)


def sublist_equation(sublists: Sequence[object], output: object = None) -> str:
    """The equation of numpy's sublist form (``einsum(a, [0, 1], b, [1, 2], [0, 2])``) in the named form.

    ``sublists``: each operand's labels, ``output``: the output's, or None for the implicit
    output. Labels are ints (or, as opt_einsum takes them, any hashable objects that sort
    together) and ``Ellipsis``; a label becomes the leg ``l<rank>`` of its rank among the sorted
    labels (zero-padded), so that the implicit output comes out sorted by label, as in numpy.
    """
    terms: list[Sequence[Any]] = []
    for term in [*sublists, *([] if output is None else [output])]:
        if not isinstance(term, (list, tuple)):
            raise TypeError(f"a sublist must be a list or tuple of labels (ints or Ellipsis), got {term!r}")
        terms.append(term)
    try:
        ordered: list[Any] = sorted({label for term in terms for label in term if label is not Ellipsis})
    except TypeError:
        raise TypeError(
            f"sublist labels must be ints (or hashable objects that sort together) or Ellipsis, got {terms!r}"
        ) from None
    width = len(str(max(len(ordered) - 1, 0)))
    name = {label: f"l{rank:0{width}d}" for rank, label in enumerate(ordered)}

    def text(term: Sequence[Any]) -> str:
        return " ".join(ELLIPSIS if label is Ellipsis else name[label] for label in term)

    inputs = ", ".join(text(term) for term in terms[: len(sublists)])
    return inputs if output is None else f"{inputs} -> {text(terms[-1])}"


def implicit_output(inputs: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The output of an equation without ``->``: ``...`` if any operand has it, then the legs that occur once, sorted."""
    counts: dict[str, int] = {}
    for legs in inputs:
        for leg in legs:
            counts[leg] = counts.get(leg, 0) + 1
    once = sorted(leg for leg, count in counts.items() if count == 1 and leg != ELLIPSIS)
    return (ELLIPSIS, *once) if ELLIPSIS in counts else tuple(once)


def write_equation(inputs: Sequence[Sequence[str]], output: Sequence[str]) -> str:
    """The named form of an equation: ``"a b, b c -> a c"``; ValueError where it would not parse back the same.

    A leg must be made of letters, digits and ``_*'``. When every term has at most one
    leg and all legs are letters, the text would read as letters (``"batch -> batch"``):
    a leg with a digit or ``_`` (or a second leg on some term) tells the forms apart.
    """
    legs = {leg for term in (*inputs, output) for leg in term}
    bad = sorted(leg for leg in legs if not _is_name(leg))
    if bad:
        raise ValueError(
            f"leg(s) {bad} cannot be written in a named einsum: a leg name is letters, digits and {NAME_SYMBOLS!r}"
        )
    text = ", ".join(" ".join(term) for term in inputs) + " -> " + " ".join(output)
    if parse_equation(text) != Equation(tuple(map(tuple, inputs)), tuple(output), False, True) and any(
        len(leg) > 1 for leg in legs
    ):
        raise ValueError(
            f"the named einsum {text!r} would read as letters (no term has two legs and every leg is letters only); "
            f"rename a leg (with a digit or '_') or use the letters form"
        )
    return text


def _is_named(term: str) -> bool:
    """Whether ``term`` (stripped) is in the named form: whitespace inside it, or a character that is not a letter.

    The ellipsis is dropped first, not read as a separator: ``"a...ab"`` is letters (``a ... a b``), as
    ``torch.einsum`` reads it, and ``"n ... c_in"`` is named by its own whitespace and ``_``.
    """
    body = term.replace(ELLIPSIS, "").strip()
    return any(ch.isspace() or not ch.isalpha() for ch in body)


def _is_name(leg: str) -> bool:
    return bool(leg) and all(ch.isalnum() or ch in NAME_SYMBOLS for ch in leg)


def _letters(text: str) -> tuple[str, ...]:
    """One leg per character, whitespace skipped (as ``torch.einsum`` reads an equation)."""
    return tuple(ch for ch in text if not ch.isspace())


def _legs(equation: str, term: str, named: bool) -> tuple[str, ...]:
    """The legs of one term (``ELLIPSIS`` where it has ``...``)."""
    if term.count(ELLIPSIS) > 1 or term.replace(ELLIPSIS, "").count("."):
        raise ValueError(f"equation {equation!r}: term {term!r} may hold one ellipsis '...' and no other '.'")
    before, dots, after = term.partition(ELLIPSIS)
    if named:
        legs = (*before.split(), *((ELLIPSIS,) if dots else ()), *after.split())
        bad = [leg for leg in legs if leg != ELLIPSIS and not _is_name(leg)]
    else:
        legs = (*_letters(before), *((ELLIPSIS,) if dots else ()), *_letters(after))
        bad = [leg for leg in legs if leg != ELLIPSIS and not leg.isalpha()]
    if bad:
        raise ValueError(f"equation {equation!r}: operand {term!r} has invalid leg name(s) {bad}")
    return tuple(legs)
