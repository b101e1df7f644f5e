"""Shared test set-up: the lab's tests run on the CPU, and lab subprocesses import this tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Triton picks its interpreter when a kernel is defined, so the CPU kernel tests need this set
# before any test module imports Triton; cell subprocesses inherit it (Inductor's CPU backend
# does not use Triton). `TRITON_INTERPRET=0 pytest tests/test_kernel_*.py` on a CUDA machine
# runs the same kernel tests compiled on the GPU (tests/kernel_helpers.py picks the device).
os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist's workers get COLUMNS=80 and LINES=24; the lab's tables follow COLUMNS, so the
# `lab` commands the tests run would print a terminal's 80 columns where a piped run prints
# its full width. Each worker sees what a plain pytest process sees.
# Each worker also compiles into caches of its own (Inductor's default is one folder per user
# under /tmp, which both workers would write at once while compiling the same kernels).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    import atexit
    import shutil
    import tempfile

    _caches = tempfile.mkdtemp(prefix=f"lab-tests-{os.environ['PYTEST_XDIST_WORKER']}-")
    atexit.register(shutil.rmtree, _caches, True)  # the worker's caches go with it
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_caches, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(_caches, "triton"))

# Cell subprocesses find `lab` through PYTHONPATH (the runner adds the tree too).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def run_lab(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run the `lab` command as a user would; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def lab_cli():
    return run_lab


# `make test` runs the tests on two pytest-xdist workers (`--dist loadgroup`). Each test file is
# one group, so its module fixtures (a stored run several tests read) are built once and its
# tests run in their order; the files that start Ray clusters share a group: `ray.init()` with
# no address joins the newest local cluster, so two of them on one machine would meet.
RAY_FILES = {"test_ray.py", "test_ray_suite.py", "test_faults_run.py"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the tests' ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in RAY_FILES else name))
