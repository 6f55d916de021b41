"""The training examples: KFAC-preconditioned SGD (examples/digits_kfac.py) and SINGD on tnconv
(examples/digits_singd.py) beat plain SGD on the digits."""

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


def test_singd_on_tnconv_takes_singds_steps_and_beats_sgd():
    example = load_example("digits_singd")
    steps = 40  # SINGD's preconditioner warms up over the first 15-20 steps
    tnconv, sgd = example.train("tnconv", steps=steps), example.train("sgd", steps=steps)
    singd = example.train("singd", steps=10)
    assert len(tnconv) == len(sgd) == steps and len(singd) == 10
    assert all(math.isfinite(loss) for loss in tnconv + sgd)
    assert all(math.isclose(ours, theirs, rel_tol=1e-5) for ours, theirs in zip(tnconv, singd))
    assert tnconv[-1] < 0.75 * sgd[-1]
