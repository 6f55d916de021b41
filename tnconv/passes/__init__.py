"""Passes: pure ``Network -> Network`` transformations and the vocabulary to compose and trace them.

- ``differentiate`` (product rule -> ``NetworkSum``), ``vmap``, ``fuse``;
- sub-tensor access: ``tie``, ``trace``, ``restrict``;
- ``simplify`` / ``simplify_traced`` (index-pattern and leg rules to a fixpoint);
- ``Pass``, ``Record``, ``Trace``, ``rule_pass``, ``first``, ``sequence``, ``fixpoint``, ``checked``.

Each returns the same object when nothing changed.
"""

from tnconv.passes.core import Pass, Record, Trace, checked, first, fixpoint, rule_pass, sequence
from tnconv.passes.differentiate import differentiate
from tnconv.passes.fuse import fuse
from tnconv.passes.networksum import NetworkSum
from tnconv.passes.simplify import simplify, simplify_traced
from tnconv.passes.subtensor import restrict, tie, trace
from tnconv.passes.vmap import vmap

__all__ = [
    "Pass", "Record", "Trace", "checked", "first", "fixpoint", "rule_pass", "sequence",
    "differentiate", "NetworkSum", "fuse", "vmap", "simplify", "simplify_traced", "tie", "trace", "restrict",
]
