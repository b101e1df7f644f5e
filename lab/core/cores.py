"""The cores this process may use: the one answer that the default thread count, the --threads
check, the fingerprint, the machine-load reading and JAX's thread pool all take."""

from __future__ import annotations

import os


def usable_cores() -> list[int]:
    """The CPUs this process may run on: its affinity where the OS has one (a container or
    `taskset` may allow fewer than the machine has), else every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))
