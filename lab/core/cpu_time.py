"""CPU seconds spent by the lab's own processes, including those `getrusage` cannot see.

`getrusage(RUSAGE_CHILDREN)` counts a child only once it has been waited for, and its own
children only if it waited for them. Two kinds of the lab's work escape it:
- a fork server (lab.cell.fork) lives across cells and is waited for only when it closes; the
  cell processes it forks are its children, not this process's. Its CPU, with that of the
  cells it has reaped, is read from /proc/PID/stat (utime + stime + cutime + cstime).
- a cell process exits without teardown, so the helpers it started (Inductor's compile
  workers and the compilers they ran) outlive it and are killed by their process group, never
  waited for by anyone. Their CPU is read just before the group is killed.
Without these, a cell's own work was counted as other load and every cell on an idle 2-core
machine was flagged busy (lab.running.machine_load). Linux only: elsewhere /proc is absent and
only getrusage counts. Knows no framework.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_helpers: set[int] = set()  # long-lived children (fork servers) whose CPU is the lab's
_leftovers_s = 0.0  # CPU of killed process groups' leftovers, counted before the kill


def _stat(pid: int | str) -> tuple[int, float] | None:
    """(process group, CPU seconds of the process and the children it reaped) of one process;
    None when it is gone or /proc is not there."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces: the fields start after its ")"
    fields = text[text.rfind(")") + 2:].split()
    # fields[0] is the state (stat field 3): pgrp is field 5, utime..cstime fields 14-17
    utime, stime, cutime, cstime = map(int, fields[11:15])
    return int(fields[2]), (utime + stime + cutime + cstime) / _CLK_TCK


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of the live processes of process group `pgid` (with the children they
    reaped), less its leader: the leader's parent waits for it and counts it."""
    total = 0.0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        found = _stat(entry.name)
        if found is not None and found[0] == pgid:
            total += found[1]
    return total


def count_group_leftovers(pgid: int) -> None:
    """Before killing what is left of a cell's process group: add its CPU to the lab's own."""
    global _leftovers_s
    _leftovers_s += group_cpu_seconds(pgid)


def add_helper(pid: int) -> None:
    _helpers.add(pid)


def remove_helper(pid: int) -> None:
    """After the helper has been waited for (its CPU is then in RUSAGE_CHILDREN)."""
    _helpers.discard(pid)


def own_seconds() -> float:
    """CPU seconds of this process, its waited-for children, its live helpers and the
    leftovers it killed: monotonic, so the difference of two readings is the lab's work."""
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (self_usage.ru_utime + self_usage.ru_stime + children.ru_utime + children.ru_stime
             + _leftovers_s)
    for pid in list(_helpers):
        found = _stat(pid)
        if found is not None:
            total += found[1]
    return total
