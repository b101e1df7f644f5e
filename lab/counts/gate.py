"""The gate on counts: when both runs counted a benchmark (`lab run --counts`), its verdict is
decided on instructions per step, and the wall-time verdict is kept beside it.

Why counts decide: callgrind simulates one CPU, so the same code counts the same instructions
whatever the neighbours do; measured on a loaded 2-core machine their spread between processes
is hundreds of times smaller than the wall time's (docs/counts.md). The rule when the two
disagree: counts decide, and the row shows the wall-time verdict beside them, because the wall
time of a shared runner is mostly its neighbours. What counts cannot see, and the wall-time
verdict beside them may: thread scheduling (counts run one thread), memory bandwidth and the
real caches (estimated cycles only model them), I/O and sleeping. The decision is on
instructions (Ir), not estimated cycles: the cycle estimate adds simulated cache misses, which
move with memory layout (docs/counts.md measures both).
"""

from __future__ import annotations

from dataclasses import replace

# Counts within +-COUNTS_THRESHOLD are unchanged, beyond it regressed or improved. Three
# processes of one cell counted the same instructions to the last one on a loaded machine
# (docs/counts.md; the measurement quoted in the issue behind them: 0.14% apart); a real 1%
# more work measured +0.86% (the step's fixed cost does not grow): 0.5% sits between the two.
COUNTS_THRESHOLD = 0.005
DECIDING = "ir_per_step"  # the measure a counts verdict is decided on


def counts_of(cell: dict) -> dict | None:
    counts = cell.get("counts") or {}
    return counts if counts.get("status") == "ok" and counts.get(DECIDING) else None


def decision(ratio: float, threshold: float = COUNTS_THRESHOLD) -> str:
    if ratio > 1 + threshold:
        return "regressed"
    if ratio < 1 / (1 + threshold):
        return "improved"
    return "unchanged"


def decide(row, base_cell: dict, cand_cell: dict, threshold: float | None = None):
    """The gate row decided on counts when both cells have them (the wall-time verdict kept in
    `wall_verdict`); the row unchanged otherwise."""
    b, c = counts_of(base_cell), counts_of(cand_cell)
    if b is None or c is None:
        return row
    limit = COUNTS_THRESHOLD if threshold is None else threshold
    ratio = c[DECIDING] / b[DECIDING]
    cycles = (c["cycles_per_step"] / b["cycles_per_step"]
              if b.get("cycles_per_step") and c.get("cycles_per_step") else None)
    return replace(row, verdict=decision(ratio, limit), decided_by="counts",
                   wall_verdict=row.label, counts_ratio=ratio, cycles_ratio=cycles,
                   counts_threshold=limit)


def note(row) -> str:
    """What decided a counts row, with the wall-time verdict beside it."""
    cycles = "" if row.cycles_ratio is None else f", est. cycles {row.cycles_ratio:.4f}x"
    agree = "" if row.wall_verdict == row.verdict else " (counts decide)"
    return (f"counts: instructions/step {row.counts_ratio:.4f}x{cycles}, threshold "
            f"{row.counts_threshold:.2%}; wall time: {row.wall_verdict}{agree}")
