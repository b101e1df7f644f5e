"""Is the machine busy with other work while a cell is measured?

Read at a cell's start and end (no thread): the CPU time the cores this process may use spent
busy (/proc/stat), and the CPU time of the lab's own processes: this one, the cell processes,
the fork servers they are forked from and the helpers they leave behind (lab.core.cpu_time).
What the cores did beyond the lab's own work is other load; with a
multi-threaded step on every core, a neighbour using even part of a core makes threads wait
for each other, and a concurrent run made one cell 80x slower. A cell during which other work
averaged more than `BUSY_CORES` cores is marked `machine_busy`. Linux only; elsewhere the
sample is None and nothing is claimed. Knows no framework.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from lab.core import cpu_time
from lab.core.cores import usable_cores

# Other work, in cores, above which a cell's timings are suspect: half a core on a 2-core
# machine is a quarter of its capacity; on larger machines a quarter of the usable cores.
BUSY_CORES_MIN = 0.5
BUSY_SHARE = 0.25


def busy_threshold(cores: int) -> float:
    return max(BUSY_CORES_MIN, BUSY_SHARE * cores)


def _busy_seconds(cores: list[int]) -> float | None:
    """Busy CPU seconds since boot, summed over `cores` (user+nice+system+irq+softirq+steal;
    iowait and idle are not work)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    wanted = {f"cpu{c}" for c in cores}
    total = 0
    found = False
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, parts[1:9])
            total += user + nice + system + irq + softirq + steal
            found = True
    return total / hz if found else None


@dataclass(frozen=True)
class Mark:
    wall: float
    busy_s: float | None
    own_s: float  # the lab's processes (lab.core.cpu_time.own_seconds)


def mark() -> Mark:
    return Mark(time.monotonic(), _busy_seconds(usable_cores()), cpu_time.own_seconds())


def between(start: Mark, end: Mark | None = None) -> dict | None:
    """What the usable cores did from `start` to `end` (default: now), as extra_info fields:
    `other_load_cores` (average cores of work that was not the lab's), `machine_busy` and the
    threshold that decided it; None when /proc/stat cannot be read or no time passed."""
    end = end or mark()
    wall = end.wall - start.wall
    if start.busy_s is None or end.busy_s is None or wall <= 0:
        return None
    cores = len(usable_cores())
    other = max((end.busy_s - start.busy_s) - (end.own_s - start.own_s), 0.0) / wall
    threshold = busy_threshold(cores)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"machine_busy": other > threshold, "other_load_cores": round(other, 2),
            "busy_threshold_cores": threshold, "usable_cores": cores,
            "load_avg_1m_at_end": None if load is None else round(load, 2)}
