"""The numpy backend as a ``tnconv.backends.protocol.Backend``: einsum plans only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tnconv.backends.numpy import arrays
from tnconv.backends.numpy.runner import Runner
from tnconv.backends.protocol import Owner
from tnconv.ir.tensors import Kind
from tnconv.lower.nodes import Einsum, Plan, Sliced
from tnconv.lower.target import EINSUM_ONLY, Target


@dataclass(frozen=True)
class NumpyBackend:
    """Runs plans on numpy arrays: einsum and sliced plans (no native kernels, no pattern-pair Gram)."""

    target: Target = EINSUM_ONLY

    def runner(self, owner: Owner, plan: Plan) -> Runner:
        if not isinstance(plan, (Einsum, Sliced)):  # planned for this target: never a kernel
            raise TypeError(f"the numpy backend runs einsum plans, got {type(plan).__name__}")
        return Runner(owner, plan)

    def dense(self, kind: Kind, shape: Sequence[int], dtype: Any, device: Any) -> np.ndarray:
        if device not in (None, "cpu"):
            raise ValueError(f"device must be None or 'cpu' for numpy arrays, got {device!r}")
        return arrays.dense(kind, shape, np.dtype(dtype or np.float64))


BACKEND = NumpyBackend(Target("numpy", kernels=False, speeds=None, patch_chunk=EINSUM_ONLY.patch_chunk, views_from=0))
