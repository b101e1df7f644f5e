"""Plan cells, run each in its own subprocess with a timeout, and store the run as it goes.

A compiled cell runs twice: once with a fresh, empty compile cache (its first call is the cold
compile, and its samples are the steady state), then a short second process on the now-filled
cache that only times the first call (the warm compile). results.json is rewritten after every
cell, so Ctrl-C or a crash of the parent keeps every finished cell; the run is marked complete
only at the end.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import stats, store
from lab.cell import CellSpec
from lab.backends import BACKENDS
from lab.workloads import shape_label

STATUSES = ("ok", "fail_accuracy", "compile_error", "run_error", "timeout", "oom", "skipped")


@dataclass
class CellOutcome:
    spec: CellSpec
    label: str  # backend label as asked for, e.g. "torch-compile:max-autotune"
    result: dict
    wall_s: float
    warm: dict | None = None  # result of the warm-cache first-call pass
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.result.get("status", "run_error")


def _cell_env(spec: CellSpec, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    # Same thread count for every framework: BLAS/OpenMP pools are sized from these at import.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(spec.threads)
    info = BACKENDS[spec.backend]
    module = importlib.import_module(info.module)
    if hasattr(module, "process_env"):
        env.update(module.process_env(spec.threads, spec.device))
    if cache_dir and hasattr(module, "cache_env"):
        env.update(module.cache_env(cache_dir))
    repo_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    return env


def run_cell_process(spec: CellSpec, timeout_s: float, cache_dir: str | None = None) -> dict:
    """Run one cell process; map every way it can end to a status."""
    try:
        env = _cell_env(spec, cache_dir)
    except Exception as exc:  # a backend module that fails to import ends its cell, not the run
        return {"status": "run_error", "reason": f"preparing the cell: {type(exc).__name__}: {exc}"}
    with tempfile.TemporaryDirectory(prefix="lab-cell-") as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(spec.to_json())
        log_path = Path(tmp, "log.txt")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lab.cell", str(spec_path), str(result_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return {"status": "timeout", "reason": f"no result after {timeout_s:.0f} s"}
            except BaseException:  # Ctrl-C: never leave the cell running
                _kill_group(proc)
                raise
        if result_path.is_file():
            return json.loads(result_path.read_text())
        tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
        text = "\n".join(tail)
        if code in (-signal.SIGKILL, 137) or "out of memory" in text.lower():
            status = "oom"
        else:
            status = "run_error"
        last = tail[-1] if tail else ""
        return {"status": status, "reason": f"cell process exited {code}: {last}"[:500],
                "log_tail": text[-4000:]}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_cell(spec: CellSpec, label: str, timeout_s: float) -> CellOutcome:
    info = BACKENDS[spec.backend]
    t0 = time.perf_counter()
    if not info.compiles:
        return CellOutcome(spec, label, run_cell_process(spec, timeout_s), time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="lab-compile-cache-") as cache_dir:
        result = run_cell_process(spec, timeout_s, cache_dir)
        warm = None
        if result.get("status") in ("ok", "fail_accuracy"):
            warm_spec = CellSpec(**{**spec.__dict__, "first_call_only": True})
            warm = run_cell_process(warm_spec, timeout_s, cache_dir)
    return CellOutcome(spec, label, result, time.perf_counter() - t0, warm=warm)


def run_cell_processes(spec, label: str, timeout_s: float, processes: int = 1):
    """run_cell, then `processes - 1` more processes of the same cell; the outcome keeps every
    sample and each process's median (`process_medians_s`), which the gate compares.

    The extra processes skip the cold/warm compile-cache passes (the first process measured
    those); if any process does not end `ok`, the cell takes that process's status.
    """
    first = run_cell(spec, label, timeout_s)
    if first.status != "ok":
        return first
    results = [first.result]
    for k in range(2, processes + 1):
        result = run_cell_process(spec, timeout_s)
        if result.get("status") != "ok":
            reason = f"process {k}/{processes}: {result.get('reason')}"
            return CellOutcome(spec, label, {**result, "reason": reason}, first.wall_s)
        results.append(result)
    merged = dict(first.result)
    merged["samples_s"] = [s for r in results for s in r["samples_s"]]
    first.extra["processes"] = processes
    first.extra["process_medians_s"] = [statistics.median(r["samples_s"]) for r in results]
    if first.result.get("baseline_samples_s"):
        merged["baseline_samples_s"] = [s for r in results for s in r["baseline_samples_s"]]
        first.extra["process_baseline_medians_s"] = [
            statistics.median(r["baseline_samples_s"]) for r in results]
    first.result = merged
    return first


# ---------------------------------------------------------------- results

def benchmark_name(spec: CellSpec, label: str) -> str:
    shape = shape_label(spec.shape)
    return f"{spec.workload}[{label}|{spec.mode}|{spec.device}|{spec.dtype}|{shape}]"


def lab_fields(outcome: CellOutcome, workload) -> dict:
    """The lab's own numbers for a cell: what goes into pytest-benchmark's extra_info."""
    spec, result = outcome.spec, outcome.result
    info = BACKENDS[spec.backend]
    fields = {
        "workload": spec.workload, "backend": outcome.label, "framework": info.framework.value,
        "mode": spec.mode, "device": spec.device, "dtype": spec.dtype, "shape": spec.shape,
        "threads": spec.threads, "status": outcome.status, "reason": result.get("reason"),
        "baseline_backend": info.baseline, "timer": result.get("timer"),
        "inner_steps": result.get("inner_steps"), "warmup": result.get("warmup"),
        "cold_l2": spec.cold_l2,
        "cuda_graphs": spec.cuda_graphs, "cell_wall_s": round(outcome.wall_s, 3),
        "versions": result.get("versions"), "accuracy": result.get("accuracy"),
        "diagnostics": result.get("diagnostics"), "first_call_s": result.get("first_call_s"),
        **outcome.extra,  # links added after timing, e.g. the cell's trace
    }
    samples = result.get("samples_s") or []
    if not samples:
        return fields
    summary = stats.summarize(samples)
    median = summary.median
    fields.update(
        median_s=median, median_ci95_s=summary.median_ci95, iqr_s=summary.iqr,
        p20_s=summary.p20, p80_s=summary.p80, noisy=summary.noisy,
        relative_ci_width=summary.relative_ci_width,
    )
    flops = workload.flops(spec.shape, spec.mode) if workload else float("nan")
    items = workload.items_per_step(spec.shape) if workload else 1
    fields.update(
        flops_per_step=flops, achieved_gflops=flops / median / 1e9 if flops == flops else None,
        throughput=items / median,
        # the interval of items/median maps the median's interval (hi time -> lo throughput)
        throughput_ci95=(items / summary.median_ci95[1], items / summary.median_ci95[0]),
        throughput_unit=workload.throughput_unit if workload else None,
    )
    if info.compiles:
        cold = result.get("first_call_s")
        warm = (outcome.warm or {}).get("first_call_s")
        fields.update(
            first_call_s_cold=cold, first_call_s_warm=warm,
            # the first call also executes one step; what is left is compile work
            compile_s_cold=max(cold - median, 0.0) if cold is not None else None,
            compile_s_warm=max(warm - median, 0.0) if warm is not None else None,
            warm_status=(outcome.warm or {}).get("status"),
        )
        base = result.get("baseline_samples_s") or []
        if base:
            ratio = stats.ratio_of_medians(base, samples)
            base_median = float(stats.summarize(base).median)
            fields.update(
                baseline_samples_s=base, baseline_median_s=base_median,
                speedup=ratio.ratio, speedup_ci95=ratio.ci95, speedup_p_value=ratio.p_value,
                speedup_min_detectable=ratio.min_detectable_ratio,
                break_even_steps_cold=stats.break_even_steps(fields["compile_s_cold"],
                                                             base_median, median),
                break_even_steps_warm=stats.break_even_steps(fields["compile_s_warm"],
                                                             base_median, median),
            )
    return fields


def to_benchmark(outcome: CellOutcome, workload) -> dict | None:
    """A pytest-benchmark entry, or None when the cell has no samples."""
    spec, result = outcome.spec, outcome.result
    samples = result.get("samples_s") or []
    if not samples:
        return None
    name = benchmark_name(spec, outcome.label)
    return {
        "group": f"{spec.workload} {spec.mode} {spec.device}",
        "name": name, "fullname": f"lab::{name}",
        "params": {"backend": outcome.label, "mode": spec.mode, "device": spec.device,
                   "dtype": spec.dtype, "shape": shape_label(spec.shape)},
        "param": f"{outcome.label}-{spec.mode}",
        "extra_info": lab_fields(outcome, workload),
        "options": {"disable_gc": False, "timer": result.get("timer"), "min_rounds": spec.repeats,
                    "max_time": None, "min_time": spec.min_sample_s, "warmup": True},
        "stats": store.pytest_benchmark_stats(samples, result.get("inner_steps") or 1),
    }


class RunRecorder:
    """Keeps a run folder's results.json current after every cell."""

    def __init__(self, run_dir: Path, fp: dict, argv: list[str]):
        self.run_dir = Path(run_dir)
        self.fp = fp
        self.outcomes: list[tuple[CellOutcome, object]] = []  # (outcome, its workload)
        self.run = {"run_id": self.run_dir.name, "complete": False, "argv": argv,
                    "started": _dt.datetime.now().isoformat(timespec="seconds"),
                    "finished": None, "fingerprint": store.FINGERPRINT,
                    "load_avg_1m_at_start": fp.get("load_avg_1m_at_start")}
        self._cached = {"machine_info": store.machine_info(fp), "commit_info": store.commit_info()}
        store.atomic_write_json(self.run_dir / store.FINGERPRINT, fp)

    def add(self, outcome: CellOutcome, workload) -> None:
        self.outcomes.append((outcome, workload))
        self.save()

    def save(self, complete: bool = False) -> Path:
        benchmarks, unmeasured = [], []
        for outcome, workload in self.outcomes:
            bench = to_benchmark(outcome, workload)
            if bench is not None:
                benchmarks.append(bench)
            else:
                unmeasured.append({"name": benchmark_name(outcome.spec, outcome.label),
                                   "extra_info": lab_fields(outcome, workload)})
        self.run["order"] = [benchmark_name(o.spec, o.label) for o, _ in self.outcomes]
        if complete:
            self.run.update(complete=True,
                            finished=_dt.datetime.now().isoformat(timespec="seconds"))
        doc = store.results_document(self.fp, benchmarks, unmeasured, self.run, self._cached)
        path = self.run_dir / store.RESULTS
        store.atomic_write_json(path, doc)
        return path
