"""Profiles beside the results: a traced pass per cell, hot-kernel tables, Nsight wrappers.

Profiling never touches the timing numbers: every cell is traced in its own process, after
(`lab run --profile`) or instead of (`lab profile`) the timed pass. Each cell's artifacts live in
`<run folder>/traces/<cell>/` and are linked from that cell's `extra_info["profile"]`
(paths relative to the run folder):

    traces/<cell>/<backend>/trace.json[.gz]   Chrome trace (Perfetto, chrome://tracing, HTA)
    traces/<cell>/<backend>/hot.csv, hot.json  the hot-kernel table of that trace
    traces/<cell>/inductor/<hash>.py, index.json  Inductor's output code (torch-compile)
    traces/<cell>/xla_dump/*.txt               optimised HLO (jax-jit, tf-xla)
    traces/<cell>/ncu/report.ncu-rep, .csv     Nsight Compute over the measured range (CUDA)
    traces/<cell>/nsys/report.nsys-rep         Nsight Systems timeline (CUDA)
    traces/<cell>/profile.json                 this cell's entry, also in extra_info

The capture half (lab.cell.trace) runs inside the cell process; this module runs in the `lab`
process: it launches the tracing pass, keeps generated code, builds hot tables and wraps the
Nsight tools.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lab.cell.trace import TRACES
from lab.profiling import hotkernels
from lab.store import folders as store

TOOL_TIMEOUT_S = 1800.0
# ncu replays every profiled kernel once per group of metrics: it profiles one measured step
# (the kernels of the step after the first), with these sections only: the roofline position
# (SpeedOfLight), where memory traffic goes, the launch shape and the occupancy it allows.
NCU_SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "LaunchStats", "Occupancy")
NCU_KERNELS_UNKNOWN = 50  # launches profiled when the trace gave no kernels-per-step count
NCU_EXPORT_TIMEOUT_S = 120.0  # the CSV export of one step's kernels takes seconds


# ---------------------------------------------------------------- one cell (in the lab process)

def cell_folder_name(spec, label: str) -> str:
    from lab.cell.spec import benchmark_name

    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", benchmark_name(spec, label)).strip("-")


def _profile_env(framework: str, compiles: bool, device: str, cell_dir: Path) -> dict:
    """Environment of the tracing pass only."""
    env = {}
    if framework == "torch" and device == "cpu":
        # Inductor's C++ kernels then appear in the trace as `cpp_fused_*` ops; without it a
        # compiled graph is one opaque call. It adds a record_function per kernel call, which
        # is why it is on only here and never in the timed pass.
        env["TORCHINDUCTOR_CPP_ENABLE_KERNEL_PROFILE"] = "1"
    if framework in ("jax", "tf") and compiles:
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = (f"{flags} --xla_dump_to={cell_dir / 'xla_dump'} "
                            "--xla_dump_hlo_as_text").strip()
    return env


_KERNEL_DEF = re.compile(r"^(cpp_fused_\w+|triton_\w+) = async_compile\.", re.M)


GENERATED_INDEX = "index.json"  # short name -> the compiler's own file name


def _keep_inductor_code(cache_dir: str, cell_dir: Path) -> list[Path]:
    """Inductor's output code (the module whose `call()` ran) from the pass's fresh cache, kept
    as `inductor/<first 12 hex of its SHA-256>.py`: Inductor's own names are 50-odd characters,
    which under a cell's folder made paths of over 200 (too long for some checkouts). The
    folder's index.json maps each short name back to Inductor's."""
    kept, index = [], {}
    for path in sorted(Path(cache_dir).rglob("*.py")):
        text = path.read_text(errors="replace")
        if "def call(" in text and "async_compile" in text:
            short = hashlib.sha256(text.encode()).hexdigest()[:12] + ".py"
            target = cell_dir / "inductor" / short
            store.atomic_write_text(target, text)
            kept.append(target)
            index[short] = path.name
    if index:
        store.atomic_write_json(cell_dir / "inductor" / GENERATED_INDEX, index)
    return kept


def _keep_hlo(cell_dir: Path, keep: int = 20) -> list[Path]:
    """The optimised HLO of the largest modules (the model's, not the small helpers')."""
    dump = cell_dir / "xla_dump"
    if not dump.is_dir():
        return []
    final = sorted(dump.glob("*after_optimizations.txt"), key=lambda p: p.stat().st_size,
                   reverse=True)[:keep]
    for path in dump.iterdir():
        if path not in final and path.is_file():
            path.unlink()
    return sorted(final)


def profile_cell(spec, label: str, run_dir: Path, timeout_s: float) -> dict:
    """Trace one cell in its own process and store everything; returns its profile entry
    (paths relative to `run_dir`). Failures are recorded in the entry, never raised."""
    from lab.cell.launch import run_cell_process
    from lab.cell.spec import CellPass
    from lab.compile import BACKENDS

    info = BACKENDS[spec.backend]
    framework = info.framework.value
    rel = Path(TRACES) / cell_folder_name(spec, label)
    cell_dir = Path(run_dir) / rel
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    cell_dir.mkdir(parents=True)
    pspec = spec.replace(profile_dir=str(cell_dir.resolve()), cell_pass=CellPass.TRACE)
    entry: dict = {"dir": str(rel), "status": None, "reason": None, "sides": {}}
    with tempfile.TemporaryDirectory(prefix="lab-profile-cache-") as cache:
        result, _wall = run_cell_process(
            pspec, timeout_s, cache if info.compiles else None,
            env_extra=_profile_env(framework, info.compiles, spec.device, cell_dir))
        generated = _keep_inductor_code(cache, cell_dir) if framework == "torch" else []
        generated += _keep_hlo(cell_dir)
        _record_trace_pass(entry, result, cell_dir, run_dir, generated)
        # The Nsight passes reuse the trace pass's compile cache: otherwise each compiles
        # again from cold, under a tool that intercepts every launch of the compiler's own
        # benchmarking as well.
        nsight_cache = cache if info.compiles else None
        entry["ncu"] = run_ncu(pspec, cell_dir, run_dir, timeout_s,
                               kernels_per_step=_candidate_kernels(entry, spec.backend),
                               cache_dir=nsight_cache)
        entry["nsys"] = run_nsys(pspec, cell_dir, run_dir, timeout_s, cache_dir=nsight_cache)
    store.atomic_write_text(cell_dir / "profile.json",
                            json.dumps(entry, indent=1, default=str) + "\n")
    return entry


def _record_trace_pass(entry: dict, result, cell_dir: Path, run_dir: Path,
                       generated: list[Path]) -> None:
    entry.update(status=str(result.status), reason=result.reason, versions=result.versions,
                 diagnostics=result.diagnostics)
    captured = result.profile or {}
    entry["steps"] = captured.get("steps")
    for backend, trace in (captured.get("traces") or {}).items():
        entry["sides"][backend] = _side_entry(cell_dir / trace, run_dir)
    if generated:
        entry["generated_code"] = [str(p.relative_to(run_dir)) for p in generated]
        entry["generated_kernels"] = sum(len(_KERNEL_DEF.findall(p.read_text(errors="replace")))
                                         for p in generated if p.suffix == ".py") or None


def _candidate_kernels(entry: dict, backend: str) -> int | None:
    """Device kernels per step of the traced candidate side, for ncu's launch window."""
    side = entry["sides"].get(backend) or {}
    count = side.get("kernels_per_step")
    if not count or side.get("kernel_unit") != hotkernels.KERNEL_UNITS["device"]:
        return None
    return math.ceil(count)  # a step that launches a varying number: cover the larger steps


