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
DECIDING = "ir_per_step"  # the measure a counts verdict is decided on: callgrind's instructions
# on CUDA, ncu's warp instructions executed of one step's kernels (lab.profiling.ncu_counts);
# DRAM bytes and cycles move with the L2's state and the clocks, and are shown beside
GPU_DECIDING = "inst_per_step"
# what else must match for two counts to compare: the counter, and the code paths counted
# (the counts pass's kernel ISA, lab.profiling.counts_pass.ISA_ENV)
SAME = ("tool", "isa_env")


def deciding(counts: dict) -> str:
    return GPU_DECIDING if counts.get("tool") == "ncu" else DECIDING


def counts_of(cell: dict) -> dict | None:
    counts = cell.get("counts") or {}
    return counts if counts.get("status") == "ok" and counts.get(deciding(counts)) else None


def comparable(b: dict, c: dict) -> bool:
    """Counts of the same counter over the same code paths: a pass of the host's AVX2 kernels
    against one of SSE4.2 kernels differs by the code path, not the change."""
    return all(b.get(k) == c.get(k) for k in SAME)


def _ratio(b: dict, c: dict, key: str) -> float | None:
    return c[key] / b[key] if b.get(key) and c.get(key) else None


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
    if b is None or c is None or not comparable(b, c):
        return row
    limit = COUNTS_THRESHOLD if threshold is None else threshold
    ratio = _ratio(b, c, deciding(b))
    return replace(row, verdict=decision(ratio, limit), decided_by="counts",
                   wall_verdict=row.label, counts_ratio=ratio,
                   cycles_ratio=_ratio(b, c, "cycles_per_step"),
                   dram_ratio=_ratio(b, c, "dram_bytes_per_step"),
                   counts_tool=b.get("tool") or "callgrind", counts_threshold=limit)


def note(row) -> str:
    """What decided a counts row, with the wall-time verdict beside it."""
    gpu = row.counts_tool == "ncu"
    cycles = "" if row.cycles_ratio is None else \
        f", {'kernel' if gpu else 'est.'} cycles {row.cycles_ratio:.4f}x"
    dram = "" if row.dram_ratio is None else f", DRAM bytes {row.dram_ratio:.4f}x"
    agree = "" if row.wall_verdict == row.verdict else " (counts decide)"
    what = "GPU instructions/step (ncu)" if gpu else "instructions/step"
    return (f"counts: {what} {row.counts_ratio:.4f}x{cycles}{dram}, threshold "
            f"{row.counts_threshold:.2%}; wall time: {row.wall_verdict}{agree}")
