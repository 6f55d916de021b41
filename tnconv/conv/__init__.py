"""Convolutions as tensor networks: hyper-parameters (``hyper``), a routine's options (``options``), index
patterns (``index_pattern``), routine builders (``networks``) and derivation passes (``derived``).

``ConvHyper`` and ``conv_hyper`` are loaded on first use, so that importing a light module of this
package (``tnconv.conv.options``, which the routine table imports) loads no sympy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ConvHyper", "conv_hyper"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'tnconv.conv' has no attribute {name!r}")
    return getattr(importlib.import_module("tnconv.conv.hyper"), name)
