"""The SINGD example (examples/digits_singd.py): SINGD on tnconv takes singd's own steps on the digits CNN and
reaches a lower loss than plain SGD in the same number of steps."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_singd.py"


def load_example():
    spec = importlib.util.spec_from_file_location("digits_singd", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_singd_on_tnconv_takes_singds_steps_and_beats_sgd():
    example = load_example()
    steps = 40  # SINGD's preconditioner warms up over the first 15-20 steps
    tnconv, sgd = example.train("tnconv", steps=steps), example.train("sgd", steps=steps)
    singd = example.train("singd", steps=10)
    assert len(tnconv) == len(sgd) == steps and len(singd) == 10
    assert all(math.isfinite(loss) for loss in tnconv + sgd)
    assert all(math.isclose(ours, theirs, rel_tol=1e-5) for ours, theirs in zip(tnconv, singd))
    assert tnconv[-1] < 0.75 * sgd[-1]
