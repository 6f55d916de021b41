"""The torch backend as a ``tnconv.backends.protocol.Backend``: its planner target and its runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from tnconv.backends.protocol import Owner
from tnconv.backends.torch import constants
from tnconv.backends.torch.runner import Runner
from tnconv.backends.torch.target import TARGET
from tnconv.ir.tensors import Kind
from tnconv.lower.nodes import Plan
from tnconv.lower.target import Target


@dataclass(frozen=True)
class TorchBackend:
    """Runs plans on torch tensors: native kernels, pattern-pair Grams and einsum plans (``Runner``)."""

    target: Target = TARGET

    def runner(self, owner: Owner, plan: Plan) -> Runner:
        return Runner(owner, plan)

    def dense(self, kind: Kind, shape: Sequence[int], dtype: Any, device: Any) -> torch.Tensor:
        return constants.dense(kind, shape, dtype or torch.get_default_dtype(), torch.device(device or "cpu"))


BACKEND = TorchBackend()
