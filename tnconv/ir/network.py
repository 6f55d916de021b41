"""The immutable tensor-network IR.

A ``Network`` is an ordered tuple of tensors, each with ordered named legs and
a kind (``tnconv.ir.tensors``), a size for every leg, and an explicit ordered
output. A leg joins any number of tensors (a hyperedge); a tensor may carry
the same leg twice (its diagonal is used). Several tensors may share a name:
they are occurrences of one operand (``X`` twice in a Gram matrix ``X X^T``).

Networks are values: equal when their tensors, sizes and output are equal,
hashable, and never changed in place; every transformation returns a new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress, count, repeat
from operator import attrgetter, contains
from types import MappingProxyType
from typing import Collection, Iterable, Mapping, Sequence, cast

import networkx as nx
import opt_einsum
import sympy

from tnconv.ir.equation import parse_equation, write_equation
from tnconv.ir.sizes import Size, check_size, is_concrete, leg_symbol, substitute, symbols_of
from tnconv.ir.tensors import Data, Kind
from tnconv.ir.views import View, tap_axes


SCANS_BEFORE_INDEX = 4
"""Legs a network answers ``tensors_on`` for by scanning its tensors before it indexes all of its legs."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of a network: its name, its ordered legs and its kind."""

    name: str
    legs: tuple[str, ...]
    kind: Kind = Data()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"tensor name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.legs, tuple) or not _names(self.legs):
            raise TypeError(f"legs of tensor {self.name!r} must be a tuple of non-empty str, got {self.legs!r}")
        if not isinstance(self.kind, Kind):
            raise TypeError(f"kind of tensor {self.name!r} must be a tnconv Kind, got {self.kind!r}")

    @property
    def structured(self) -> bool:
        return self.kind.structured

    @cached_property
    def leg_set(self) -> frozenset[str]:
        """The legs as a set: ``leg in tensor.leg_set`` at once where a tensor carries thousands of legs."""
        return frozenset(self.legs)

    @cached_property
    def repeated_legs(self) -> frozenset[str]:
        """The legs the tensor carries more than once (its diagonal is used), as a set."""
        if len(self.leg_set) == len(self.legs):
            return frozenset()
        return frozenset(leg for leg in self.leg_set if self.legs.count(leg) > 1)

    @cached_property
    def tap_legs(self) -> frozenset[str]:
        """The legs a data tensor reads through a ``Taps`` view (a pattern's legs); none for structured kinds.

        Asked of each of thousands of legs of one tensor by the leg rules, so computed once from its view chain.
        """
        if not isinstance(self.kind, Data):
            return frozenset()
        return frozenset(self.legs[axis] for axis in tap_axes(self.kind.views, len(self.legs)))

    @property
    def views(self) -> tuple[View, ...]:
        """The views from a data tensor's operand to its legs; ``()`` for structured kinds (they have none)."""
        return self.kind.views if isinstance(self.kind, Data) else ()


