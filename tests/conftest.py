"""Test configuration: hypothesis profiles (CI runs derandomized so a red run can be replayed), and torch's
threads shared among pytest-xdist's workers (``-n auto`` starts one per core: each worker taking every core
for its tensors would run ``workers x cores`` threads on ``cores`` cores)."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
