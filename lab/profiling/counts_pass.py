"""The counts pass of a cell: the cell process again, single-threaded, under callgrind, after
its timed pass and apart from it (valgrind slows what it runs 5-100x: it never touches the
timings). `lab run --counts` runs it for every measured CPU cell and stores the counts in the
cell's extra_info["counts"], like any metric.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lab.counts import tool

# Counted steps, the same for every cell unless asked (--counts-steps): a count per step taken
# over a different number of steps would differ by the fixed cost around them (the loop, the
# dump request: a few thousand instructions), and a number chosen from the timed median would
# change with the machine's load. 16 steps of the seed MLP (~1.1 M instructions each) keep that
# cost under 0.1%, and a transformer's counted steps take tens of seconds under callgrind.
DEFAULT_STEPS = 16
COUNTS_THREADS = 1  # one thread: the count of a thread pool's work depends on its scheduling
COUNTS_ENV = {"PYTHONHASHSEED": "0"}  # set and dict orders fixed: the same code path each time


def unavailable() -> str | None:
    """Why no counts can be taken on this machine, or None."""
    from lab.counts import client

    if tool.valgrind() is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    try:
        client.library_path()
    except client.ClientUnavailable as exc:
        return str(exc)
    return None


def count_cell(spec, timeout_s: float, steps: int | None = None) -> dict:
    """One counts pass of the cell `spec`; returns its counts entry. Failures are stored in the
    entry (status, reason), never raised: the timed result stands without counts."""
    from lab.cell.launch import run_cell_process
    from lab.cell.spec import CellPass
    from lab.counts.client import library_path

    if spec.device != "cpu":
        return {"status": "skipped", "reason": "counts: CPU cells only (valgrind)"}
    why = unavailable()
    if why:
        return {"status": "skipped", "reason": f"counts: {why}"}
    exe = tool.valgrind()
    steps = steps or DEFAULT_STEPS
    cspec = spec.replace(cell_pass=CellPass.COUNTS, threads=COUNTS_THREADS, budget_s=None,
                         extra={**spec.extra, "counts_steps": steps})
    library_path()  # built here, once, not inside valgrind
    entry = {"tool": "callgrind", "valgrind": tool.version(exe), "threads": COUNTS_THREADS,
             "steps": steps, "cycle_formula": tool.CYCLE_FORMULA}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lab-counts-") as out:
        result, _ = run_cell_process(cspec, timeout_s, env_extra=COUNTS_ENV,
                                     wrapper=tuple(tool.command(exe, Path(out))))
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        if not result.ok or not result.counts:
            return {**entry, "status": str(result.status),
                    "reason": result.reason or "the counts pass gave no counts"}
        try:
            events = tool.find_dump(Path(out), result.counts["dump"])
        except tool.CountsError as exc:
            return {**entry, "status": "run_error", "reason": str(exc)}
    return {**entry, "status": "ok", "reason": None,
            **tool.per_step(events, result.counts["steps"])}


def count_recorded_cells(recorder, console, timeout_s: float,
                         steps: int | None = None) -> None:
    """`lab run --counts`: a counts pass for every measured CPU cell of the run, after the
    timed passes, stored in each cell's extra_info["counts"] (saved after each cell)."""
    for outcome, _workload in recorder.outcomes:
        if outcome.status != "ok" or outcome.spec.device != "cpu":
            continue
        title = f"{outcome.spec.workload} {outcome.spec.mode} {outcome.label}"
        console.print(f"counting {title} under callgrind")
        entry = count_cell(outcome.spec, timeout_s, steps)
        outcome.extra["counts"] = entry
        recorder.save()
        if entry["status"] == "ok":
            console.print(f"  {entry['ir_per_step']:,.0f} instructions/step, "
                          f"{entry['cycles_per_step']:,.0f} est. cycles/step "
                          f"({entry['steps']} steps, {entry['wall_s']:.0f} s)")
        else:
            console.print(f"  no counts: {entry['reason']}")
