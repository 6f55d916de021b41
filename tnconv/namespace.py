"""What ``dir()`` lists of a public module: its ``__all__`` and its dunders.

Not the names a module imports for its own use (``torch``, ``Sequence``, the
``annotations`` feature of ``from __future__ import annotations``), its private
helpers, nor the submodules of a package (which stay importable by their full
names): a public module ends with ``__dir__ = public_dir(globals(), __all__)``
(PEP 562's module ``__dir__``). Attribute access is unchanged.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping


def public_dir(namespace: Mapping[str, object], public: Iterable[str]) -> Callable[[], list[str]]:
    """The ``__dir__`` of the module whose globals are ``namespace`` and whose public names are ``public``."""
    names = frozenset(public)

    def __dir__() -> list[str]:
        return sorted(names | {name for name in namespace if name.startswith("__") and name.endswith("__")})

    return __dir__
