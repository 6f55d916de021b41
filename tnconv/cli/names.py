"""Names on the command line: the routines of the table and the built-in layers, in either spelling, with a hint
for a typo.

Light on purpose (no torch, no sympy): ``tnconv --help`` and every argument
error are answered from this module, ``tnconv.cli.layers``, the routine table
(``tnconv.routines``, light too) and argparse alone.
"""

from __future__ import annotations

from typing import Mapping

from tnconv.routines.names import hint, resolve
from tnconv.routines.routine import Routine

__all__ = ["hint", "routine_name", "routine_names"]


def routine_names(routines: Mapping[str, Routine]) -> tuple[str, ...]:
    """The command-line names (hyphen spelling) of the routines of a table, in table order."""
    return tuple(routine.hyphen_name for routine in routines.values())


def routine_name(name: str, routines: Mapping[str, Routine]) -> str:
    """The command-line routine ``name`` (``kfac-reduce`` or ``kfac_reduce``) in its hyphen spelling.

    ValueError names the argument, the value and the closest routine.
    """
    return resolve(name, routines, "ROUTINE", hyphens=True).hyphen_name
