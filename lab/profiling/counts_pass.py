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

# Counted steps. Each is dumped by itself (lab.counts.inner), so a count per step does not
# depend on how many were counted; the steps after the first call and one warm-up step count the
# same instructions to the last one (docs/counts.md, "Per step"), so three show that spread in
# every pass (`ir_step_spread`) at little cost: a transformer block's step under callgrind takes
# seconds, the torch import around it a minute.
DEFAULT_STEPS = 3
COUNTS_THREADS = 1  # one thread: the count of a thread pool's work depends on its scheduling
# The code paths the counts pass runs: SSE4.2 kernels in MKL, oneDNN and ATen, not the
# AVX2/AVX-512 ones the timed pass runs. Valgrind has no AVX-512 and runs AVX2's fused
# multiply-adds through a helper call per instruction: measured on the transformer block, a
# step took 146 s under valgrind with the host's kernels, 2.1-3.9 s with these (docs/counts.md,
# "Cost"). The counts are then those of the SSE4.2 build of the same model: steady, and they
# move with its work; a change that only touches the AVX2 kernels is not in them.
ISA_ENV = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"}
# set and dict orders fixed: the same code path each time
COUNTS_ENV = {"PYTHONHASHSEED": "0", **ISA_ENV}


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


def count_cell(spec, timeout_s: float, steps: int | None = None, cycles: bool = False) -> dict:
    """One counts pass of the cell `spec`; returns its counts entry. Failures are stored in the
    entry (status, reason), never raised: the timed result stands without counts. `cycles`:
    also the cycle estimate (callgrind's cache simulation, several times slower)."""
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
             "steps": steps, "cycle_formula": tool.CYCLE_FORMULA, "isa_env": ISA_ENV,
             "cache_sim": cycles}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lab-counts-") as out:
        result, _ = run_cell_process(cspec, timeout_s, env_extra=COUNTS_ENV,
                                     wrapper=tuple(tool.command(exe, Path(out), cycles)))
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        if not result.ok or not result.counts:
            return {**entry, "status": str(result.status),
                    "reason": result.reason or "the counts pass gave no counts"}
        try:
            steps_events = tool.find_dumps(Path(out), result.counts["dumps"])
        except tool.CountsError as exc:
            return {**entry, "status": "run_error", "reason": str(exc)}
    # where the pass's time went (seconds): in the cell's phases and around the counted steps
    entry["phases_s"] = {**result.phases_s, **result.counts.get("seconds", {})}
    return {**entry, "status": "ok", "reason": None, **tool.steps_counts(steps_events)}


def count_recorded_cells(recorder, console, timeout_s: float,
                         steps: int | None = None, cycles: bool = False) -> None:
    """`lab run --counts`: a counts pass for every measured CPU cell of the run, after the
    timed passes, stored in each cell's extra_info["counts"] (saved after each cell)."""
    for outcome, _workload in recorder.outcomes:
        if outcome.status != "ok" or outcome.spec.device != "cpu":
            continue
        title = f"{outcome.spec.workload} {outcome.spec.mode} {outcome.label}"
        console.print(f"counting {title} under callgrind")
        entry = count_cell(outcome.spec, timeout_s, steps, cycles)
        outcome.extra["counts"] = entry
        recorder.save()
        if entry["status"] == "ok":
            est = ("" if entry["cycles_per_step"] is None
                   else f", {entry['cycles_per_step']:,.0f} est. cycles/step")
            console.print(f"  {entry['ir_per_step']:,.0f} instructions/step{est} "
                          f"({entry['steps']} steps, {entry['wall_s']:.0f} s)")
        else:
            console.print(f"  no counts: {entry['reason']}")
