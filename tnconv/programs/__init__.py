"""Programs: a network, its plan and the backends that run it (``tnconv.compile``, ``tnconv.Program``).

The layer above the planner (``tnconv.lower``) and the backends
(``tnconv.backends``): ``Program`` plans a network for the backend of its
operands and calls that backend's runner; ``tnconv.programs.cache`` bounds the
compiled programs by the bytes of their constants; ``tnconv.programs.sum`` runs
a ``NetworkSum`` term by term.
"""

from tnconv.programs.compile import compile
from tnconv.programs.program import Program

__all__ = ["compile", "Program"]
