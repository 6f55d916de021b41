"""The tensor-network IR: networks (and sums of them), tensor kinds, sizes, views and the verifier."""

from tnconv.ir.network import Network, Tensor
from tnconv.ir.networksum import NetworkSum
from tnconv.ir.tensors import Data, Identity, IndexPattern, Kind, Ones, PatternSum
from tnconv.ir.verify import InvariantError, verify

__all__ = ["Network", "NetworkSum", "Tensor", "Kind", "Data", "Identity", "Ones", "IndexPattern", "PatternSum", "verify", "InvariantError"]
