"""The private training example (examples/digits_private.py): DP-SGD by clip_grads learns the digits, and its
privacy is Opacus's RDP accountant's for the steps it took."""

from __future__ import annotations

import torch
from opacus.accountants import RDPAccountant
from support.examples import load_example


def test_a_short_private_run_learns_the_digits_at_its_accountants_epsilon():
    example = load_example("digits_private")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of tiny tensors: a second thread only waits (4x slower on a loaded machine)
    try:
        result = example.train(epochs=2)
    finally:
        torch.set_num_threads(threads)
    assert result.accuracy > 0.45  # 10 classes: chance is 0.1 (seeds 0, 1, 2: 0.58, 0.53, 0.68)
    accountant = RDPAccountant()
    for _ in range(result.steps):
        accountant.step(noise_multiplier=1.5, sample_rate=64 / 1500)
    assert result.steps == 47 and result.epsilon == accountant.get_epsilon(1e-5) < 1.5
