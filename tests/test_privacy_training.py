"""The private training example (examples/digits_private.py): DP-SGD by clip_grads learns the digits, and its
privacy is Opacus's RDP accountant's for the steps it took."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from opacus.accountants import RDPAccountant

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_private.py"


def load_example():
    spec = importlib.util.spec_from_file_location("digits_private", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_private_run_learns_the_digits_at_its_accountants_epsilon():
    example = load_example()
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
