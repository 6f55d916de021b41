"""``tnconv.routines``: the table of conv routines, the single place each routine lives.

- ``TABLE``: name -> ``Routine`` (immutable); ``routine_table`` builds a table
  (a copy of ``TABLE`` with more routines); ``resolve`` finds a routine by name
  in either spelling, suggesting the closest name for a typo.
- ``Routine`` and its parts: ``Stage`` (a derivation step: a title and the
  ``Pass`` that performs it), ``Operand``, ``Scaling``, ``Shortcut`` (with ``Costs``: where it pays),
  ``Reference``, ``Options`` (M, the GGN columns); ``later`` names a function
  imported when first called.
- ``derive`` (the stages with their rewrites, as ``tnconv derive`` prints them),
  ``routine_network`` (the network, cached), ``run_routine`` (compile, call,
  scale, reshape): imported on first use, as they need torch.

Modules: ``routine`` (the data types), ``table`` (the entries), ``names``,
``derivation``, ``run``, ``scaling``, ``references`` (the PyTorch references),
``gram`` (symmetric Gram products by upper panels, which the KFAC shortcuts run).
Importing this package imports neither torch nor sympy.
"""

from __future__ import annotations

import importlib
from typing import Any

from tnconv.routines.names import resolve
from tnconv.routines.routine import (
    QUANTITIES, STARTS, Costs, Later, Operand, Options, Reference, Routine, Scaling, Shortcut, Stage, later,
    routine_table,
)
from tnconv.routines.table import TABLE

_HEAVY = {
    "derive": "tnconv.routines.derivation",
    "routine_network": "tnconv.routines.derivation",
    "StageResult": "tnconv.routines.derivation",
    "run_routine": "tnconv.routines.run",
}

__all__ = [
    "TABLE", "Routine", "Stage", "Operand", "Scaling", "Shortcut", "Costs", "Reference", "Options", "Later", "later",
    "routine_table", "resolve", "STARTS", "QUANTITIES", "derive", "routine_network", "StageResult", "run_routine",
]


def __getattr__(name: str) -> Any:
    if name not in _HEAVY:
        raise AttributeError(f"module 'tnconv.routines' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HEAVY[name]), name)
    globals()[name] = value
    return value