def _side_entry(trace: Path, run_dir: Path) -> dict:
    side = {"trace": str(trace.relative_to(run_dir))}
    try:
        table = hotkernels.table_from_trace(trace)
    except hotkernels.TraceError as exc:
        side["hot_error"] = str(exc)
        return side
    paths = hotkernels.write(table, trace.parent)
    side.update(hot_csv=str(paths["csv"].relative_to(run_dir)),
                hot_json=str(paths["json"].relative_to(run_dir)),
                kernels_per_step=table["kernels_per_step"], kernel_unit=table["kernel_unit"],
                traced_step_us=table["step_us"], traced_device_us=table["device_us"])
    return side


# ---------------------------------------------------------------- Nsight Compute / Systems

def ncu_window(kernels_per_step: int | None) -> tuple[int, int]:
    """(launches to skip, launches to profile) among the kernels inside `sample` ranges: the
    second measured step's kernels (the first may still meet cold caches or allocator
    growth), or the first `NCU_KERNELS_UNKNOWN` when the count per step is unknown."""
    if not kernels_per_step or kernels_per_step < 1:
        return 0, NCU_KERNELS_UNKNOWN
    return kernels_per_step, kernels_per_step


def _nsight_command(tool: str, exe: str, report_base: Path,
                    kernels_per_step: int | None = None) -> list[str]:
    if tool == "ncu":
        # --nvtx-include "lab@sample/": kernels launched inside the push/pop range `sample` of
        # domain `lab`, i.e. the measured steps only; --launch-skip/--launch-count count only
        # the kernels that pass that filter. --clock-control none keeps the boost clocks the
        # timed pass ran at (ncu locks to base clocks by default).
        skip, count = ncu_window(kernels_per_step)
        sections = [arg for name in NCU_SECTIONS for arg in ("--section", name)]
        # and the counters the gate can decide a CUDA cell on (lab.profiling.ncu_counts)
        from lab.profiling.ncu_counts import METRICS

        return [exe, "--nvtx", "--nvtx-include", "lab@sample/", "--launch-skip", str(skip),
                "--launch-count", str(count), *sections, "--metrics", ",".join(METRICS),
                "--clock-control", "none",
                "--target-processes", "all", "--force-overwrite", "-o", str(report_base)]
    return [exe, "profile", "--trace", "cuda,nvtx,osrt", "--force-overwrite", "true",
            "-o", str(report_base)]


