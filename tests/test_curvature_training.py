"""The training example (examples/digits_kfac.py): KFAC-preconditioned SGD beats plain SGD on the digits."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_kfac.py"


def load_example():
    spec = importlib.util.spec_from_file_location("digits_kfac", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kfac_reaches_a_lower_loss_than_sgd_in_the_same_number_of_steps():
    example = load_example()
    steps = 15
    kfac, sgd = example.train("kfac", steps=steps), example.train("sgd", steps=steps)
    assert len(kfac) == len(sgd) == steps
    assert all(math.isfinite(loss) for loss in kfac + sgd)
    assert kfac[-1] < 0.75 * sgd[-1]
