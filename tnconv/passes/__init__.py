"""Passes: pure ``Network -> Network`` transformations and the vocabulary to compose and trace them.

- ``differentiate`` (product rule -> ``NetworkSum``), ``vmap``, ``fuse``,
  ``contract_copies`` (two copies multiplied, summed over given output legs: squares, norms);
- sub-tensor access: ``tie``, ``trace``, ``restrict``;
- ``simplify`` / ``simplify_traced`` (index-pattern and leg rules to a fixpoint);
- ``Pass``, ``Record``, ``Trace``, ``first``, ``sequence``, ``fixpoint``, ``checked``,
  ``as_pass`` (a ``*_traced`` function as a ``Pass``);
- ``Rule`` (a declared match plus a rewrite) and ``sweep`` (apply ordered rules, one visit per site and round).

Each returns the same object when nothing changed; each ``*_traced`` form
also returns the ``Trace`` of what it did.
"""

from tnconv.ir.networksum import NetworkSum
from tnconv.passes.copies import contract_copies, contract_copies_traced
from tnconv.passes.core import Pass, Record, Trace, as_pass, checked, first, fixpoint, sequence
from tnconv.passes.differentiate import differentiate, differentiate_traced
from tnconv.passes.fuse import fuse, fuse_traced
from tnconv.passes.simplify import simplify, simplify_traced
from tnconv.passes.subtensor import restrict, restrict_traced, tie, tie_traced, trace, trace_traced
from tnconv.passes.sweep import Rule, sweep
from tnconv.passes.vmap import vmap, vmap_traced

__all__ = [
    "Pass", "Record", "Trace", "as_pass", "checked", "first", "fixpoint", "sequence", "Rule", "sweep", "NetworkSum",
    "differentiate", "differentiate_traced", "fuse", "fuse_traced", "contract_copies", "contract_copies_traced", "vmap", "vmap_traced",
    "simplify", "simplify_traced", "tie", "tie_traced", "trace", "trace_traced", "restrict", "restrict_traced",
]
