"""``tnconv.clear_caches()``: empty every cache tnconv keeps and free the memory its entries hold.

tnconv caches work that repeats: compiled programs (``tnconv.compile``, bounded
by the bytes of their constants, see ``tnconv.programs.cache``) and compiled
sums of networks, the routines of ``tnconv.functional``, simplified networks
(``tnconv.simplify``), proofs over symbolic sizes, and the networks of conv
routines (``conv_network`` and the curvature routines). Each cache is bounded;
clearing them all at once frees their memory now, e.g. between experiments or
before measuring memory.
They refill on use, so clearing never changes a result.
"""

from __future__ import annotations

import sys

# (module, function name): caches whose module has been imported; a module never imported holds nothing
_LRU_CACHES = (
    ("tnconv.programs.sum", "compile_sum"),
    ("tnconv.passes.simplify", "_cached"),
    ("tnconv.conv.networks", "build"),
    ("tnconv.routines.derivation", "routine_network"),
    ("tnconv.routines.run", "setup"),
    ("tnconv.conv.hyper_cache", "_validated"),
    ("tnconv.curvature.patches", "input_gram_plan"),
    ("tnconv.ir.sizes", "_proven"),
    ("tnconv.ir.sizes", "_is_le"),
    ("tnconv.ir.sizes", "_equal"),
)


def clear_caches() -> None:
    """Empty tnconv's caches: programs (their structured constants are released), routines, networks.

    Programs that callers still hold keep working: they rebuild their constants
    on their next call.
    """
    from tnconv.programs.cache import PROGRAMS

    for module_name, function_name in _LRU_CACHES:
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, function_name).cache_clear()
    functional = sys.modules.get("tnconv.functional")
    if functional is not None:
        functional.clear_cache()
    PROGRAMS.clear()
