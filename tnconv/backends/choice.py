"""Which backend runs a call: the one of its operands' kind, as opt_einsum's backend dispatch chooses.

An operand's backend is the package its type comes from (``torch.Tensor`` and its
subclasses: ``torch``; ``numpy.ndarray``: ``numpy``), read off the type's module as
``opt_einsum.backends.dispatch.infer_backend`` does. Each backend is imported
when first chosen, so that planning and numpy runs never import torch.
"""

from __future__ import annotations

from tnconv.backends.protocol import Backend

BACKENDS = ("torch", "numpy")
"""The backends tnconv has, by the name of the array package each runs on."""


def backend_named(name: str) -> Backend:
    """The backend of the array package ``name`` (one of ``BACKENDS``); ValueError for another name."""
    if name == "torch":
        from tnconv.backends.torch.backend import BACKEND as torch_backend

        return torch_backend
    if name == "numpy":
        from tnconv.backends.numpy.backend import BACKEND as numpy_backend

        return numpy_backend
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def array_package(operand: object) -> str:
    """The package ``operand``'s type comes from (``"torch"``, ``"numpy"``, ...)."""
    return type(operand).__module__.partition(".")[0]


def backend_of(name: str, operand: object) -> Backend:
    """The backend that runs on ``operand`` (the operand called ``name``); TypeError, naming it, for an operand of
    no backend's kind."""
    package = array_package(operand)
    if package not in BACKENDS:
        raise TypeError(
            f"operand {name!r} must be a torch.Tensor or a numpy.ndarray, got {type(operand).__name__}"
        )
    return backend_named(package)
