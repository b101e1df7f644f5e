"""Counts of a CUDA cell's step from Nsight Compute: per-kernel instructions executed, DRAM
bytes and cycles of the kernels of one measured step, summed into the cell's counts (the GPU
side of lab.counts), so the gate can decide a CUDA benchmark on counts as it does a CPU one.

ncu profiles one step's kernels inside the `sample` ranges (lab.profiling.trace_pass), with
the sections the profile shows and, beside them, the metrics below (`--metrics`). Its raw page
exported as CSV (`ncu --import report.ncu-rep --csv --page raw --print-units base`) has one
header row of column names, one row of units, then one row per profiled kernel; numbers may be
quoted and carry thousands separators, and without `--print-units base` ncu scales units
(Kbyte, Mcycle, usecond): both are read here.

Which measure decides: the warp-level instructions executed (`smsp__inst_executed.sum`). For
the same kernels and the same launch shapes they are the same from run to run, like
callgrind's Ir; DRAM bytes move with what the L2 held before the kernel, and cycles and
durations with clocks and contention: they are kept beside, not decided on.
"""

from __future__ import annotations

import csv
import io
import re

INSTRUCTIONS = "smsp__inst_executed.sum"
DRAM_READ, DRAM_WRITE = "dram__bytes_read.sum", "dram__bytes_write.sum"
CYCLES = "gpc__cycles_elapsed.max"  # the kernel's elapsed cycles (SpeedOfLight's)
DURATION = "gpu__time_duration.sum"
METRICS = (INSTRUCTIONS, DRAM_READ, DRAM_WRITE, CYCLES, DURATION)
KERNEL_COLUMN = "Kernel Name"

# ncu's unit prefixes and time units, to base units (bytes, cycles, instructions, ns)
_PREFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_TIME_NS = {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}
_UNIT = re.compile(r"^([KMGT]?)(byte|cycle|inst|warp|)$")


class NcuCountsError(ValueError):
    """A CSV that is not ncu's raw page, or lacks the metrics counts need (one line)."""


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    if text in ("", "n/a", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _scale(unit: str) -> float:
    unit = unit.strip()
    if unit in _TIME_NS:
        return _TIME_NS[unit]
    match = _UNIT.match(unit)
    if match is None:
        raise NcuCountsError(f"ncu CSV: unit {unit!r} is not one counts know")
    return _PREFIX[match.group(1)]


def parse_raw_csv(text: str) -> list[dict]:
    """One dict per profiled kernel: its name and METRICS in base units (None where the
    report lacks one). NcuCountsError for a CSV that is not ncu's raw page."""
    rows = list(csv.reader(io.StringIO(text)))
    # ncu prints its own lines (==PROF==, warnings) before the table when they go to stdout
    start = next((i for i, r in enumerate(rows) if KERNEL_COLUMN in r), None)
    if start is None or len(rows) < start + 2:
        raise NcuCountsError(f"ncu CSV: no header with {KERNEL_COLUMN!r} and units below it "
                             f"(export with --csv --page raw)")
    header, units = rows[start], rows[start + 1]
    where = {name: header.index(name) for name in METRICS if name in header}
    if INSTRUCTIONS not in where:
        raise NcuCountsError(f"ncu CSV: no {INSTRUCTIONS} column (profile with --metrics "
                             f"{','.join(METRICS)})")
    scale = {name: _scale(units[i] if i < len(units) else "") for name, i in where.items()}
    name_at = header.index(KERNEL_COLUMN)
    kernels = []
    for row in rows[start + 2:]:
        if len(row) < len(header):
            continue  # a trailing blank line
        kernel = {"name": row[name_at]}
        for name in METRICS:
            value = _number(row[where[name]]) if name in where else None
            kernel[name] = None if value is None else value * scale[name]
        kernels.append(kernel)
    if not kernels:
        raise NcuCountsError("ncu CSV: no kernel rows")
    return kernels


def _total(kernels: list[dict], *names: str) -> float | None:
    values = [sum(k[n] for n in names) for k in kernels if all(k[n] is not None for n in names)]
    return sum(values) if len(values) == len(kernels) else None


def counts_entry(kernels: list[dict]) -> dict:
    """The cell's counts from one step's kernels (lab.counts.gate reads `inst_per_step`)."""
    return {"status": "ok", "reason": None, "tool": "ncu", "kernels": len(kernels),
            "inst_per_step": _total(kernels, INSTRUCTIONS),
            "dram_bytes_per_step": _total(kernels, DRAM_READ, DRAM_WRITE),
            "cycles_per_step": _total(kernels, CYCLES),
            "duration_ns_per_step": _total(kernels, DURATION),
            "per_kernel": [{"name": k["name"][:200],
                            **{m: k[m] for m in METRICS}} for k in kernels]}


def counts_from_csv(text: str) -> dict:
    """The counts entry of an exported report; a failed entry (status, reason) when the CSV
    cannot give one: the profile stands without counts."""
    try:
        return counts_entry(parse_raw_csv(text))
    except NcuCountsError as exc:
        return {"status": "run_error", "reason": str(exc), "tool": "ncu"}
