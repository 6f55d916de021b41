"""``NetworkSum``: a sum of tensor networks with one output, the value of the product rule.

Differentiating a network in which an operand occurs several times (``X``
twice in a Gram matrix ``X X^T``) gives one network per occurrence; their
sum is the derivative. ``tnconv.compile`` evaluates a ``NetworkSum`` by
compiling each term and adding the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Union

from tnconv.ir.network import Network
from tnconv.ir.sizes import Size, equal


@dataclass(frozen=True, init=False)
class NetworkSum:
    """``sum_t terms[t]``: networks with identical output legs (same names, order and sizes).

    Operands are shared by name across terms (``X`` in one term is ``X`` in all).
    """

    terms: tuple[Network, ...]

    def __init__(self, terms: Iterable[Network]) -> None:
        terms = tuple(terms)
        if not terms:
            raise ValueError("a NetworkSum needs at least one term, got none")
        for term in terms:
            if not isinstance(term, Network):
                raise TypeError(f"terms of a NetworkSum must be tnconv.Network objects, got {type(term).__name__}")
        head = terms[0]
        for number, term in enumerate(terms[1:], 1):
            if term.output != head.output:
                raise ValueError(f"term {number} of a NetworkSum has output {term.output}, term 0 has {head.output}")
            for leg in head.output:
                if equal(term.size(leg), head.size(leg)) is False:
                    raise ValueError(
                        f"term {number} of a NetworkSum gives output leg {leg!r} size {term.size(leg)}, "
                        f"term 0 gives {head.size(leg)}"
                    )
        object.__setattr__(self, "terms", terms)

    @property
    def output(self) -> tuple[str, ...]:
        return self.terms[0].output

    def size(self, leg: str) -> Size:
        """The size of an output leg."""
        if leg not in self.output:
            raise ValueError(f"unknown output leg {leg!r}; the sum has output {self.output}")
        return self.terms[0].size(leg)

    @property
    def operands(self) -> tuple[str, ...]:
        """Data operand names over all terms, each once, in order of first occurrence."""
        return tuple(dict.fromkeys(name for term in self.terms for name in term.operands))

    def __reduce__(self) -> tuple[type[NetworkSum], tuple[object, ...]]:
        """Pickle as the terms (each a ``Network``, pickled by value); unpickling re-checks them."""
        return (NetworkSum, (self.terms,))

    def __copy__(self) -> "NetworkSum":
        return self  # immutable: a copy is the value itself

    def __deepcopy__(self, memo: dict[int, object]) -> "NetworkSum":
        return self

    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self) -> Iterator[Network]:
        return iter(self.terms)

    def __str__(self) -> str:
        return "\n+\n".join(term.dump() for term in self.terms)

    def __repr__(self) -> str:
        return "NetworkSum(" + " + ".join(map(repr, self.terms)) + ")"


Value = Union[Network, NetworkSum]
