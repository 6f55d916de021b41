"""Random einsum equations of the kinds opt_einsum's own contract tests use, and their operands.

``opt_einsum``'s test suite checks ``contract`` on hand-picked equations (scalars, Hadamard
products, index transformations, collapses, outer products, inner products, GEMMs, diagonals,
leftover random failures) and on ``rand_equation`` networks. ``equation_sample(seed)`` draws
equations of those kinds from a ``random.Random``, so a test runs a fixed, varied sample
without reading opt_einsum's test files:

- ``scalar``: some operands with no legs (``",ab,->ab"``);
- ``hadamard``: operands that share all their legs (``"a,ab,abc->abc"``);
- ``transform``: one tensor with every leg changed by a matrix (``"ea,fb,abcd->efgh"`` order shuffled);
- ``collapse``: pairs of equal terms summed out, some legs kept (``"ab,ab,cd,cd->ac"``);
- ``outer``: disjoint terms, some legs kept (``"ab,cd,ef->acdf"``);
- ``inner``: two terms over the same legs in two orders (``"abc,bac"``);
- ``gemm``: a matrix product over a few legs in any orders (``"abcd,efdc"``);
- ``diagonal``: a leg repeated on a term (``"aab,bcc->ac"``, ``"fff,fae,bef,def->abd"``);
- ``network``: a random network of ``operands`` tensors where each leg joins ``regularity``
  of them, some legs left on one tensor (output legs), as ``opt_einsum.testing.rand_equation``.

Outputs are explicit (a permutation of some legs) or implicit; ``greek`` rewrites the
letters as Greek ones (opt_einsum's ``test_compare_greek``).
"""

from __future__ import annotations

import random
import string

KINDS = ("scalar", "hadamard", "transform", "collapse", "outer", "inner", "gemm", "diagonal", "network")
LETTERS = string.ascii_lowercase


def equation_sample(seed: int, count: int) -> list[tuple[str, dict[str, int]]]:
    """``count`` equations (``(equation, size per letter)``), the kinds in turn, drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [random_equation(rng, KINDS[n % len(KINDS)]) for n in range(count)]


def random_equation(rng: random.Random, kind: str) -> tuple[str, dict[str, int]]:
    """One equation of ``kind`` (see the module docstring) and the size of each of its letters (1 to 4)."""
    terms = _TERMS[kind](rng)
    legs = sorted({leg for term in terms for leg in term})
    sizes = {leg: rng.randint(1, 4) for leg in legs}
    inputs = ",".join(terms)
    if rng.random() < 0.3:
        return inputs, sizes  # implicit output
    once = [leg for leg in legs if sum(term.count(leg) for term in terms) == 1]
    kept = [leg for leg in legs if leg in once or rng.random() < 0.3]
    rng.shuffle(kept)
    return f"{inputs}->{''.join(kept[: rng.randint(0, len(kept))])}", sizes


def greek(equation: str) -> str:
    """``equation`` with its letters moved to Greek ones (as opt_einsum's ``test_compare_greek``)."""
    return "".join(chr(ord(c) + 848) if c not in ",->." else c for c in equation)


def _pick(rng: random.Random, count: int) -> list[str]:
    return rng.sample(LETTERS, count)


def _scalar(rng: random.Random) -> list[str]:
    legs = "".join(_pick(rng, rng.randint(0, 2)))
    terms = [legs] + ["" for _ in range(rng.randint(1, 2))]
    rng.shuffle(terms)
    return terms


def _hadamard(rng: random.Random) -> list[str]:
    legs = _pick(rng, rng.randint(1, 3))
    return ["".join(legs[: rng.randint(1, len(legs))]) for _ in range(rng.randint(2, 3))]


def _transform(rng: random.Random) -> list[str]:
    legs = _pick(rng, 2 * rng.randint(1, 3))
    inner, outer = legs[: len(legs) // 2], legs[len(legs) // 2 :]
    terms = ["".join(inner)] + [o + i for o, i in zip(outer, inner)]
    rng.shuffle(terms)
    return terms


def _collapse(rng: random.Random) -> list[str]:
    terms = []
    for _ in range(rng.randint(1, 3)):
        term = "".join(_pick(rng, rng.randint(1, 2)))
        terms += [term, term]
    return terms


def _outer(rng: random.Random) -> list[str]:
    legs = _pick(rng, 6)
    return [legs[0] + legs[1], legs[2] + legs[3], legs[4] + legs[5]][: rng.randint(2, 3)]


def _inner(rng: random.Random) -> list[str]:
    legs = _pick(rng, rng.randint(1, 3))
    other = legs[:]
    rng.shuffle(other)
    return ["".join(legs), "".join(other)]


def _gemm(rng: random.Random) -> list[str]:
    m, k, n = (_pick(rng, 6)[i : i + 2][: rng.randint(1, 2)] for i in (0, 2, 4))
    a, b = m + k, k + n
    rng.shuffle(a)
    rng.shuffle(b)
    return ["".join(a), "".join(b)]


def _diagonal(rng: random.Random) -> list[str]:
    legs = _pick(rng, 4)
    terms = []
    for _ in range(rng.randint(1, 4)):
        term = [rng.choice(legs) for _ in range(rng.randint(1, 3))]
        terms.append("".join(term))
    if all(len(set(term)) == len(term) for term in terms):
        terms[0] += terms[0][0]
    return terms


def _network(rng: random.Random) -> list[str]:
    """``operands`` terms where each inner leg joins ``regularity`` of them, plus some legs on one term only."""
    operands, regularity = rng.randint(3, 5), rng.randint(2, 3)
    letters = iter(LETTERS)
    terms: list[list[str]] = [[] for _ in range(operands)]
    for _ in range(operands * regularity // 2):
        leg = next(letters)
        for position in rng.sample(range(operands), regularity):
            terms[position].append(leg)
    for _ in range(rng.randint(0, 2)):
        terms[rng.randrange(operands)].append(next(letters))
    for term in terms:
        rng.shuffle(term)
    return ["".join(term) for term in terms]


_TERMS = {
    "scalar": _scalar, "hadamard": _hadamard, "transform": _transform, "collapse": _collapse, "outer": _outer,
    "inner": _inner, "gemm": _gemm, "diagonal": _diagonal, "network": _network,
}
