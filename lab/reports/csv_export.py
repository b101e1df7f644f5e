"""A run's cells as CSV: one row per cell, measured or not, with the lab's own fields.

`pytest-benchmark compare --csv` sees only pytest-benchmark's timing columns; the numbers that
decide a claim (the speedup and its interval, compile seconds, break-even, status) live in each
benchmark's `extra_info`. This writes them flat, for spreadsheets, pandas and CI artefacts.

Conventions: times in seconds (the column names say `_s`); an empty field is "not applicable
or not measured"; a break-even of `inf` means the compiled side was not faster, so its compile
never pays back (`never` in the table); booleans are `true`/`false`; the shape is
`batch=4;seq=128` (semicolons, so the field needs no quoting). The break-even's interval
(`break_even_cold_ci95_*`) is the one the table prints: `inf` as its upper end where the
speedup's interval reaches 1x (the table's `undetermined`), both ends `inf` for `never`.
`status_flags` are the words the table adds to an `ok` (noisy, busy, ...), `; `-separated.
Each row is built by `lab.reports.rows`, as the terminal, markdown and HTML tables are.

A run of suite models also has a suite summary (lab.judge.scorecard): `suites_csv` writes its
rows, one per suite, size, mode, device, precision and backend, as a CSV of their own (a
second table in the cells' file would break every reader that takes a file as one table).
"""

from __future__ import annotations

import csv
import io

from lab.reports import rows
from lab.store import reader as results

COLUMNS = (
    "run_id", "name", "workload", "backend", "framework", "mode", "device", "precision", "dtype",
    "shape",
    "threads", "status", "reason", "samples", "processes", "median_s", "median_ci95_lo_s",
    "median_ci95_hi_s", "iqr_s", "p20_s", "p80_s", "noisy", "baseline_backend",
    "baseline_median_s", "speedup", "speedup_ci95_lo", "speedup_ci95_hi", "speedup_p_value",
    "speedup_min_detectable", "compile_s_cold", "compile_s_warm", "break_even_steps_cold",
    "break_even_steps_warm", "throughput", "throughput_ci95_lo", "throughput_ci95_hi",
    "throughput_unit", "graph_count", "graph_breaks", "recompiles", "accuracy_passed",
    "accuracy_method", "timer", "cold_l2", "cuda_graphs", "cell_wall_s", "machine_busy",
    "latency", "p50_ms", "p90_ms", "p99_ms", "baseline_p50_ms", "baseline_p90_ms",
    "baseline_p99_ms", "step_peak_mib", "baseline_step_peak_mib", "memory_ratio",
    "first_call_peak_mib", "status_flags", "other_load_cores", "break_even_cold_ci95_lo",
    "break_even_cold_ci95_hi", "cycle_graphs", "cycle_recompiles",
)


def _cells(doc: dict) -> list[tuple[str, dict, int]]:
    """(name, lab fields, number of samples) for every cell, in the run's planned order, as
    the one reader of stored runs gives them."""
    return [(cell["name"], cell, len(cell.get("samples_s") or [])) for cell in results.cells(doc)]


def _field(value) -> str | float | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _pair(value, i: int):
    return value[i] if isinstance(value, list | tuple) and len(value) == 2 else None


def _break_even(info: dict, which: str):
    """The stored steps; inf where a compile was timed and the compiled side was not faster."""
    steps = info.get(f"break_even_steps_{which}")
    if steps is not None:
        return steps
    timed = info.get("status") == "ok" and info.get(f"compile_s_{which}") is not None \
        and info.get("speedup") is not None
    return float("inf") if timed else None


def _latency_fields(info: dict) -> dict:
    """p50/p90/p99 per call (--latency cells), the backend's and its eager's."""
    out = {}
    for prefix, key in (("", "latency_ms"), ("baseline_", "baseline_latency_ms")):
        tails = info.get(key) or {}
        for q in ("p50", "p90", "p99"):
            out[f"{prefix}{q}_ms"] = (tails.get(q) or [None])[0]
    return out


def _memory_fields(info: dict) -> dict:
    memory = info.get("memory") or {}
    return {"step_peak_mib": memory.get("step_peak_above_resident_mib"),
            "baseline_step_peak_mib": memory.get("baseline_step_peak_above_resident_mib"),
            "memory_ratio": memory.get("ratio_eager_over_candidate"),
            "first_call_peak_mib": memory.get("first_call_peak_above_start_mib")}


