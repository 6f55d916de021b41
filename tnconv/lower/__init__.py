"""The planner: concrete networks -> plans (plain data, ``tnconv.lower.plan``) -> programs a backend runs.

Nothing here imports torch: ``tnconv.lower.plan.plan(net)`` plans a network
without it; making a concrete ``Program`` (``tnconv.compile``) imports the torch
backend (``tnconv.backends.torch``) to run the plan.
"""

from tnconv.lower.compile import compile
from tnconv.lower.program import Program

__all__ = ["compile", "Program"]
