"""lab.reports.csv_export: a run's cells as CSV, read back and checked against the stored
results."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from lab.reports.csv_export import COLUMNS, cells_csv
from lab.store import identity

ROOT = Path(__file__).resolve().parent.parent
RUNS = sorted((ROOT / "profiles/amd-epyc-2c").glob("*/results.json"))
CPU_RUN = ROOT / "profiles/amd-epyc-2c/20261124-212813-cpu/results.json"


def _read(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def test_every_measured_cell_reads_back_with_its_numbers():
    doc = json.loads(CPU_RUN.read_text())
    rows = _read(cells_csv(doc))
    assert list(rows[0]) == list(COLUMNS)
    # names are read in today's form (lab.store.identity): the stored run says float32
    assert [r["name"] for r in rows] == [identity.canonical(n) for n in doc["lab"]["order"]]
    by_name = {r["name"]: r for r in rows}
    for bench in doc["benchmarks"]:
        info, row = bench["extra_info"], by_name[identity.canonical(bench["name"])]
        assert row["run_id"] == doc["lab"]["run_id"]
        assert (row["workload"], row["backend"], row["mode"], row["device"], row["dtype"]) == (
            info["workload"], info["backend"], info["mode"], info["device"], info["dtype"])
        assert row["shape"] == ";".join(f"{k}={v}" for k, v in info["shape"].items())
        assert int(row["threads"]) == info["threads"]
        assert int(row["samples"]) == len(bench["stats"]["data"])
        assert row["status"] == "ok" and row["noisy"] == ("true" if info["noisy"] else "false")
        assert _number(row["median_s"]) == info["median_s"]  # full precision, no rounding
        assert [_number(row["median_ci95_lo_s"]), _number(row["median_ci95_hi_s"])] == \
            info["median_ci95_s"]
        assert _number(row["throughput"]) == info["throughput"]
        assert row["throughput_unit"] == info["throughput_unit"]
        if info.get("speedup") is None:  # an eager cell: no speedup, no compile
            assert row["speedup"] == row["compile_s_cold"] == row["break_even_steps_cold"] == ""
            continue
        assert _number(row["speedup"]) == info["speedup"]
        assert [_number(row["speedup_ci95_lo"]), _number(row["speedup_ci95_hi"])] == \
            info["speedup_ci95"]
        assert _number(row["compile_s_cold"]) == info["compile_s_cold"]
        assert _number(row["compile_s_warm"]) == info["compile_s_warm"]
        assert int(row["graph_breaks"]) == info["diagnostics"]["graph_breaks"]
        assert row["accuracy_passed"] == "true"


def test_a_compile_that_never_pays_back_is_inf_and_a_finite_one_is_its_steps():
    doc = json.loads(CPU_RUN.read_text())
    rows = {r["name"]: r for r in _read(cells_csv(doc))}
    seen = set()
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        if info.get("speedup") is None:
            continue
        value = _number(rows[identity.canonical(bench["name"])]["break_even_steps_cold"])
        if info["break_even_steps_cold"] is None:
            assert math.isinf(value)
            seen.add("never")
        else:
            assert value == pytest.approx(info["break_even_steps_cold"])
            seen.add("finite")
    assert seen == {"never", "finite"}  # the stored run has both kinds


def test_cells_without_samples_are_rows_with_status_and_reason():
    doc = json.loads(CPU_RUN.read_text())
    doc["lab"]["unmeasured"] = [
        {"name": "resnet50[jax-jit|train|cpu|float32|batch=4]",
         "extra_info": {"workload": "resnet50", "backend": "jax-jit", "mode": "train",
                        "device": "cpu", "dtype": "float32", "shape": {"batch": 4},
                        "status": "timeout", "reason": "no result after 120 s, \"killed\"",
                        "compile_s_cold": None}}]
    rows = _read(cells_csv(doc))
    assert len(rows) == len(doc["benchmarks"]) + 1
    row = rows[-1]  # not in the run's order: after the planned cells
    assert row["status"] == "timeout"
    assert row["reason"] == "no result after 120 s, \"killed\""  # commas and quotes survive
    assert row["samples"] == "0" and row["median_s"] == row["speedup"] == ""
    assert row["break_even_steps_cold"] == ""  # not timed: not applicable, not "never"


@pytest.mark.parametrize("results", RUNS, ids=lambda p: p.parent.name)
def test_every_stored_run_exports_one_row_per_cell(results):
    doc = json.loads(results.read_text())
    rows = _read(cells_csv(doc))
    assert len(rows) == len(doc["benchmarks"]) + len(doc["lab"]["unmeasured"])
    assert all(r["status"] for r in rows)
    assert len({r["name"] for r in rows}) == len(rows)


def test_latency_tails_and_memory_have_their_columns():
    doc = json.loads(CPU_RUN.read_text())
    info = doc["benchmarks"][1]["extra_info"]
    info["latency_ms"] = {"p50": [1.5, 1.4, 1.6], "p90": [2.0, 1.8, 2.2],
                          "p99": [3.0, 2.5, 4.0], "n": 200}
    info["memory"] = {"step_peak_above_resident_mib": 4.0,
                      "baseline_step_peak_above_resident_mib": 6.0,
                      "ratio_eager_over_candidate": 1.5,
                      "first_call_peak_above_start_mib": 120.0}
    row = _read(cells_csv(doc))[1]
    assert (_number(row["p50_ms"]), _number(row["p99_ms"])) == (1.5, 3.0)
    assert row["baseline_p50_ms"] == ""
    assert (_number(row["step_peak_mib"]), _number(row["memory_ratio"])) == (4.0, 1.5)
    assert _number(row["first_call_peak_mib"]) == 120.0
