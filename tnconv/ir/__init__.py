"""The tensor-network IR: networks, tensor kinds, sizes, views and the verifier."""

from tnconv.ir.network import Network, Tensor
from tnconv.ir.tensors import Data, Identity, IndexPattern, Kind, Ones, PatternSum
from tnconv.ir.verify import InvariantError, verify

__all__ = ["Network", "Tensor", "Kind", "Data", "Identity", "Ones", "IndexPattern", "PatternSum", "verify", "InvariantError"]