def ncu_export_command(exe: str, report: Path) -> list[str]:
    """The report's raw page as CSV: one row per profiled kernel (one step's), one column per
    metric of the chosen sections."""
    return [exe, "--import", str(report), "--csv", "--page", "raw", "--print-units", "base"]


def _run_nsight(tool: str, spec, cell_dir: Path, run_dir: Path, timeout_s: float,
                kernels_per_step: int | None = None, cache_dir: str | None = None) -> dict:
    """Wrap the cell's NVTX-only pass in `tool`; a missing tool or device is a status.
    `cache_dir`: a compile cache to reuse (the trace pass's), else a fresh one."""
    from lab.cell.launch import run_cell_process
    from lab.cell.spec import CellPass

    if spec.device != "cuda":
        return {"status": "skipped: needs CUDA"}
    exe = shutil.which(tool)
    if exe is None:
        return {"status": f"skipped: {tool} not installed"}
    folder = cell_dir / tool
    folder.mkdir(parents=True, exist_ok=True)
    nspec = spec.replace(profile_dir=str(folder / "cell"), cell_pass=CellPass.TRACE,
                         extra={**spec.extra, "profile_capture": "nvtx"})
    base = folder / "report"
    log = folder / "log.txt"
    with tempfile.TemporaryDirectory(prefix=f"lab-{tool}-") as tmp:
        result, _wall = run_cell_process(
            nspec, min(timeout_s, TOOL_TIMEOUT_S), cache_dir or tmp,
            wrapper=tuple(_nsight_command(tool, exe, base, kernels_per_step)), log_path=log)
    suffix = ".ncu-rep" if tool == "ncu" else ".nsys-rep"
    report = base.with_suffix(suffix)
    if result.status == "timeout":
        return {"status": f"failed: {tool} ran past {min(timeout_s, TOOL_TIMEOUT_S):.0f} s"}
    if result.status != "ok" or not report.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()
        why = result.reason or (lines[-1] if lines else "no output")
        return {"status": f"failed: {tool}: {why}"[:300], "log": str(log.relative_to(run_dir))}
    entry = {"status": "ok", "report": str(report.relative_to(run_dir))}
    if tool == "ncu":
        entry.update(_export_ncu_csv(exe, report, folder / "report.csv", run_dir))
    return entry


def _export_ncu_csv(exe: str, report: Path, csv_path: Path, run_dir: Path) -> dict:
    try:
        export = subprocess.run(ncu_export_command(exe, report), capture_output=True, text=True,
                                timeout=NCU_EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"csv_error": f"export ran past {NCU_EXPORT_TIMEOUT_S:.0f} s"}
    if export.returncode != 0:
        return {"csv_error": (export.stderr.strip().splitlines() or ["?"])[-1][:300]}
    store.atomic_write_text(csv_path, export.stdout)
    from lab.profiling.ncu_counts import counts_from_csv

    return {"csv": str(csv_path.relative_to(run_dir)), "counts": counts_from_csv(export.stdout)}


def run_ncu(spec, cell_dir: Path, run_dir: Path, timeout_s: float,
            kernels_per_step: int | None = None, cache_dir: str | None = None) -> dict:
    return _run_nsight("ncu", spec, cell_dir, run_dir, timeout_s, kernels_per_step, cache_dir)


def run_nsys(spec, cell_dir: Path, run_dir: Path, timeout_s: float,
             cache_dir: str | None = None) -> dict:
    return _run_nsight("nsys", spec, cell_dir, run_dir, timeout_s, cache_dir=cache_dir)


# ---------------------------------------------------------------- printing

