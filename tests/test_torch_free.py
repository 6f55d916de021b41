"""Building, transforming, printing and planning networks needs no torch (issue 12 item 3).

The IR (``tnconv.ir``), the passes, the conv networks and the planner
(``tnconv.lower.plan.plan``, for a backend's ``Target``) are pure Python; only running a plan on
torch tensors (the backend, ``tnconv.backends.torch``) imports torch. A fresh interpreter whose
``import torch`` fails does all of the first.
"""

from __future__ import annotations

from cli_run import python

CODE = """
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import tnconv.ir
from tnconv import Network, conv_network, simplify
from tnconv.lower.nodes import Einsum
from tnconv.lower.plan import plan as plan_for
from tnconv.lower.target import Target

KERNELS = Target("kernels", kernels=True, speeds=None, patch_chunk=1 << 22, views_from=1 << 16)
plan = lambda net: plan_for(net, target=KERNELS)  # a backend with native kernels, as the torch one

chain = Network.from_einsum("ij,jk->ik", "A", "B", sizes={"i": 2, "j": 3, "k": 4})
print(chain)
forward = conv_network("forward", (2, 3, 8, 8), (2, 2), 4, stride=2, simplify=False)
simplified = simplify(forward)
print(simplified)
print("taps" if any("taps" in str(view).lower() for e in simplified.entries
                    for view in getattr(e.kind, "views", ())) else "no taps")
print("native", plan(forward).name, plan(simplified).name)
print("native", plan(conv_network("weight_vjp", (2, 3, 8, 8), (2, 2), 4, stride=2)).name)
kfac = plan(conv_network("kfac_reduce", (2, 3, 8, 8), 3, padding=1))
print("einsum", isinstance(kfac, Einsum), kfac.flops > 0)
print("torch", sorted(name for name in sys.modules if name.split(".")[0] == "torch" and sys.modules[name] is not None))
"""


def test_build_simplify_print_and_plan_without_torch():
    lines = python(CODE).splitlines()
    assert lines[0].startswith("A  data  (i, j)")
    assert "taps" in lines  # simplify read the stride-2 patterns as taps views, without torch
    assert "native conv2d conv2d" in lines  # the planner reads the taps views as patterns: the same kernel
    assert "native conv2d_weight" in lines
    assert "einsum True True" in lines
    assert lines[-1] == "torch []"
