"""Names of routines: either spelling (``kfac_reduce`` or ``kfac-reduce``), and the closest name for a typo.

Light (difflib only): the command line resolves names before importing torch.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from tnconv.routines.routine import Routine


def hint(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``name`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def resolve(name: object, routines: Mapping[str, Routine], argument: str = "op", hyphens: bool = False) -> Routine:
    """The routine called ``name`` in ``routines`` (``_`` or ``-`` between words).

    Errors name ``argument``, the value and the closest routine, spelled with
    hyphens (the command line's spelling) when ``hyphens``, else underscores.
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a routine name (str), got {name!r}")
    found = routines.get(name.replace("-", "_"))
    if found is not None:
        return found
    spelling = [key.replace("_", "-") if hyphens else key for key in routines]
    asked = name.replace("_", "-") if hyphens else name.replace("-", "_")
    raise ValueError(f"{argument}: unknown routine {name!r}{hint(asked, spelling)} (choose from {', '.join(spelling)})")
