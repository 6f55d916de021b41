"""``Options``: what a conv routine's network needs beyond the layer (``ConvHyper``).

The derivation passes (``tnconv.conv.derived``) read it and the routine table
(``tnconv.routines``) passes it along, so it lives here, below both. Plain data:
importing it imports neither torch nor sympy (the routine table stays light).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """What a routine needs beyond the layer: ``columns``, M, for routines that ``take_columns``.

    ``None`` leaves M symbolic (the leg ``m`` of ``conv_network("diag_ggn", ...)``).
    """

    columns: int | None = None


DEFAULT_OPTIONS = Options()
"""No options: M symbolic."""
