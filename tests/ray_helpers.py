"""A user workload for the Ray executor's tests (`tests/ray_helpers.py:held_model`): a tiny
linear model whose factory, inside the cell process, says that it started and then waits while
a hold file exists, so a test can kill the cell's worker or node, or press Ctrl-C, while the
cell process is alive. The folder comes from LAB_TEST_HOLD_DIR, which the cell process
inherits from the Ray worker (the test sets it before the cluster starts)."""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_DIR_VAR = "LAB_TEST_HOLD_DIR"
HOLD_LIMIT_S = 120  # never hold a cell longer than this, whatever a test forgot


def held_model():
    import torch

    folder = Path(os.environ[HOLD_DIR_VAR])
    (folder / f"started-{os.getpid()}").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while (folder / "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    torch.manual_seed(0)
    return torch.nn.Linear(8, 8), torch.randn(4, 8)