def _break_even_interval(row: rows.Row) -> tuple:
    even = row.break_even
    if even.state == "never":
        return float("inf"), float("inf")
    return even.lo, even.hi


def cell_row(run_id: str, name: str, info: dict, samples: int) -> dict:
    row = rows.build({**info, "name": name})
    shape = info.get("shape")
    diagnostics = info.get("diagnostics") or {}
    accuracy = info.get("accuracy") or {}
    fields = {
        "run_id": run_id, "name": name,
        "shape": ";".join(f"{k}={v}" for k, v in shape.items()) if isinstance(shape, dict)
        else shape,
        "status": info.get("status") or ("ok" if samples else None),
        "samples": samples,
        "median_ci95_lo_s": _pair(info.get("median_ci95_s"), 0),
        "median_ci95_hi_s": _pair(info.get("median_ci95_s"), 1),
        "speedup_ci95_lo": _pair(info.get("speedup_ci95"), 0),
        "speedup_ci95_hi": _pair(info.get("speedup_ci95"), 1),
        "throughput_ci95_lo": _pair(info.get("throughput_ci95"), 0),
        "throughput_ci95_hi": _pair(info.get("throughput_ci95"), 1),
        "break_even_steps_cold": _break_even(info, "cold"),
        "break_even_steps_warm": _break_even(info, "warm"),
        "graph_count": diagnostics.get("graph_count"),
        "graph_breaks": diagnostics.get("graph_breaks"),
        "recompiles": diagnostics.get("recompiles"),
        "accuracy_passed": accuracy.get("passed"),
        "accuracy_method": accuracy.get("method"),
        **_latency_fields(info), **_memory_fields(info),
        "status_flags": "; ".join(row.flags),
        "break_even_cold_ci95_lo": _break_even_interval(row)[0],
        "break_even_cold_ci95_hi": _break_even_interval(row)[1],
        "cycle_graphs": row.graphs, "cycle_recompiles": row.recompiles,
    }
    for column in COLUMNS:
        if column not in fields:
            fields[column] = info.get(column)
    return {column: _field(fields[column]) for column in COLUMNS}


def cells_csv(doc: dict) -> str:
    """Every cell of a stored run (a loaded results.json) as CSV text with a header row."""
    run_id = str((doc.get("lab") or {}).get("run_id") or "")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, info, samples in _cells(doc):
        writer.writerow(cell_row(run_id, name, info, samples))
    return out.getvalue()


SUITE_COLUMNS = (
    "run_id", "suite", "size", "mode", "device", "precision", "backend", "models", "ok",
    "pass_rate", "statuses", "failed_models", "busy_models", "speedup_models",
    "speedup_geomean", "speedup_geomean_ci95_lo", "speedup_geomean_ci95_hi", "faster_share",
    "compile_s_mean", "compile_s_max", "memory_compression_geomean",
    "memory_compression_models", "graph_breaks_per_model", "recompiles_per_model",
    "models_with_graph_breaks",
)


def _pairs(mapping: dict | None) -> str | None:
    """{a: 1, b: 2} as `a=1; b=2` (one field, no quoting needed); None when absent."""
    return None if mapping is None else "; ".join(f"{k}={v}" for k, v in mapping.items())


def suite_rows(doc: dict) -> list[dict]:
    """The suite summary of a stored run as CSV rows (SUITE_COLUMNS); [] without suite models.
    A row of eager backends has no speedup: its speedup columns are empty."""
    from lab.judge import scorecard

    run_id = str((doc.get("lab") or {}).get("run_id") or "")
    out = []
    for row in scorecard.summarize(results.cells(doc)):
        fields = {**row, "run_id": run_id, "statuses": _pairs(row.get("statuses")),
                  "failed_models": _pairs(row.get("failed_models")),
                  "speedup_geomean_ci95_lo": _pair(row.get("speedup_geomean_ci95"), 0),
                  "speedup_geomean_ci95_hi": _pair(row.get("speedup_geomean_ci95"), 1)}
        out.append({column: _field(fields.get(column)) for column in SUITE_COLUMNS})
    return out


def suites_csv(doc: dict) -> str:
    """The suite summary of a stored run as CSV text with a header row (only the header when
    the run holds no suite model)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SUITE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(suite_rows(doc))
    return out.getvalue()