SECTION_TITLES = {"device": "device kernels, % of the step's device time",
                  "host": "host events, % of the step's host wall time"}


def print_tables(entry: dict, title: str, console, top: int = 10) -> None:
    """The hot table of each side (device kernels, then host events, each with its own
    denominator), then kernels per step side by side."""
    from rich.table import Table

    if entry.get("status") != "ok":
        console.print(f"{title}: not profiled ({entry.get('status')}: {entry.get('reason')})")
        return
    sides = entry.get("sides", {})
    for backend, side in sides.items():
        if "hot_json" not in side:
            console.print(f"{title} {backend}: no table ({side.get('hot_error')})")
            continue
        table_doc = json.loads((Path(entry["_run_dir"]) / side["hot_json"]).read_text())
        for section in ("device", "host"):
            rows = hotkernels.rows_of(table_doc, section)[:top]
            if not rows:
                continue
            step = (table_doc["device_us"] if section == "device" else table_doc["step_us"])
            table = Table(title=f"{title}: {backend}, {SECTION_TITLES[section]} "
                                f"(median traced step {step:.0f} us, {table_doc['steps']} "
                                f"steps), hottest by self time")
            for column in ("kernel / event", "kind", "calls/step", "self us/step", "% of step",
                           "mean us/call"):
                table.add_column(column, overflow="fold")
            for row in rows:
                table.add_row(row["name"][:90], row["kind"], f"{row['count_per_step']:g}",
                              f"{row['self_us_per_step']:.1f}", f"{100 * row['share']:.1f}",
                              f"{row['mean_us']:.1f}")
            console.print(table)
        console.print(f"  trace: {side['trace']}  table: {side['hot_csv']}")
    counts = {b: s for b, s in sides.items() if "kernels_per_step" in s}
    if counts:
        table = Table(title=f"{title}: kernels per step (what fusion bought)")
        for column in ("backend", "kernels/step", "counted"):
            table.add_column(column, overflow="fold")
        for backend, side in counts.items():
            table.add_row(backend, f"{side['kernels_per_step']:g}", side["kernel_unit"])
        console.print(table)
    if entry.get("generated_code"):
        kernels = entry.get("generated_kernels")
        count = f" ({kernels} generated kernels)" if kernels else ""
        console.print(f"  generated code{count}: {', '.join(entry['generated_code'][:4])}")
    console.print(f"  ncu: {entry['ncu']['status']}; nsys: {entry['nsys']['status']}")


def print_entry(entry: dict, title: str, run_dir: Path, console) -> None:
    print_tables({**entry, "_run_dir": str(run_dir)}, title, console)


# ---------------------------------------------------------------- commands

def links(entry: dict) -> dict:
    """What goes into a cell's extra_info: the entry less what the cell already records."""
    return {k: v for k, v in entry.items() if k not in ("versions", "diagnostics")}


def trace_outcome(spec, label: str, run_dir: Path, timeout_s: float):
    """`lab profile`'s cell: traced instead of timed. The outcome carries only the profile (no
    samples), so the cell sits in `lab.unmeasured` and `pytest-benchmark compare` sees no
    timings from a traced pass."""
    from lab.cell.spec import CellOutcome, CellResult

    t0 = time.perf_counter()
    entry = profile_cell(spec, label, run_dir, timeout_s)
    result = CellResult.failed(entry["status"], entry["reason"], versions=entry.get("versions"),
                               diagnostics=entry.get("diagnostics"))
    return CellOutcome(spec, label, result, time.perf_counter() - t0,
                       extra={"profile": links(entry)}), entry


def profile_recorded_cells(recorder, console, timeout_s: float) -> None:
    """`lab run --profile`: trace every measured cell of the run, after its timing, and link
    the traces into the recorded cells' extra_info (saved after each cell)."""
    for outcome, _workload in recorder.outcomes:
        if outcome.status not in ("ok", "fail_accuracy"):
            continue
        console.print(f"profiling {outcome.spec.workload} {outcome.spec.mode} {outcome.label}")
        entry = profile_cell(outcome.spec, outcome.label, recorder.run_dir, timeout_s)
        outcome.extra["profile"] = links(entry)
        gpu_counts = (entry.get("ncu") or {}).get("counts")
        if gpu_counts and not outcome.extra.get("counts"):  # the gate decides on these too
            outcome.extra["counts"] = gpu_counts
        recorder.save()
        print_entry(entry, f"{outcome.spec.workload} {outcome.spec.mode} {outcome.label}",
                    recorder.run_dir, console)
