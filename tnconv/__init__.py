"""tnconv: convolutions as tensor-network diagrams, transformed by passes and compiled to einsums.

Public names are imported on first use, so that ``import tnconv`` stays fast
and optional parts (drawing) load only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from tnconv.namespace import public_dir

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None means the module itself
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "Network": ("tnconv.ir.network", "Network"),
    "Tensor": ("tnconv.ir.network", "Tensor"),
    "Data": ("tnconv.ir.tensors", "Data"),
    "Identity": ("tnconv.ir.tensors", "Identity"),
    "Ones": ("tnconv.ir.tensors", "Ones"),
    "IndexPattern": ("tnconv.ir.tensors", "IndexPattern"),
    "PatternSum": ("tnconv.ir.tensors", "PatternSum"),
    "verify": ("tnconv.ir.verify", "verify"),
    "InvariantError": ("tnconv.ir.verify", "InvariantError"),
    "compile": ("tnconv.programs.compile", "compile"),
    "einsum": ("tnconv.contract", "einsum"),
    "Program": ("tnconv.programs.program", "Program"),
    "clear_caches": ("tnconv.caches", "clear_caches"),
    "set_allocation_limit": ("tnconv.limits", "set_allocation_limit"),
    "allocation_limit": ("tnconv.limits", "allocation_limit"),
    "index_pattern": ("tnconv.conv.index_pattern", "index_pattern"),
    "conv_network": ("tnconv.routines.derivation", "conv_network"),
    "differentiate": ("tnconv.passes.differentiate", "differentiate"),
    "vmap": ("tnconv.passes.vmap", "vmap"),
    "fuse": ("tnconv.passes.fuse", "fuse"),
    "simplify": ("tnconv.passes.simplify", "simplify"),
    "NetworkSum": ("tnconv.ir.networksum", "NetworkSum"),
    "draw": ("tnconv.render.draw", "draw"),
    "functional": ("tnconv.functional", None),
    "F": ("tnconv.functional", None),
    "nn": ("tnconv.nn", None),
    "curvature": ("tnconv.curvature", None),
    "distributed": ("tnconv.distributed", None),
    "privacy": ("tnconv.privacy", None),
    "models": ("tnconv.models", None),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tnconv' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__dir__ = public_dir(globals(), __all__)