class Network:
    """An immutable tensor network with an explicit ordered output.

    Args:
        tensors: the tensors, in order.
        output: the output legs, in order (each at most once, each on some tensor).
        sizes: leg -> int or sympy expression; legs left out get a positive
            integer symbol named after the leg.
    """

    __slots__ = ("_entries", "_output", "_sizes", "__dict__", "__weakref__")
    _entries: tuple[Tensor, ...]
    _output: tuple[str, ...]
    _sizes: Mapping[str, Size]  # set by ``_build``; for a network made by ``replace``, on first use (``__getattr__``)

    def __init__(
        self,
        tensors: Iterable[Tensor],
        output: Sequence[str],
        sizes: Mapping[str, Size] | None = None,
    ) -> None:
        self._build(tuple(tensors), output, sizes or {}, drop_unknown=False)

    def _build(
        self, entries: tuple[Tensor, ...], output: Sequence[str], given: Mapping[str, Size], drop_unknown: bool,
        checked: bool = False,
    ) -> None:
        """Validate and set the parts; sizes of legs on no tensor are an error unless ``drop_unknown``.

        Networks are rebuilt after every rewrite, some with thousands of legs,
        so the common case (every size a known int) is checked in bulk, and sizes
        that are a network's own (``checked``) are not checked again.
        """
        if not all(map(isinstance, entries, repeat(Tensor))):
            bad = next(entry for entry in entries if not isinstance(entry, Tensor))
            raise TypeError(f"tensors must be tnconv Tensor objects, got {bad!r}")
        if isinstance(output, str) or not isinstance(output, Iterable):
            raise TypeError(f"output must be a sequence of leg names, got {output!r} ({type(output).__name__})")
        output = tuple(output)
        if not _names(output, empty_ok=True):
            raise TypeError(f"output must be a sequence of leg names, got {output!r}")
        ordered = _legs_in_order(entries)
        if len(set(output)) != len(output):
            repeated = sorted({leg for leg in output if output.count(leg) > 1})
            raise ValueError(f"output legs must be distinct, got {output!r} (repeats {repeated})")
        if not ordered.keys() >= set(output):
            missing = [leg for leg in output if leg not in ordered]
            raise ValueError(f"output leg(s) {missing} are on no tensor (output={output!r})")
        if not drop_unknown and not given.keys() <= ordered.keys():
            unknown = sorted(set(given).difference(ordered))
            raise ValueError(f"sizes given for leg(s) {unknown} that no tensor has")
        sizes: dict[str, Size] = dict(zip(ordered, map(given.get, ordered)))  # type-checked just below
        if not (checked and ordered.keys() <= given.keys()):  # a network's own sizes are checked already
            values = sizes.values()
            if values and not (set(map(type, values)) == {int} and min(cast("Collection[int]", values)) >= 0):
                sizes = {leg: _size(given, leg) for leg in ordered}  # symbols, missing or bad sizes: one by one
        object.__setattr__(self, "_entries", entries)  # also where ``replace`` set them, before laying out
        object.__setattr__(self, "_output", output)
        object.__setattr__(self, "_sizes", MappingProxyType(sizes))

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_einsum(cls, equation: str, *names: str, sizes: Mapping[str, Size] | None = None) -> "Network":
        """A network of data tensors from an einsum equation.

        ``"ij,jk->ik"`` names one leg per letter. With spaces inside a term (or a leg
        with a digit or ``_``), legs are whitespace-separated names:
        ``"n c_in i1, c_out c_in k1 -> n c_out o1"``, the form ``to_einsum(named=True)``
        writes (``tnconv.ir.equation``). Without ``->`` the output is, as in
        ``torch.einsum``, the legs that occur once, sorted. ``...`` needs the operands'
        shapes: ``tnconv.einsum`` takes it.

        Args:
            equation: the einsum equation.
            names: one name per operand (repeat a name for the same operand).
            sizes: optional leg -> size; missing sizes are symbolic.
        """
        parsed = parse_equation(equation)
        if parsed.has_ellipsis:
            raise ValueError(
                f"equation {equation!r}: an ellipsis '...' needs the operands' shapes; name every leg, "
                f"or contract with tnconv.einsum"
            )
        inputs, output = parsed.inputs, parsed.output
        if len(names) != len(inputs):
            raise ValueError(
                f"equation {equation!r} has {len(inputs)} operand(s) but {len(names)} name(s) were given: {names!r}"
            )
        return cls([Tensor(name, legs) for name, legs in zip(names, inputs)], output, sizes)

    def replace(
        self,
        tensors: Iterable[Tensor] | None = None,
        output: Sequence[str] | None = None,
        sizes: Mapping[str, Size] | None = None,
    ) -> "Network":
        """A new network with some parts replaced; sizes of legs that vanished are dropped.

        The tensors are checked at once; the rest (the output legs on some tensor, every leg's
        size, legs in order) when first read (``_laid_out``): a pass replaces one tensor of a
        network of thousands of tensors many times, and its next rewrite reads tensors and a few
        sizes, which ``size`` answers from the sizes given without laying the network out.
        """
        entries = tuple(self._entries if tensors is None else tensors)
        if not all(map(isinstance, entries, repeat(Tensor))):
            bad = next(entry for entry in entries if not isinstance(entry, Tensor))
            raise TypeError(f"tensors must be tnconv Tensor objects, got {bad!r}")
        if isinstance(output, str) or not isinstance(output, (Iterable, type(None))):
            raise TypeError(f"output must be a sequence of leg names, got {output!r} ({type(output).__name__})")
        result = Network.__new__(Network)
        object.__setattr__(result, "_entries", entries)
        object.__setattr__(result, "_output", self._output if output is None else tuple(output))  # checked: laid out
        pending = self.__dict__.get("_pending")
        known, checked = (self._sizes, True) if pending is None else pending
        result.__dict__["_pending"] = (known, checked) if sizes is None else (sizes, False)
        if output is None and "output_set" in self.__dict__:
            result.__dict__["output_set"] = self.output_set  # the same output: its set is the parent's
        return result

    def __getattr__(self, name: str) -> object:
        """``_sizes`` of a network made by ``replace``: lay it out on first use (the one slot set lazily)."""
        if name != "_sizes" or "_pending" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self._laid_out()

    def _laid_out(self) -> Mapping[str, Size]:
        """Check and lay out a network that ``replace`` made (``_build`` of its parts), once whichever thread asks
        first; its sizes."""
        with _LAYING_OUT:
            pending = self.__dict__.get("_pending")
            if pending is not None:
                self._build(self._entries, self._output, pending[0], drop_unknown=True, checked=pending[1])
                del self.__dict__["_pending"]
        return self._sizes

    # --- reading ------------------------------------------------------------------------
    @property
    def tensors(self) -> tuple[str, ...]:
        """Tensor names, in order (a name repeats where an operand occurs more than once)."""
        return tuple(entry.name for entry in self._entries)

    @property
    def entries(self) -> tuple[Tensor, ...]:
        """The tensors themselves (name, legs, kind), in order."""
        return self._entries

    @property
    def output(self) -> tuple[str, ...]:
        return self._output

    @cached_property
    def output_set(self) -> frozenset[str]:
        """The output legs as a set: ``leg in net.output_set`` at once where the output has thousands of legs."""
        return frozenset(self._output)

    @property
    def sizes(self) -> Mapping[str, Size]:
        """Leg -> size, read-only, legs in order of first appearance."""
        return self._sizes

    @cached_property
    def all_legs(self) -> tuple[str, ...]:
        """Every leg, in order of first appearance on the tensors."""
        return tuple(self._sizes)

    @cached_property
    def operands(self) -> tuple[str, ...]:
        """Names of the data tensors the user binds, each once, in order of first occurrence."""
        return tuple(dict.fromkeys(e.name for e in self._entries if not e.structured))

    def legs(self, tensor: str | int) -> tuple[str, ...]:
        """The legs of a tensor, by name (when it occurs once) or by position."""
        return self._entries[self.position(tensor)].legs

    def position(self, tensor: str | int) -> int:
        """The position of a tensor given by name (it must occur once) or by position."""
        if isinstance(tensor, bool) or not isinstance(tensor, (str, int)):
            raise TypeError(f"tensor must be a name or a position, got {tensor!r}")
        if isinstance(tensor, int):
            if not -len(self._entries) <= tensor < len(self._entries):
                raise ValueError(f"tensor position {tensor} is out of range for {len(self._entries)} tensors")
            return tensor % len(self._entries)
        found = [p for p, e in enumerate(self._entries) if e.name == tensor]
        if not found:
            raise ValueError(f"unknown tensor {tensor!r}; the network has {self.tensors}")
        if len(found) > 1:
            raise ValueError(f"tensor {tensor!r} occurs {len(found)} times (positions {found}); give a position")
        return found[0]

    def positions(self, name: str) -> tuple[int, ...]:
        """Positions of every occurrence of tensor ``name``."""
        return tuple(p for p, e in enumerate(self._entries) if e.name == name)

    def size(self, leg: str) -> Size:
        """The size of a leg (an int, or a sympy expression when unknown)."""
        pending = self.__dict__.get("_pending")
        if pending is not None and pending[1] and leg in pending[0] and self.tensors_on(leg):
            return pending[0][leg]  # a checked size of a leg on some tensor: no need to lay the network out
        try:
            return self._sizes[leg]
        except (KeyError, TypeError):
            raise ValueError(f"unknown leg {leg!r}; the network has legs {self.all_legs}") from None

    def tensors_on(self, leg: str) -> tuple[int, ...]:
        """Positions of the tensors that carry ``leg`` (a position once per tensor, in order).

        Remembered per leg: rewrite rules ask it of a few legs of each of
        many networks, for which scanning the tensors per leg costs less
        than an index of every leg. A network asked about more than
        ``SCANS_BEFORE_INDEX`` legs (a sweep visiting each of its thousands
        of sites) indexes all legs in one pass, so that each further
        answer is a lookup: without it, a sweep over an unchanged network
        scanned every tensor once per site, quadratic in the sites.
        """
        carriers = self._carriers
        found = carriers.get(leg)
        if found is not None:
            return found
        if len(carriers) >= SCANS_BEFORE_INDEX:
            if not self.__dict__.get("_indexed"):
                self._index_all_legs()
            return carriers.get(leg, ())
        # ``leg in e.leg_set`` for each tensor at C speed (thousands of tensors, or of legs)
        carried = map(contains, map(_leg_sets, self._entries), repeat(leg))
        found = carriers[leg] = tuple(compress(count(), carried))
        return found

    def _index_all_legs(self) -> None:
        """Fill ``_carriers`` with every leg's positions (one pass over the tensors' legs)."""
        index: dict[str, list[int]] = {}
        for position, entry in enumerate(self._entries):
            for leg in entry.leg_set:
                index.setdefault(leg, []).append(position)
        self._carriers.update((leg, tuple(positions)) for leg, positions in index.items())
        self.__dict__["_indexed"] = True

    @cached_property
    def _carriers(self) -> dict[str, tuple[int, ...]]:
        return {}

    @cached_property
    def is_concrete(self) -> bool:
        """Whether every size is a known integer."""
        return all(is_concrete(s) for s in self._sizes.values())

    @cached_property
    def symbols(self) -> frozenset[sympy.Symbol]:
        """The free symbols of all sizes."""
        return symbols_of(self._sizes.values())

    @cached_property
    def graph(self) -> nx.MultiGraph:
        """A frozen networkx multigraph: nodes ``("tensor", position)`` and ``("leg", name)``.

        There is one edge per leg slot of a tensor (key = slot), so a leg a tensor
        carries twice gives two parallel edges and a hyperedge is a leg node with
        more than two neighbours.
        """
        graph = nx.MultiGraph()
        for position, entry in enumerate(self._entries):
            graph.add_node(("tensor", position), name=entry.name, kind=entry.kind.label)
        for leg, size in self._sizes.items():
            graph.add_node(("leg", leg), size=size, output=leg in self._output)
        for position, entry in enumerate(self._entries):
            for slot, leg in enumerate(entry.legs):
                graph.add_edge(("tensor", position), ("leg", leg), key=slot)
        return nx.freeze(graph)

    # --- transformations ----------------------------------------------------------------
    def rename(self, mapping: Mapping[str, str] | None = None, /, **legs: str) -> "Network":
        """Rename legs (``net.rename({"i": "j"})`` or ``net.rename(i="j")``); a pure relabelling.

        Raises ValueError for unknown legs or a new name that collides with another leg.
        """
        renames = {**(mapping or {}), **legs}
        for old, new in renames.items():
            self.size(old)
            if not isinstance(new, str) or not new:
                raise TypeError(f"new name for leg {old!r} must be a non-empty str, got {new!r}")
        final = [renames.get(leg, leg) for leg in self._sizes]
        if len(set(final)) != len(final):
            clash = sorted({name for name in final if final.count(name) > 1})
            raise ValueError(f"renaming {renames!r} would merge distinct legs into {clash}")
        if not renames:
            return self
        entries = [Tensor(e.name, tuple(renames.get(l, l) for l in e.legs), e.kind) for e in self._entries]
        sizes = {renames.get(l, l): s for l, s in self._sizes.items()}
        return Network(entries, [renames.get(l, l) for l in self._output], sizes)

    def rename_tensors(self, mapping: Mapping[str, str]) -> "Network":
        """Rename tensors (every occurrence of each name)."""
        for old in mapping:
            if not self.positions(old):
                raise ValueError(f"unknown tensor {old!r}; the network has {self.tensors}")
        if not mapping:
            return self
        entries = [Tensor(mapping.get(e.name, e.name), e.legs, e.kind) for e in self._entries]
        return Network(entries, self._output, self._sizes)

    def substitute(self, sizes: Mapping[str | sympy.Symbol, Size]) -> "Network":
        """Replace symbols (by symbol or symbol name) in every size and structured tensor."""
        by_name = {s.name: s for s in self.symbols}
        values: dict[sympy.Symbol, Size] = {}
        for key, value in sizes.items():
            symbol = by_name.get(key) if isinstance(key, str) else key
            if symbol is None:
                raise ValueError(f"unknown size symbol {key!r}; the network's symbols are {sorted(by_name)}")
            values[symbol] = check_size(value, f"symbol {key!r}")
        if not values:
            return self
        entries = [Tensor(e.name, e.legs, e.kind.substitute(values)) for e in self._entries]
        return Network(entries, self._output, {l: substitute(s, values) for l, s in self._sizes.items()})

    # --- output -------------------------------------------------------------------------
    def to_einsum(self, named: bool = False) -> str:
        """An einsum equation with one letter per leg (legs in order of first appearance).

        Beyond 52 legs the letters continue with opt_einsum's unicode symbols. With
        ``named``, the legs' own names instead, space-separated, commas between operands:
        ``"n c_in i1, c_out c_in k1 -> n c_out o1"`` (``from_einsum`` reads it back; a
        ValueError where a leg name has characters other than letters, digits and ``_*'``).
        """
        if not isinstance(named, bool):
            raise TypeError(f"named must be a bool, got {named!r}")
        if named:
            return write_equation([e.legs for e in self._entries], self._output)
        letters = {leg: opt_einsum.get_symbol(n) for n, leg in enumerate(self._sizes)}
        inputs = ",".join("".join(letters[l] for l in e.legs) for e in self._entries)
        return f"{inputs}->{''.join(letters[l] for l in self._output)}"

    def dump(self) -> str:
        """A deterministic multi-line text of the network."""
        from tnconv.render.text import dump

        return dump(self)

    def __str__(self) -> str:
        return self.dump()

    def _repr_svg_(self) -> str:
        """The diagram, for Jupyter (``tnconv.render.draw.to_svg``)."""
        from tnconv.render.draw import to_svg

        return to_svg(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{e.name}({','.join(e.legs)})" for e in self._entries)
        return f"Network({inner} -> ({','.join(self._output)}))"

    # --- value semantics ------------------------------------------------------------------
    @cached_property
    def _key(self) -> tuple[object, ...]:
        return (self._entries, self._output, tuple(self._sizes.items()))

    @cached_property
    def _hash(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and (self is other or self._key == other._key)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Network], tuple[object, ...]]:
        """Pickle (and ``torch.save``) as the constructor's arguments: tensors, output and sizes.

        Cached properties (graph, key) are not pickled; the copy rebuilds them on use,
        equals the original and hashes alike.
        """
        return (Network, (self._entries, self._output, dict(self._sizes)))

    def __copy__(self) -> "Network":
        return self  # immutable: a copy is the value itself, as for tuples

    def __deepcopy__(self, memo: dict[int, object]) -> "Network":
        return self

    def __setattr__(self, name: str, value: object) -> None:
        if name in Network.__slots__ and hasattr(self, name):
            raise AttributeError(f"Network is immutable; {name} cannot be set")
        super().__setattr__(name, value)


_LAYING_OUT = threading.Lock()
"""Held while a network made by ``replace`` is laid out (``Network._laid_out``), so that it happens once."""
_legs_of = attrgetter("legs")
_leg_sets = attrgetter("leg_set")


def _legs_in_order(entries: Sequence[Tensor]) -> dict[str, None]:
    """Every leg once, in order of first appearance (a dict: ordered, and a set)."""
    return dict.fromkeys(chain.from_iterable(map(_legs_of, entries)))


def _names(items: tuple[object, ...], empty_ok: bool = False) -> bool:
    """Whether ``items`` are all str (non-empty ones unless ``empty_ok``), checked at C speed.

    Networks are rebuilt after every rewrite, with thousands of legs on some
    tensors: a Python-level loop here dominated ``simplify``.
    """
    try:
        "".join(cast("tuple[str, ...]", items))  # raises TypeError at the first item that is not a str
    except TypeError:
        return False
    return empty_ok or all(items)


def _size(given: Mapping[str, object], leg: str) -> Size:
    """The checked size given for ``leg``, or its symbol when none is given."""
    if leg not in given:
        return leg_symbol(leg)
    return check_size(given[leg], f"leg {leg!r}")
