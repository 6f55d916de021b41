"""The training example (examples/digits_kfac.py): KFAC-preconditioned SGD beats plain SGD on the digits."""

from __future__ import annotations

import math

from support.examples import load_example


def test_kfac_reaches_a_lower_loss_than_sgd_in_the_same_number_of_steps():
    example = load_example("digits_kfac")
    steps = 15
    kfac, sgd = example.train("kfac", steps=steps), example.train("sgd", steps=steps)
    assert len(kfac) == len(sgd) == steps
    assert all(math.isfinite(loss) for loss in kfac + sgd)
    assert kfac[-1] < 0.75 * sgd[-1]
