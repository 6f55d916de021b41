"""Names on the command line: routines and built-in layers, in either spelling, with a hint for a typo.

Light on purpose (no torch, no sympy): ``tnconv --help`` and every argument
error are answered from this module, ``tnconv.cli.layers`` and argparse alone.
"""

from __future__ import annotations

import difflib
from typing import Iterable

# command-line routine name -> conv_network op
ROUTINES = {
    "forward": "forward",
    "input-vjp": "input_vjp",
    "weight-vjp": "weight_vjp",
    "unfold": "unfold",
    "unfold-transpose": "unfold_transpose",
    "transpose-forward": "transpose_forward",
    "kfac-expand": "kfac_expand",
    "kfac-reduce": "kfac_reduce",
    "per-sample-grad": "per_sample_grad",
    "diag-ggn": "diag_ggn",
}


def hint(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``name`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def routine_name(name: str) -> str:
    """The command-line routine ``name`` (``kfac-reduce`` or ``kfac_reduce``) in its hyphen spelling.

    ValueError names the argument, the value and the closest routine.
    """
    canonical = name.replace("_", "-")
    if canonical not in ROUTINES:
        raise ValueError(
            f"ROUTINE: unknown routine {name!r}{hint(canonical, ROUTINES)} (choose from {', '.join(ROUTINES)})"
        )
    return canonical
